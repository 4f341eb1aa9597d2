#!/usr/bin/env python
"""Viral cohort benchmark: one sequencing run of N tiled-amplicon viral samples (default
96), called by ONE workflow run against iVar run per sample the way a lab does it (GNU
``parallel -j2``), same data, same run, same 2 cores.

1. Generates (once; reused from ``--workdir`` when made with the same parameters by the
   same generator source) N samples with ``test_data/amplicon.py``: a 30 kb genome tiled by
   an ARTIC-style scheme, 2 x 150 bp amplicon pairs at ``--depth`` (2,000) pairs per
   amplicon, minor haplotypes at 5 / 2 / 1 / 0.5 / 0.2 % (20 alleles each) and PCR /
   sequencing artefacts that are not variants. Sample ``i`` (``S001`` ..) has seed
   ``--seed + i``: its own minor variants, frequencies, reads and artefacts. Every sample
   shares ONE reference and primer scheme (the generator's ``reference_seed``:
   ``--reference-seed``); the benchmark checks that every sample's ``virus.fa`` and
   ``scheme.primer.bed`` are byte for byte the shared ones. About 20 s per sample on 2 cores (96: ~30 min).
2. Runs and times, each in its own process tree (wall seconds; CPU seconds = user + system
   of the tree as far as it waits for its children, ``wait4``; peak RSS of its largest
   process), ``--repeats`` times, alternating:

   A. the workflow: ONE ``python -m snakemake --snakefile Snakefile --directory RUN
      --cores 2 --configfile CFG`` over a sample sheet of all N BAMs, in a fresh run
      folder with a fresh local object store (``TMPDIR`` there): ``calling.engine:
      lowfreq`` with config/amplicon.yaml's engine settings (``end_skip: 0``),
      ``calling.primers: scheme.primer.bed``, ``plan.n_regions: --regions``
      (2), Lithops localhost (2 workers); it writes per sample the VCF, stats and the
      consensus (``consensus.min_af`` 0.75, ``min_depth`` 10), and the run report;
   B. iVar: one bash script per sample (``RUN/ivar/<sample>/run.sh``) run by ``parallel -j2
      --joblog`` over ``jobs.txt``::

        ivar trim -e -i BAM -b BED -p trimmed -m 30 -q 0
        samtools sort -o trimmed.sorted.bam trimmed.bam && samtools index trimmed.sorted.bam
        samtools mpileup -aa -A -d 0 -B -Q 0 --reference REF trimmed.sorted.bam
            | ivar variants -p variants -q 20 -t 0.01 -r REF
        samtools mpileup -aa -A -d 0 -Q 0 trimmed.sorted.bam | ivar consensus -p consensus -t 0.75 -m 10

3. Scores both against each sample's truth with :mod:`bench.evaluation.afeval` (ours:
   FILTER PASS records; iVar: PASS=TRUE rows): recall of the 1 % and of the 2 % designed
   band (true positives / true alleles, pooled over the samples; the other bands in the
   JSON), false positives per sample (mean), at artefact sites (``artefacts.tsv``) and
   elsewhere; and compares the two consensus sequences per sample (``N`` count, bases
   where both call a base and they differ).
4. Prints a table (wall s, CPU s, recall @1 %, @2 %, FP / sample, the ratio workflow wall /
   iVar wall; goal <= 1/3), where the workflow's wall time went (from its logs and
   outputs: start + staging + planning, the ``call`` step, the merges, the report,
   Snakemake's exit), and writes it all as JSON (``--json``; default
   ``<workdir>/bench_viral_cohort.json``). The runs' outputs stay in ``<workdir>/runs``
   (replaced by the next run).

Prints figures; asserts nothing. Exit status 0 when both ran, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pysam
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_amplicon import _amplicon, _first_error_line, _generator_digest  # noqa: E402
from bench.bench_cohort import background_cores, machine_cpu, phases, workflow_dir  # noqa: E402
from bench.bench_lowfreq import ToolError  # noqa: E402
from bench.evaluation.afeval import (  # noqa: E402
    Evaluation,
    Key,
    evaluate,
    read_artefacts,
    read_ivar_tsv,
    read_truth,
    read_vcf_calls,
)

FRACTIONS: tuple[float, ...] = (0.05, 0.02, 0.01, 0.005, 0.002)
SAMPLE_FILES = ("mixture.bam.bai", "truth.vcf.gz.tbi", "artefacts.tsv", "virus.fa", "scheme.primer.bed")
STAMP = "params.json"
GOAL = 1 / 3


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
def sample_names(n: int) -> list[str]:
    """``S001`` .. : sample ``i`` (1-based) is always the same name, whatever ``n``."""
    width = max(3, len(str(n)))
    return [f"S{i:0{width}d}" for i in range(1, n + 1)]


def data_dir(workdir: Path, length: int, depth: float, reference_seed: int, alleles_per_fraction: int) -> Path:
    return workdir / f"viral-cohort-{length}-{depth:g}x-ref{reference_seed}-a{alleles_per_fraction}"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def generate_sample(out: Path, seed: int, reference_seed: int, length: int, depth: float,
                    alleles_per_fraction: int, log: bool = False) -> Any:
    """One sample of the cohort (its own seed, the cohort's reference and scheme)."""
    return _amplicon().generate_amplicon_mixture(
        out, seed=seed, reference_seed=reference_seed, length=length, depth=depth,
        alleles_per_fraction=alleles_per_fraction, threads=2, log=log)


def ensure_data(workdir: Path, n: int, seed: int, reference_seed: int, length: int, depth: float,
                alleles_per_fraction: int) -> tuple[Path, dict[str, Any]]:
    """The cohort's folder: ``virus.fa`` (+ ``.fai``) and ``scheme.primer.bed`` shared, one
    folder per sample; samples made earlier with the same parameters and generator source
    are reused. Exits when a sample's reference or scheme differs from the shared ones."""
    data = data_dir(workdir, length, depth, reference_seed, alleles_per_fraction)
    data.mkdir(parents=True, exist_ok=True)
    digest = _generator_digest()
    made: dict[str, Any] = {"generated": 0, "reused": 0, "seconds": 0.0}
    for i, name in enumerate(sample_names(n), start=1):
        folder = data / name
        params = {"seed": seed + i, "reference_seed": reference_seed, "length": length, "depth": depth,
                  "alleles_per_fraction": alleles_per_fraction, "generator": digest}
        stamp = folder / STAMP
        if stamp.exists() and all((folder / f).exists() for f in SAMPLE_FILES) \
                and json.loads(stamp.read_text()).get("params") == params:
            made["reused"] += 1
            made["seconds"] += json.loads(stamp.read_text()).get("seconds", 0.0)
        else:
            if folder.exists():
                shutil.rmtree(folder)
            s = generate_sample(folder, seed + i, reference_seed, length, depth, alleles_per_fraction)
            stamp.write_text(json.dumps({"params": params, "seconds": round(s.seconds, 1),
                                         "read_pairs": s.read_pairs, "alleles": s.variant_counts["total"]}) + "\n")
            made["generated"] += 1
            made["seconds"] += s.seconds
            print(f"data: [{i}/{n}] {name} (seed {seed + i}): {s.read_pairs} pairs, "
                  f"{s.variant_counts['total']} alleles, {s.seconds:.1f} s", flush=True)
        shared_fa, shared_bed = data / "virus.fa", data / "scheme.primer.bed"
        if not shared_fa.exists() or not shared_bed.exists():
            shutil.copyfile(folder / "virus.fa", shared_fa)
            shutil.copyfile(folder / "scheme.primer.bed", shared_bed)
            pysam.faidx(str(shared_fa))
        for f, shared in (("virus.fa", shared_fa), ("scheme.primer.bed", shared_bed)):
            if _md5(folder / f) != _md5(shared):
                sys.exit(f"error: {folder / f} differs from the cohort's {shared}: the samples do not share one "
                         f"reference and scheme (remove {data} and run again)")
    print(f"data: {data}: {n} samples ({made['reused']} reused, {made['generated']} generated now); "
          f"generating them took {made['seconds']:.0f} s in all", flush=True)
    return data, made


# --------------------------------------------------------------------------- #
# Runs
# --------------------------------------------------------------------------- #
def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``cmd``; its wall seconds, CPU seconds (user + system, with the descendants it
    waited for; ``wait4``) and peak RSS (MiB) of its largest process (bench_amplicon's,
    telling the ``Popen`` that its process is reaped). Raises :class:`ToolError` with the
    stderr tail (all of it in the exception's ``stderr``) on failure."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            text = err.read().decode(errors="replace")
            exc = ToolError(f"{shlex.join(cmd)[:200]} exited with {code}:\n{text[-2000:]}")
            exc.stderr = text  # type: ignore[attr-defined]
            raise exc
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _timed_run(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    start, before = time.time(), machine_cpu()
    wall, cpu, rss = timed(cmd, env=env)
    after = machine_cpu()
    others = max(0.0, after[0] - before[0] - cpu) if before and after else None
    return {"start": start, "wall": wall, "cpu": cpu, "rss": rss, "others_cpu": others}


AMPLICON = yaml.safe_load((ROOT / "config" / "amplicon.yaml").read_text())


def run_workflow(data: Path, samples: list[str], run_dir: Path, regions: int) -> dict[str, Any]:
    """One ``snakemake`` run over every sample in a fresh ``run_dir`` (layout as
    tests/test_e2e.py's ``make_workdir``); times, phases."""
    cmd, env = workflow_dir(
        run_dir, {s: data / s / "mixture.bam" for s in samples}, data / "virus.fa",
        {"plan": {"n_regions": regions},
         # config/amplicon.yaml's engine settings, as README "Viral amplicon runs" runs it
         "calling": {"engine": "lowfreq", "primers": str(data / "scheme.primer.bed"),
                     "lowfreq": AMPLICON["calling"]["lowfreq"]}})
    (run_dir / "command.txt").write_text(shlex.join(cmd) + "\n")
    res = _timed_run(cmd, env=env)
    res.update(workflow_phases(run_dir, samples, res["start"], res["wall"]))
    return res


def workflow_phases(run_dir: Path, samples: list[str], start: float, wall: float) -> dict[str, Any]:
    """bench_cohort's phases, with its ``after_call`` split into the merges (until the last
    per-sample result) and the report (until ``results/report.html``)."""
    p = phases(run_dir, samples, start, wall)
    res = run_dir / "results"
    try:
        per_sample = [f for f in res.iterdir() if f.name.split(".", 1)[0] in samples]
        merges_end = max(f.stat().st_mtime for f in per_sample)
        report_end = max(f.stat().st_mtime for f in res.iterdir())
        call_end = max((run_dir / "work" / "calls" / f"{s}.json").stat().st_mtime for s in samples)
        p["merges"], p["report"] = merges_end - call_end, report_end - merges_end
    except (OSError, ValueError):
        p["merges"] = p["report"] = None
    return p


IVAR_SCRIPT = """\
#!/bin/bash
# {sample}: iVar as a lab runs it per sample (bench/bench_viral_cohort.py)
set -euo pipefail
cd {out}
ivar trim -e -i {bam} -b {bed} -p trimmed -m 30 -q 0 > trim.log
samtools sort -o trimmed.sorted.bam trimmed.bam 2> sort.log
samtools index trimmed.sorted.bam
samtools mpileup -aa -A -d 0 -B -Q 0 --reference {ref} trimmed.sorted.bam 2> mpileup.log \\
    | ivar variants -p variants -q 20 -t 0.01 -r {ref} > variants.log
samtools mpileup -aa -A -d 0 -Q 0 trimmed.sorted.bam 2> mpileup_consensus.log \\
    | ivar consensus -p consensus -t 0.75 -m 10 > consensus.log
"""


def write_ivar_jobs(data: Path, samples: list[str], out: Path) -> Path:
    """One script per sample under ``out/<sample>/run.sh`` and ``out/jobs.txt``, one
    ``bash .../run.sh`` per line (what ``parallel`` runs)."""
    q = shlex.quote
    lines = []
    for s in samples:
        d = out / s
        d.mkdir(parents=True)
        script = d / "run.sh"
        script.write_text(IVAR_SCRIPT.format(sample=s, out=q(str(d)), bam=q(str(data / s / "mixture.bam")),
                                             bed=q(str(data / "scheme.primer.bed")), ref=q(str(data / "virus.fa"))))
        lines.append(f"bash {q(str(script))}\n")
    jobs = out / "jobs.txt"
    jobs.write_text("".join(lines))
    return jobs


def run_ivar(data: Path, samples: list[str], out: Path, jobs: int = 2) -> dict[str, Any]:
    """``parallel -j<jobs>`` over the per-sample iVar scripts; times, per-job seconds."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    job_file = write_ivar_jobs(data, samples, out)
    joblog = out / "joblog.tsv"
    cmd = ["parallel", "--will-cite", f"-j{jobs}", "--halt", "now,fail=1", "--joblog", str(joblog),
           "-a", str(job_file)]
    (out / "command.txt").write_text(shlex.join(cmd) + "\n")
    res = _timed_run(cmd)
    with open(joblog) as fh:
        jobs_run = list(csv.DictReader(fh, delimiter="\t"))
    runtimes = [float(r["JobRuntime"]) for r in jobs_run]
    res["job_s"] = {"n": len(runtimes), "median": statistics.median(runtimes) if runtimes else None,
                    "min": min(runtimes, default=None), "max": max(runtimes, default=None), "sum": sum(runtimes)}
    res["steps_s"] = ivar_steps(out, jobs_run)
    return res


IVAR_STEPS = (("trim", "trimmed.bam"), ("sort+index", "trimmed.sorted.bam.bai"), ("variants", "variants.tsv"),
              ("consensus", "consensus.fa"))


def ivar_steps(out: Path, jobs_run: list[dict[str, str]]) -> dict[str, float | None]:
    """Median seconds per step of the per-sample scripts, from each job's start (the joblog)
    and the mtimes of the files the steps write last."""
    per: dict[str, list[float]] = {name: [] for name, _ in IVAR_STEPS}
    for r in jobs_run:
        prev = float(r["Starttime"])
        folder = Path(shlex.split(r["Command"])[-1]).parent
        for name, f in IVAR_STEPS:
            try:
                end = (folder / f).stat().st_mtime
            except OSError:
                break
            per[name].append(end - prev)
            prev = end
    return {name: statistics.median(v) if v else None for name, v in per.items()}


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #
@dataclass
class Tally:
    """Evaluations of one tool over the cohort, pooled."""

    found: dict[float, list[int]] = field(default_factory=lambda: {b: [0, 0] for b in FRACTIONS})
    fp_artefact: list[int] = field(default_factory=list)
    fp_other: list[int] = field(default_factory=list)
    af_abs_errors: list[float] = field(default_factory=list)
    fp_kinds: dict[str, int] = field(default_factory=dict)  # artefacts.tsv kind (or "other"): FPs, all samples
    missing: list[str] = field(default_factory=list)

    def add(self, ev: Evaluation, kinds: dict[Key, str] | None = None) -> None:
        for b in FRACTIONS:
            tp, n = ev.found["all"][b]
            self.found[b][0] += tp
            self.found[b][1] += n
        arte = len(ev.artefact_false_positives)
        self.fp_artefact.append(arte)
        self.fp_other.append(len(ev.false_positives) - arte)
        self.af_abs_errors += [abs(e) for e in ev.af_errors.values()]
        for k in ev.false_positives:
            kind = (kinds or {}).get(k, "other")
            self.fp_kinds[kind] = self.fp_kinds.get(kind, 0) + 1

    def recall(self, band: float) -> float | None:
        tp, n = self.found[band]
        return tp / n if n else None

    def fp_mean(self, which: str = "all") -> float | None:
        arte, other = self.fp_artefact, self.fp_other
        if not arte:
            return None
        per = {"artefact": arte, "other": other, "all": [a + o for a, o in zip(arte, other, strict=True)]}[which]
        return statistics.fmean(per)

    def as_dict(self) -> dict[str, Any]:
        return {"samples_scored": len(self.fp_artefact), "samples_missing": self.missing,
                "recall": {f"{b:g}": {"tp": tp, "n": n, "recall": tp / n if n else None}
                           for b, (tp, n) in self.found.items()},
                "fp_per_sample": self.fp_mean("all"), "fp_per_sample_artefact": self.fp_mean("artefact"),
                "fp_per_sample_other": self.fp_mean("other"), "fp_by_kind": dict(sorted(self.fp_kinds.items())),
                "fp_max": max(
                    (a + o for a, o in zip(self.fp_artefact, self.fp_other, strict=True)), default=None),
                "af_error_median_abs_pp": statistics.median(self.af_abs_errors) if self.af_abs_errors else None}


def score(data: Path, samples: list[str], calls_of: Any, length: int) -> Tally:
    """``calls_of(sample)`` -> ``{key: AF}`` (None: no output), each scored against its truth."""
    t = Tally()
    for s in samples:
        calls = calls_of(s)
        if calls is None:
            t.missing.append(s)
            continue
        t.add(evaluate(calls, read_truth(str(data / s / "truth.vcf.gz")), length, bins=FRACTIONS,
                       artefacts=read_artefacts(str(data / s / "artefacts.tsv"))),
              artefact_kinds(data / s / "artefacts.tsv"))
    return t


def artefact_kinds(tsv: Path) -> dict[Key, str]:
    """``artefacts.tsv``'s sites as keys, with their kind (``strand_hotspot``, ``pcr``, ``hp_slippage``)."""
    with open(tsv, newline="") as fh:
        return {(r["chrom"], int(r["pos"]), r["ref"], r["alt"]): r["kind"] for r in csv.DictReader(fh, delimiter="\t")}


def read_fasta_seq(path: Path) -> str | None:
    if not path.exists():
        return None
    return "".join(ln.strip() for ln in path.read_text().splitlines() if not ln.startswith(">")).upper()


def compare_consensus(ours: str | None, theirs: str | None) -> dict[str, Any]:
    """``N`` counts of both, and (same length) the positions where both call a base
    (A, C, G, T) and the bases differ, and where only one of them has ``N``."""
    keys = ("ours_n", "ivar_n", "ours_len", "ivar_len", "differ", "n_ours_only", "n_ivar_only")
    out: dict[str, Any] = dict.fromkeys(keys)
    if ours is None or theirs is None:
        return out
    out.update(ours_n=ours.count("N"), ivar_n=theirs.count("N"), ours_len=len(ours), ivar_len=len(theirs))
    if len(ours) == len(theirs):
        pairs = list(zip(ours, theirs, strict=True))
        out["differ"] = sum(a != b and a in "ACGT" and b in "ACGT" for a, b in pairs)
        out["n_ours_only"] = sum(a == "N" and b != "N" for a, b in pairs)
        out["n_ivar_only"] = sum(b == "N" and a != "N" for a, b in pairs)
    return out


def consensus_summary(per: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = [c for c in per.values() if c["ours_n"] is not None]
    same_len = [c for c in rows if c["differ"] is not None]
    return {"samples": len(rows), "mean_n_ours": statistics.fmean(c["ours_n"] for c in rows) if rows else None,
            "mean_n_ivar": statistics.fmean(c["ivar_n"] for c in rows) if rows else None,
            "same_length": len(same_len), "differing_bases": sum(c["differ"] for c in same_len),
            "samples_differing": sum(c["differ"] > 0 for c in same_len),
            "mean_n_ours_only": statistics.fmean(c["n_ours_only"] for c in same_len) if same_len else None,
            "mean_n_ivar_only": statistics.fmean(c["n_ivar_only"] for c in same_len) if same_len else None}


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #
def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r.get(key) for r in runs]
    return None if not values or any(v is None for v in values) else statistics.median(values)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(rows: list[dict[str, Any]], ratio: float | None, cpu_ratio: float | None = None) -> str:
    head = (f"{'tool':<44} {'wall s':>7} {'CPU s':>7} {'RSS MiB':>7} {'rec@1%':>7} {'rec@2%':>7} "
            f"{'FP/sample':>9} {'(artef':>6} {'+ other)':>8}")
    out = [head, "-" * len(head)]
    for r in rows:
        t = r.get("score") or {}
        rec = t.get("recall", {})
        r1, r2 = (rec.get(f"{b:g}", {}).get("recall") for b in (0.01, 0.02))
        out.append(f"{r['label']:<44} {fmt(r['wall_s']):>7} {fmt(r['cpu_s']):>7} {fmt(r['rss_mib'], '.0f'):>7} "
                   f"{_pct(r1):>7} {_pct(r2):>7} {fmt(t.get('fp_per_sample'), '.2f'):>9} "
                   f"{fmt(t.get('fp_per_sample_artefact'), '.2f'):>6} {fmt(t.get('fp_per_sample_other'), '.2f'):>8}")
        if r.get("note"):
            out.append(f"{'':<44}   note: {r['note']}")
    out.append(f"ratio workflow wall / iVar wall: {fmt(ratio, '.2f')} (goal <= {GOAL:.2f}); "
               f"CPU: {fmt(cpu_ratio, '.2f')}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=96, help="samples in the run (S001 ..)")
    ap.add_argument("--depth", type=float, default=2000.0, help="mean read pairs per amplicon")
    ap.add_argument("--length", type=int, default=30_000, help="genome length")
    ap.add_argument("--seed", type=int, default=1000, help="sample i has seed SEED + i")
    ap.add_argument("--reference-seed", type=int, default=7, help="seed of the shared reference and scheme")
    ap.add_argument("--alleles-per-fraction", type=int, default=20,
                    help="true alleles per band (lower it for genomes under ~15 kb)")
    ap.add_argument("--regions", type=int, default=1,
                    help="plan.n_regions (per sample) of the workflow run; 1: each sample one function, the run's "
                         "parallelism comes from its samples")
    ap.add_argument("--jobs", type=int, default=2, help="parallel -j for iVar")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each, alternating; medians are reported")
    ap.add_argument("--tools", default="workflow,ivar", help="comma-separated subset of workflow,ivar")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "svc-bench-viral-cohort",
                    help="samples (reused when made with the same parameters) and the runs' outputs")
    ap.add_argument("--json", type=Path, default=None, help="results (default: <workdir>/bench_viral_cohort.json)")
    args = ap.parse_args(argv)
    tools = set(args.tools.split(","))
    unknown = tools - {"workflow", "ivar"}
    if unknown:
        ap.error(f"unknown tool(s) {', '.join(sorted(unknown))}")
    if "ivar" in tools:
        missing = [t for t in ("ivar", "samtools", "parallel") if shutil.which(t) is None]
        if missing:
            ap.error(f"not installed: {' '.join(missing)} (or leave ivar out of --tools)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    samples = sample_names(args.samples)
    data, made = ensure_data(args.workdir, args.samples, args.seed, args.reference_seed, args.length, args.depth,
                             args.alleles_per_fraction)
    runs_dir = args.workdir / "runs"
    runs_dir.mkdir(exist_ok=True)

    idle = background_cores()
    if idle is not None and idle > 0.2:
        print(f"warning: other processes keep {idle:.1f} of {os.cpu_count()} cores busy: the timings will be off",
              flush=True)
    runs: dict[str, list[dict[str, Any]]] = {"workflow": [], "ivar": []}
    notes: dict[str, str] = {}
    wf_dir, ivar_dir = runs_dir / "workflow", runs_dir / "ivar"
    for i in range(args.repeats):
        if "workflow" in tools and "workflow" not in notes:
            try:
                r = run_workflow(data, samples, wf_dir, args.regions)
                runs["workflow"].append(r)
                print(f"repeat {i + 1}: workflow, one snakemake run of {len(samples)} samples: {r['wall']:.1f} s "
                      f"wall, {r['cpu']:.1f} s CPU", flush=True)
            except ToolError as exc:
                stderr = getattr(exc, "stderr", str(exc))
                print(f"workflow failed:\n{stderr[-3000:]}", file=sys.stderr)
                notes["workflow"] = f"FAILED: {_first_error_line(stderr)}"
        if "ivar" in tools and "ivar" not in notes:
            try:
                r = run_ivar(data, samples, ivar_dir, args.jobs)
                runs["ivar"].append(r)
                print(f"repeat {i + 1}: iVar, {len(samples)} samples, parallel -j{args.jobs}: {r['wall']:.1f} s wall, "
                      f"{r['cpu']:.1f} s CPU (per sample {fmt(r['job_s']['median'])} s median)", flush=True)
            except ToolError as exc:
                stderr = getattr(exc, "stderr", str(exc))
                print(f"iVar failed:\n{stderr[-3000:]}", file=sys.stderr)
                notes["ivar"] = f"FAILED: {_first_error_line(stderr)} (see {ivar_dir}/<sample>/*.log)"

    ref = str(data / "virus.fa")

    def ours(s: str) -> Any:
        vcf = wf_dir / "results" / f"{s}.vcf.gz"
        return read_vcf_calls(str(vcf), ref) if vcf.exists() else None

    def theirs(s: str) -> Any:
        tsv = ivar_dir / s / "variants.tsv"
        return read_ivar_tsv(str(tsv), ref) if tsv.exists() else None

    labels = {"workflow": f"workflow (1 snakemake run, {args.regions} regions/sample)",
              "ivar": f"iVar per sample, parallel -j{args.jobs}"}
    rows: list[dict[str, Any]] = []
    for tool, calls_of in (("workflow", ours), ("ivar", theirs)):
        if tool not in tools:
            continue
        rs = runs[tool]
        tally = score(data, samples, calls_of, args.length) if rs else None
        row = {"tool": tool, "label": labels[tool], "runs": len(rs), "wall_s": _median(rs, "wall"),
               "cpu_s": _median(rs, "cpu"), "rss_mib": max((r["rss"] for r in rs), default=None),
               "others_cpu_s": _median(rs, "others_cpu"), "walls": [round(r["wall"], 2) for r in rs],
               "score": tally.as_dict() if tally else None, "note": notes.get(tool, "")}
        if tally and tally.missing:
            row["note"] = (row["note"] + "; " if row["note"] else "") + f"no output for {len(tally.missing)} sample(s)"
        if tool == "workflow" and rs:
            row["phases_s"] = {k: _median(rs, k) for k in ("before_call", "call", "merges", "report", "exit",
                                                           "function_s")}
            row["functions"] = rs[-1].get("functions")
            row["call_summary"] = rs[-1].get("call_summary")
        if tool == "ivar" and rs:
            row["job_s"], row["steps_s"] = rs[-1]["job_s"], rs[-1]["steps_s"]
        rows.append(row)
    by = {r["tool"]: r for r in rows}
    ratio = cpu_ratio = None
    if by.get("workflow", {}).get("wall_s") and by.get("ivar", {}).get("wall_s"):
        ratio = by["workflow"]["wall_s"] / by["ivar"]["wall_s"]
        cpu_ratio = by["workflow"]["cpu_s"] / by["ivar"]["cpu_s"]

    consensus: dict[str, Any] | None = None
    if runs["workflow"] and runs["ivar"]:
        per = {s: compare_consensus(read_fasta_seq(wf_dir / "results" / f"{s}.consensus.fa"),
                                    read_fasta_seq(ivar_dir / s / "consensus.fa")) for s in samples}
        consensus = {"summary": consensus_summary(per), "per_sample": per}

    bam_mb = sum((data / s / "mixture.bam").stat().st_size for s in samples) / 1e6
    n_truth = sum(len(read_truth(str(data / s / "truth.vcf.gz"))) for s in samples)
    print(f"\ndata: {len(samples)} samples ({samples[0]} .. {samples[-1]}), {args.length / 1000:g} kb at "
          f"{args.depth:g} pairs per amplicon, one reference and scheme (seed {args.reference_seed}), "
          f"{bam_mb:.0f} MB of BAM, {n_truth} true alleles; {os.cpu_count()} cores; "
          f"median of {args.repeats} repeat(s)")
    print("recall: true positives / true alleles of the 1 % (2 %) designed band, pooled over the samples "
          "(ours: FILTER PASS; iVar: PASS=TRUE); FP/sample: mean per sample, at artefact sites + elsewhere")
    print(table(rows, ratio, cpu_ratio))
    for r in rows:
        if r.get("score"):
            rec = r["score"]["recall"]
            print(f"  {r['tool']}: recall per band " + ", ".join(
                f"{float(b) * 100:g}% {v['tp']}/{v['n']}" for b, v in rec.items())
                  + f"; max FP in one sample {r['score']['fp_max']}; median |AF error| "
                    f"{fmt(r['score']['af_error_median_abs_pp'], '.2f')} pp")
            kinds = r["score"]["fp_by_kind"]
            if kinds:
                print(f"  {r['tool']}: FP by kind (all samples): " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
        if r.get("others_cpu_s") is not None:
            print(f"  {r['tool']}: other processes on the machine used {r['others_cpu_s']:.1f} s CPU meanwhile")
    if "ivar" in by and by["ivar"].get("job_s"):
        j = by["ivar"]["job_s"]
        steps = by["ivar"].get("steps_s") or {}
        print(f"  iVar per sample (joblog): median {fmt(j['median'])} s, {fmt(j['min'])}-{fmt(j['max'])} s, "
              f"{fmt(j['sum'])} s summed; median per step: "
              + ", ".join(f"{k} {fmt(v)}" for k, v in steps.items()))
    if "workflow" in by and by["workflow"].get("phases_s"):
        p = by["workflow"]["phases_s"]
        print("\nwhere the workflow's wall time goes (s): "
              f"start+stage+plan {fmt(p['before_call'])}, call step {fmt(p['call'])} "
              f"({by['workflow']['functions']} functions, {fmt(p['function_s'])} s inside them), "
              f"merges {fmt(p['merges'])}, report {fmt(p['report'])}, exit {fmt(p['exit'])}")
        print(f"  call.log: {by['workflow']['call_summary']}")
    if consensus:
        c = consensus["summary"]
        print(f"\nconsensus, ours vs iVar ({c['samples']} samples): mean N {fmt(c['mean_n_ours'])} vs "
              f"{fmt(c['mean_n_ivar'])} (N in ours only {fmt(c['mean_n_ours_only'])}, in iVar's only "
              f"{fmt(c['mean_n_ivar_only'])}); same length in {c['same_length']}; {c['differing_bases']} bases where "
              f"both call A/C/G/T and differ, in {c['samples_differing']} sample(s)")
    print(f"\noutputs: {runs_dir}")
    out = args.json or args.workdir / "bench_viral_cohort.json"
    out.write_text(json.dumps({
        "data": {"dir": str(data), "samples": len(samples), "names": [samples[0], samples[-1]],
                 "length": args.length, "depth": args.depth, "seed": args.seed,
                 "reference_seed": args.reference_seed, "alleles_per_fraction": args.alleles_per_fraction,
                 "true_alleles": n_truth, "bam_mb": round(bam_mb, 1), **made},
        "cores": os.cpu_count(), "background_cores_before": idle, "repeats": args.repeats,
        "regions_per_sample": args.regions, "bands": list(FRACTIONS), "rows": rows,
        "ratio_wall": None if ratio is None else round(ratio, 3), "goal": round(GOAL, 3),
        "ratio_cpu": None if cpu_ratio is None else round(cpu_ratio, 3),
        "consensus": consensus,
        "runs": {t: [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rs]
                 for t, rs in runs.items()},
    }, indent=1) + "\n")
    print(f"results: {out}")
    return 1 if notes or any(not runs[t] for t in tools) else 0


if __name__ == "__main__":
    sys.exit(main())
