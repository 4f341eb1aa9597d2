#!/usr/bin/env python
"""Cohort benchmark: one pipeline run over a cohort of samples against one run per
sample, same data, same run.

1. Generates (once; fixed seed; reused when present) a germline cohort with
   ``test_data/generate.py --samples N``: by default 8 samples (sampleA .. sampleH) on
   one 3 Mb reference at 30x (300,000 pairs of 2 x 150 bp and about 2,000 variants per
   sample; about 2.5 minutes on 2 cores); prints how long generating took (kept in
   ``bench-cohort.json`` in the data folder). Both modes then take about 3 minutes.
2. Runs and times, each in its own process tree (wall seconds, CPU seconds of the tree,
   the peak RSS of its largest process), ``--repeats`` times, alternating:

   A. one run of the real ``snakemake`` command line (``snakemake --cores 2
      --configfile CFG`` in a fresh work folder) with a sample sheet of all N samples:
      every (sample, region) in one Lithops map;
   B. N runs, one per sample, one after another, each in its own fresh work folder with
      a one-sample sheet (as a user calling the pipeline once per sample would).

   Both use the default config otherwise (``config/config.yaml``: Lithops localhost with
   2 workers, 8 regions per sample), with a fresh local object store under the run's
   work folder (``TMPDIR`` points there, as in ``bench_align.py``).
3. Checks that every sample's ``results/<sample>.vcf.gz`` has the same records (the
   body; the header carries paths) in both modes, and prints that check.
4. Prints one table (median wall and CPU, peak RSS, ratio A / B, and the CPU that other
   processes on the machine used meanwhile, which skews the timings), where each mode's
   wall time goes (Snakemake start, staging and planning before the fan-out, the
   ``call`` step as its ``work/benchmarks/call.tsv`` gives it, the merges after it,
   Snakemake's exit), and writes the same as JSON (``--json``).

Prints figures; asserts nothing, except that it refuses to report a ratio (and exits
with status 1) when the two modes' VCFs differ. Target on 2 cores: ratio <= 0.6.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "test_data"))

from bench_align import ToolError, timed  # noqa: E402
from generate import sample_names  # noqa: E402

from bench.evaluation.vcfcompare import vcf_body  # noqa: E402
from pipeline.manifests import CallResults  # noqa: E402

STAMP = "bench-cohort.json"


def ensure_data(data: Path, genome_size: int, coverage: float, seed: int, samples: int) -> float | None:
    """Generate the cohort unless it is there; the seconds generating took (None: unknown)."""
    params = {"genome_size": genome_size, "coverage": coverage, "seed": seed, "samples": samples}
    stamp = data / STAMP
    want = [data / "ref.fa.fai"] + [data / f"{s}.bam.bai" for s in sample_names(samples)]
    if stamp.exists() and all(p.exists() for p in want):
        made = json.loads(stamp.read_text())
        if made.get("params") == params:
            print(f"data: reusing {data} (generated in {made['seconds']:.0f} s)")
            return float(made["seconds"])
    if data.exists() and any(data.iterdir()):
        sys.exit(f"error: {data} holds other data (no {STAMP} with these parameters): remove it or give --data")
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "test_data" / "generate.py"), "--outdir", str(data), "--seed", str(seed),
         "--genome-size", str(genome_size), "--coverage", str(coverage), "--samples", str(samples),
         "--threads", "2"],
        check=True, stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - t0
    stamp.write_text(json.dumps({"params": params, "seconds": round(seconds, 1)}) + "\n")
    print(f"data: generated {samples} samples, {genome_size / 1e6:g} Mb at {coverage:g}x, in {seconds:.0f} s")
    return seconds


def machine_cpu() -> tuple[float, float] | None:
    """CPU seconds the whole machine has been busy, and elapsed (all cores), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / tick, sum(fields) / tick  # minus idle and iowait


