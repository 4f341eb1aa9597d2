#!/usr/bin/env python
"""Low-frequency benchmark: iVar, haploid bcftools and the lowfreq engine on one viral
mixture, same data, same run.

1. Generates (once; fixed seed; reused when present) a viral mixture with
   ``test_data/viral.py``: by default 30 kb at 5000x, minor haplotypes at 50/20/10/5/2/1 %
   carrying SNVs and 1-5 bp indels, plus strand-specific error hotspots and early PCR
   errors that a caller must not report.
2. Runs and times, each in its own process (wall seconds, and the peak RSS of the
   largest process of its tree):

   a. ``samtools mpileup -aa -A -d 0 -B -Q 0 --reference REF BAM | ivar variants -q 20
      -t 0.01 -r REF`` (Debian packages ``samtools`` and ``ivar``); rows with
      PASS=TRUE, and, on a second line, all rows;
   b. ``bcftools mpileup | bcftools call -m --ploidy 1`` through
      :func:`functions.bcftools_engine.run_bcftools` (max depth 100,000);
   c. the ``lowfreq`` engine as one whole-genome process
      (:func:`functions.lowfreq.run_lowfreq`, default parameters);
   d. the whole workflow with ``calling.engine: lowfreq`` through the real ``snakemake``
      command line, Lithops localhost with 2 workers (``--no-pipeline`` skips it); its
      VCF body is compared with (c)'s.

3. Prints one table (recall per designed-frequency bin for SNVs and indels, false
   positives: all, per 30 kb and at artefact sites; median AF error of the true
   positives) and writes the same as JSON (``--json``).

``--deep`` measures memory instead: a 2.5 kb amplicon at 100,000x (SNVs only, reads
written at their true place, about 40 s to build), on which it reports the wall time,
peak RSS and recall of (c).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.evaluation.afeval import (  # noqa: E402
    DEFAULT_BINS,
    Evaluation,
    Key,
    evaluate,
    read_artefacts,
    read_ivar_tsv,
    read_truth,
    read_vcf_calls,
)
from bench.evaluation.vcfcompare import vcf_body  # noqa: E402

SAMPLE = "mixture"


class ToolError(RuntimeError):
    """A benchmarked command failed; the message has the tail of its stderr."""


@dataclass
class Run:
    """One benchmarked tool: timings, and its calls scored against the truth."""

    tool: str
    seconds: float | None = None
    peak_rss_mb: float | None = None
    evaluation: Evaluation | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "wall_s": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "note": self.note,
            "evaluation": self.evaluation.as_dict() if self.evaluation else None,
        }


def _viral() -> ModuleType:
    """``test_data/viral.py``, registered in ``sys.modules`` so its workers can fork."""
    if "viral" not in sys.modules:
        spec = importlib.util.spec_from_file_location("viral", ROOT / "test_data" / "viral.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["viral"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["viral"]


def ensure_data(data: Path, **params: Any) -> None:
    """Generate the mixture into ``data`` unless a complete one is there already."""
    names = ("virus.fa.fai", "mixture.bam.bai", "truth.vcf.gz.tbi", "artefacts.tsv")
    if all((data / n).exists() for n in names):
        print(f"data: reusing {data}")
        return
    summary = _viral().generate_mixture(data, threads=2, **params)
    print(f"data: generated {summary.genome_length / 1000:g} kb at {summary.depth:g}x "
          f"({summary.read_pairs} pairs, {summary.variant_counts['total']} true alleles, "
          f"{sum(summary.artefact_counts.values())} artefact sites) in {summary.seconds:.1f} s")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``cmd``; return its wall seconds and the peak RSS (MiB) of the largest
    process of its tree (``wait4``: the child and the descendants it waited for)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise ToolError(f"{shlex.join(cmd)[:200]} exited with {proc.returncode}:\n{tail}")
    return wall, usage.ru_maxrss / 1024


def run_engine(engine: str, bam: str, ref: str, out_vcf: str) -> None:
    """Run one engine in this process (the benchmark starts it as a child process)."""
    if engine == "bcftools":
        from functions.bcftools_engine import BcftoolsParams, run_bcftools

        run_bcftools(bam, ref, BcftoolsParams(ploidy=1, max_depth=100_000), out_vcf)
    elif engine == "lowfreq":
        from functions.lowfreq import LowfreqParams, run_lowfreq

        run_lowfreq(bam, ref, LowfreqParams(), out_vcf, region=None, workdir=None)
    else:
        raise ValueError(f"unknown engine {engine!r}")


def _engine_cmd(engine: str, bam: Path, ref: Path, out: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--run-engine", engine, str(bam), str(ref), str(out)]


def lowfreq_available() -> str:
    """Empty if ``functions.lowfreq`` imports, else why not."""
    try:
        from functions.lowfreq import LowfreqParams, run_lowfreq  # noqa: F401
    except ImportError as exc:
        return f"functions.lowfreq not importable: {exc}"
    return ""


def bench_ivar(bam: Path, ref: Path, work: Path, score: Any) -> list[Run]:
    missing = [t for t in ("samtools", "ivar") if shutil.which(t) is None]
    if missing:
        note = f"not installed: {' '.join(missing)} (apt-get install samtools ivar)"
        return [Run("ivar -t 0.01 (PASS)", note=note)]
    prefix = work / "ivar"
    pipe = (
        f"samtools mpileup -aa -A -d 0 -B -Q 0 --reference {shlex.quote(str(ref))} {shlex.quote(str(bam))}"
        f" | ivar variants -p {shlex.quote(str(prefix))} -q 20 -t 0.01 -r {shlex.quote(str(ref))}"
    )
    wall, rss = timed(["bash", "-o", "pipefail", "-c", pipe])
    tsv = str(prefix) + ".tsv"
    return [
        Run("ivar -t 0.01 (PASS)", wall, rss, score(read_ivar_tsv(tsv, str(ref)))),
        Run("ivar -t 0.01 (all rows)", wall, rss, score(read_ivar_tsv(tsv, str(ref), pass_only=False))),
    ]


def bench_engine(engine: str, label: str, bam: Path, ref: Path, work: Path, score: Any) -> tuple[Run, Path]:
    """One engine on the whole BAM in a child process; its VCF is ``work/<engine>.vcf``."""
    out = work / f"{engine}.vcf"
    wall, rss = timed(_engine_cmd(engine, bam, ref, out))
    return Run(label, wall, rss, score(read_vcf_calls(str(out), str(ref)))), out


def bench_pipeline(bam: Path, ref: Path, regions: int, work: Path, score: Any) -> tuple[Run, Path]:
    """The workflow through the snakemake CLI in ``work/pipeline``, as bench_core runs it."""
    run_dir = work / "pipeline"
    shutil.copytree(ROOT / "config", run_dir / "config")
    (run_dir / "config" / "samples.tsv").write_text(f"sample\tbam\n{SAMPLE}\t{bam}\n")
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg = {**cfg, "reference": str(ref), "samples": "config/samples.tsv",
           "plan": {**cfg["plan"], "n_regions": regions},
           "calling": {**cfg["calling"], "engine": "lowfreq"},
           "executor": {**cfg["executor"], "progress": False},
           "storage": {**cfg["storage"], "prefix": f"bench-{run_dir.parent.name}"}}
    (run_dir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run_dir / "tmp").mkdir()
    env = dict(os.environ, TMPDIR=str(run_dir / "tmp"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(run_dir), "--cores", "2", "--quiet"]
    wall, rss = timed(cmd, env=env)
    vcf = run_dir / "results" / f"{SAMPLE}.vcf.gz"
    return Run(f"pipeline lowfreq ({regions} regions, 2 workers)", wall, rss,
               score(read_vcf_calls(str(vcf), str(ref)))), vcf


def _guarded(label: str, bench: Callable[[], list[Run]], unavailable: str = "") -> list[Run]:
    """``bench()``, or one row saying why it did not run (unavailable, or failed)."""
    if unavailable:
        return [Run(label, note=unavailable)]
    try:
        return bench()
    except ToolError as exc:
        print(f"{label} failed: {exc}", file=sys.stderr)
        return [Run(label, note="FAILED: " + str(exc).splitlines()[0][:60] + " (stderr above)")]


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(runs: list[Run], bins: tuple[float, ...] = DEFAULT_BINS) -> str:
    pct = " ".join(f"{b * 100:>4g}" for b in bins)
    width = 5 * len(bins) - 1
    head = (f"{'tool':40s} {'wall s':>7s} {'RSS MB':>7s} | {'SNV recall by HF %':^{width}s} | "
            f"{'indel recall by HF %':^{width}s} | {'FP':>4s} {'/30kb':>6s} {'artef':>5s} | {'AF err':>6s}")
    sub = f"{'':40s} {'':7s} {'':7s} | {pct} | {pct} | {'':4s} {'':6s} {'':5s} | {'pp':>6s}"
    rows = [head, sub, "-" * len(head)]
    for r in runs:
        ev = r.evaluation
        if ev is None:
            rows.append(f"{r.tool:40s} {_fmt(r.seconds, '7.1f')} {_fmt(r.peak_rss_mb, '7.0f')} | skipped: {r.note}")
            continue
        recall = [" ".join(_fmt(ev.recall(kind, b), "4.2f").rjust(4) for b in bins) for kind in ("snv", "indel")]
        af = ev.af_error_summary()["median_abs"]
        rows.append(
            f"{r.tool:40s} {_fmt(r.seconds, '7.1f')} {_fmt(r.peak_rss_mb, '7.0f')} | {recall[0]} | {recall[1]} | "
            f"{len(ev.false_positives):4d} {ev.fp_per_30kb:6.1f} {len(ev.artefact_false_positives):5d} | "
            f"{_fmt(af, '6.2f')}"
        )
    return "\n".join(rows)


def _scorer(data: Path, genome_length: int) -> Any:
    truth = read_truth(str(data / "truth.vcf.gz"))
    artefacts = read_artefacts(str(data / "artefacts.tsv"))

    def score(calls: dict[Key, float | None]) -> Evaluation:
        return evaluate(calls, truth, genome_length, artefacts=artefacts)

    return score


def main_mixture(args: argparse.Namespace) -> dict[str, Any]:
    data = args.data or Path(tempfile.gettempdir()) / f"svc-viral-{args.length}-{args.depth:g}x-s{args.seed}"
    ensure_data(data, seed=args.seed, genome_length=args.length, depth=args.depth)
    bam, ref = data / "mixture.bam", data / "virus.fa"
    score = _scorer(data, args.length)
    work = Path(tempfile.mkdtemp(prefix="svc-bench-lowfreq-"))
    runs: list[Run] = []
    identical: bool | None = None
    why = lowfreq_available()
    lowfreq_vcf: Path | None = None
    try:
        if "ivar" in args.tools:
            runs += _guarded("ivar -t 0.01 (PASS)", lambda: bench_ivar(bam, ref, work, score))
        if "bcftools" in args.tools:
            runs += _guarded("bcftools call -m --ploidy 1", lambda: [
                bench_engine("bcftools", "bcftools call -m --ploidy 1", bam, ref, work, score)[0]])
        if "lowfreq" in args.tools:
            runs += _guarded("lowfreq (one process)", lambda: [
                bench_engine("lowfreq", "lowfreq (one process)", bam, ref, work, score)[0]], why)
            if runs[-1].evaluation is not None:
                lowfreq_vcf = work / "lowfreq.vcf"
        if "pipeline" in args.tools and not args.no_pipeline:
            runs += _guarded("pipeline lowfreq", lambda: [
                bench_pipeline(bam, ref, args.regions, work, score)[0]], why)
            vcf = work / "pipeline" / "results" / f"{SAMPLE}.vcf.gz"
            if lowfreq_vcf is not None and runs[-1].evaluation is not None:
                identical = vcf_body(str(vcf)) == vcf_body(str(lowfreq_vcf))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\ndataset: {data} ({args.length / 1000:g} kb, {args.depth:g}x, seed {args.seed}); "
          f"recall per designed-frequency bin, FP = calls not in the truth ('artef': at artefact sites)")
    print(table(runs))
    if identical is not None:
        print(f"pipeline VCF body identical to the one-process lowfreq run: {identical}")
    return {"dataset": {"path": str(data), "length": args.length, "depth": args.depth, "seed": args.seed},
            "runs": [r.as_dict() for r in runs], "pipeline_identical_to_single": identical}


def main_deep(args: argparse.Namespace) -> dict[str, Any]:
    data = args.data or Path(tempfile.gettempdir()) / (
        f"svc-viral-deep-{args.deep_length}-{args.deep_depth:g}x-s{args.seed}")
    ensure_data(data, seed=args.seed, genome_length=args.deep_length, depth=args.deep_depth,
                snvs_per_haplotype=2, indels_per_haplotype=0, multiallelic_sites=2, true_alignment=True)
    bam, ref = data / "mixture.bam", data / "virus.fa"
    score = _scorer(data, args.deep_length)
    with tempfile.TemporaryDirectory(prefix="svc-bench-deep-") as tmp:
        runs = _guarded("lowfreq (one process)", lambda: [
            bench_engine("lowfreq", "lowfreq (one process)", bam, ref, Path(tmp), score)[0]], lowfreq_available())
    print(f"\ndeep amplicon: {data} ({args.deep_length} bp, {args.deep_depth:g}x, "
          f"BAM {bam.stat().st_size / 1e6:.0f} MB, SNVs only)")
    print(table(runs))
    return {"deep": {"path": str(data), "length": args.deep_length, "depth": args.deep_depth},
            "runs": [r.as_dict() for r in runs]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run-engine"]:  # internal: one engine in a child process
        run_engine(*argv[1:5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None,
                    help="dataset folder (reused when complete); default: $TMPDIR/svc-viral-<length>-<depth>x-s<seed>")
    ap.add_argument("--length", type=int, default=30_000, help="genome length of the mixture")
    ap.add_argument("--depth", type=float, default=5000.0, help="mean depth of the mixture")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tools", default="ivar,bcftools,lowfreq,pipeline", help="comma-separated subset to run")
    ap.add_argument("--no-pipeline", action="store_true", help="skip (d), the snakemake run")
    ap.add_argument("--regions", type=int, default=8, help="plan.n_regions for the pipeline run")
    ap.add_argument("--deep", action="store_true", help="memory mode: lowfreq on a deep amplicon only")
    ap.add_argument("--deep-length", type=int, default=2500)
    ap.add_argument("--deep-depth", type=float, default=100_000.0)
    ap.add_argument("--json", type=Path, default=None,
                    help="where to write the results (default: bench_lowfreq[_deep].json in the dataset folder)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder with every tool's output")
    args = ap.parse_args(argv)
    args.tools = set(args.tools.split(","))
    result = main_deep(args) if args.deep else main_mixture(args)
    out = args.json or Path(result.get("dataset", result.get("deep", {}))["path"]) / (
        "bench_lowfreq_deep.json" if args.deep else "bench_lowfreq.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