def background_cores(seconds: float = 3.0) -> float | None:
    """Cores kept busy by other processes over ``seconds`` (nothing of ours runs meanwhile)."""
    a = machine_cpu()
    time.sleep(seconds)
    b = machine_cpu()
    return None if a is None or b is None else (b[0] - a[0]) / seconds


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, dictionaries merged key by key (neither is changed)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def workflow_dir(run_dir: Path, samples: dict[str, Path], reference: Path, overrides: dict[str, Any],
                 overlays: tuple[Path, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """A fresh ``run_dir`` laid out as tests/test_e2e.py's ``make_workdir`` lays one out:
    the project's config with ``overlays`` (config files) and ``overrides`` laid on top,
    the ``reference`` and a sheet of ``samples`` (name: BAM), no progress bar. Returns the
    ``snakemake`` command line and its environment (``TMPDIR``, so Lithops' local store
    and job files, inside ``run_dir``)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(ROOT / "config", run_dir / "config")
    (run_dir / "config" / "samples.tsv").write_text(
        "sample\tbam\n" + "".join(f"{name}\t{bam}\n" for name, bam in samples.items()))
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for overlay in overlays:
        cfg = deep_merge(cfg, yaml.safe_load(overlay.read_text()))
    cfg = deep_merge(cfg, {"reference": str(reference), "samples": "config/samples.tsv",
                           "executor": {"progress": False}, **overrides})
    cfg_path = run_dir / "config" / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    (run_dir / "tmp").mkdir()
    env = dict(os.environ, TMPDIR=str(run_dir / "tmp"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(run_dir),
           "--cores", "2", "--configfile", str(cfg_path), "--quiet", "all"]
    return cmd, env


def run_pipeline(data: Path, run_dir: Path, samples: list[str]) -> dict[str, Any]:
    """One ``snakemake`` run over ``samples`` in a fresh ``run_dir``; its times and phases."""
    cmd, env = workflow_dir(run_dir, {s: data / f"{s}.bam" for s in samples}, data / "ref.fa", {})
    start, before = time.time(), machine_cpu()
    wall, cpu, rss = timed(cmd, env=env)
    after = machine_cpu()
    # CPU the rest of the machine used meanwhile (other users' jobs skew the timings)
    others = max(0.0, after[0] - before[0] - cpu) if before and after else None
    return {"wall": wall, "cpu": cpu, "rss": rss, "others_cpu": others, **phases(run_dir, samples, start, wall)}


def phases(run_dir: Path, samples: list[str], start: float, wall: float) -> dict[str, Any]:
    """Where a run's wall time went, from ``work/benchmarks/call.tsv`` and the outputs' mtimes.

    ``before_call``: Snakemake's start, staging and planning (until the ``call`` job
    started); ``call``: that job (Snakemake's benchmark of it); ``after_call``: until
    the last ``results/`` file was written (the merges); ``exit``: the rest.
    """
    work = run_dir / "work"
    try:
        return _phases(work, run_dir, samples, start, wall)
    except (OSError, StopIteration, KeyError, ValueError) as exc:  # another layout of work/: no phases
        print(f"warning: no phases for {run_dir}: {exc!r}", file=sys.stderr)
        return {k: None for k in ("before_call", "call", "after_call", "exit", "functions", "function_s")} | {
            "call_summary": ""}


def _phases(work: Path, run_dir: Path, samples: list[str], start: float, wall: float) -> dict[str, Any]:
    with open(work / "benchmarks" / "call.tsv") as fh:
        call_s = float(next(csv.DictReader(fh, delimiter="\t"))["s"])
    calls = [work / "calls" / f"{s}.json" for s in samples]
    call_end = max(p.stat().st_mtime for p in calls)
    last = max(p.stat().st_mtime for p in (run_dir / "results").iterdir())
    fragments = [f for p in calls for f in CallResults.read(p).fragments]
    summary = [line.split("INFO pipeline: ", 1)[-1] for line in (work / "logs" / "call.log").read_text().splitlines()
               if "INFO pipeline: called " in line]
    return {"before_call": call_end - call_s - start, "call": call_s, "after_call": last - call_end,
            "exit": start + wall - last, "functions": len(fragments),
            "function_s": sum(f["seconds"] for f in fragments), "call_summary": summary[-1] if summary else ""}


def bodies(run_dir: Path, samples: list[str]) -> dict[str, list[str]]:
    return {s: vcf_body(str(run_dir / "results" / f"{s}.vcf.gz")) for s in samples}


def total(runs: list[dict[str, Any]], key: str) -> float:
    return sum(r[key] for r in runs)


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "?" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None,
                    help="cohort folder (reused when present); default: $TMPDIR/svc-bench-cohort-<n>x<size>-<cov>x")
    ap.add_argument("--samples", type=int, default=8, help="cohort size")
    ap.add_argument("--genome-size", type=int, default=3_000_000)
    ap.add_argument("--coverage", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each mode, alternating; medians are reported")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)
    data = args.data or (Path(tempfile.gettempdir())
                         / f"svc-bench-cohort-{args.samples}x{args.genome_size}-{args.coverage:g}x")
    gen_seconds = ensure_data(data, args.genome_size, args.coverage, args.seed, args.samples)
    samples = sample_names(args.samples)
    work = args.work or Path(tempfile.mkdtemp(prefix="svc-bench-cohort-"))
    work.mkdir(parents=True, exist_ok=True)

    idle = background_cores()
    if idle is not None and idle > 0.2:
        print(f"warning: other processes keep {idle:.1f} of {os.cpu_count()} cores busy: the timings will be off",
              flush=True)
    runs: dict[str, list[list[dict[str, Any]]]] = {"A": [], "B": []}  # per repeat: the mode's runs
    checks: list[dict[str, Any]] = []
    try:
        for i in range(args.repeats):
            one = run_pipeline(data, work / "A", samples)
            runs["A"].append([one])
            print(f"repeat {i + 1}: A, one run of {len(samples)} samples   {one['wall']:6.1f} s", flush=True)
            per = [run_pipeline(data, work / "B" / s, [s]) for s in samples]
            runs["B"].append(per)
            print(f"repeat {i + 1}: B, {len(samples)} runs of one sample     {total(per, 'wall'):6.1f} s "
                  f"(each {min(r['wall'] for r in per):.1f}-{max(r['wall'] for r in per):.1f} s)", flush=True)
            a = bodies(work / "A", samples)
            b = {s: bodies(work / "B" / s, [s])[s] for s in samples}
            checks.append({s: {"records_A": len(a[s]), "records_B": len(b[s]), "identical": a[s] == b[s]}
                           for s in samples})
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    identical = all(c["identical"] for check in checks for c in check.values())
    rows = []
    labels = {"A": f"A: one run of {len(samples)} samples", "B": f"B: {len(samples)} runs of one sample"}
    for mode, label in labels.items():
        def med(key: str, mode: str = mode) -> float | None:
            if any(r[key] is None for rs in runs[mode] for r in rs):
                return None
            return round(statistics.median(total(rs, key) for rs in runs[mode]), 2)

        rows.append({"mode": mode, "label": label, "runs": len(runs[mode][0]), "wall_s": med("wall"),
                     "cpu_s": med("cpu"), "others_cpu_s": med("others_cpu"),
                     "max_rss_mib": round(max(r["rss"] for rs in runs[mode] for r in rs), 1),
                     "walls": [round(total(rs, "wall"), 2) for rs in runs[mode]],
                     "phases_s": {k: med(k) for k in ("before_call", "call", "after_call", "exit", "function_s")},
                     "functions": None if any(r["functions"] is None for r in runs[mode][-1])
                     else total(runs[mode][-1], "functions"),
                     "call_summary": [r["call_summary"] for r in runs[mode][-1]]})
    ratio = rows[0]["wall_s"] / rows[1]["wall_s"] if identical else None
    cpu_ratio = rows[0]["cpu_s"] / rows[1]["cpu_s"] if identical else None

    bam_mb = sum((data / f"{s}.bam").stat().st_size for s in samples) / 1e6
    gen = f"generated in {gen_seconds:.0f} s" if gen_seconds is not None else "generation time unknown"
    print(f"\ndata: {len(samples)} samples ({samples[0]} .. {samples[-1]}), {args.genome_size / 1e6:g} Mb at "
          f"{args.coverage:g}x, {bam_mb:.0f} MB of BAM, {gen}; {os.cpu_count()} cores; "
          f"median of {args.repeats} repeat(s)")
    print(f"{'mode':<30} {'runs':>4} {'wall s':>7} {'CPU s':>7} {'RSS MiB':>8} {'ratio A/B':>9} {'others CPU s':>12}")
    for r in rows:
        shown = "-" if r["mode"] == "B" else f"{ratio:.2f}" if ratio is not None else "refused"
        print(f"{r['label']:<30} {r['runs']:>4} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} {r['max_rss_mib']:>8.0f} "
              f"{shown:>9} {fmt(r['others_cpu_s']):>12}")
    if args.repeats > 1:
        print("each repeat, wall s: " + "; ".join(f"{r['mode']} " + ", ".join(f"{w:.1f}" for w in r["walls"])
                                                  for r in rows))
    print("(CPU: user + system of the run's process tree; others: what the rest of the machine used meanwhile)")
    print("\nwhere the wall time goes (s, summed over the mode's runs):")
    print(f"{'mode':<4} {'start+stage+plan':>16} {'call step':>10} {'merges':>7} {'exit':>6} "
          f"{'functions':>10} {'in functions':>13}")
    for r in rows:
        p = r["phases_s"]
        print(f"{r['mode']:<4} {fmt(p['before_call']):>16} {fmt(p['call']):>10} {fmt(p['after_call']):>7} "
              f"{fmt(p['exit']):>6} {fmt(r['functions'], '.0f'):>10} {fmt(p['function_s']):>13}")
    print("(call step: work/benchmarks/call.tsv; start+stage+plan: until it started; merges: after it until the "
          "last results/ file;\n exit: the rest; in functions: the functions' own seconds, added up)")
    print(f"A's call.log: {rows[0]['call_summary'][0]}")
    print(f"\nVCF records identical in both modes (every sample, every repeat): {identical}")
    last = checks[-1]
    print("  records: " + ", ".join(
        f"{s} {c['records_A']}" + ("" if c["identical"] else f" (A) != {c['records_B']} (B)") for s, c in last.items()))
    if ratio is None:
        bad = sorted({s for check in checks for s, c in check.items() if not c["identical"]})
        print(f"ratio A/B: not reported: the VCFs of {', '.join(bad)} differ between the two modes")
    else:
        saved = (rows[1]["wall_s"] - rows[0]["wall_s"]) / max(1, len(samples) - 1)
        print(f"ratio A/B: wall {ratio:.2f}, CPU {cpu_ratio:.2f} (target: wall <= 0.6); "
              f"one run saves {saved:.1f} s per sample beyond the first")
    if args.json:
        args.json.write_text(json.dumps({
            "data": {"samples": samples, "genome_size": args.genome_size, "coverage": args.coverage,
                     "seed": args.seed, "bam_mb": round(bam_mb, 1), "dir": str(data),
                     "generation_s": gen_seconds},
            "cores": os.cpu_count(), "background_cores_before": idle,
            "repeats": args.repeats, "rows": rows, "identical": identical, "checks": checks,
            "ratio_wall": None if ratio is None else round(ratio, 3),
            "ratio_cpu": None if cpu_ratio is None else round(cpu_ratio, 3),
            "runs": {m: [[{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rs]
                         for rs in runs[m]] for m in runs},
        }, indent=1) + "\n")
    if args.keep:
        print(f"kept {work}")
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if identical else 1

if __name__ == "__main__":
    sys.exit(main())
