#!/usr/bin/env python
"""Core-path benchmark: the pipeline against one whole-genome bcftools run, same data,
same run.

1. Generates (once; fixed seed; not committed) a larger dataset with
   ``test_data/generate.py``: by default a 20 Mb genome at 30x, 2 x 150 bp (about
   5 minutes on 2 cores; ``--genome-size 5000000`` for a quicker, 5 Mb run, where
   the workflow's fixed costs weigh more).
2. Times single-process ``bcftools mpileup | bcftools call -m`` (pysam's bcftools,
   the pipeline's own parameters) on the whole BAM.
3. Times the whole workflow through the real ``snakemake`` command line in a
   scratch directory: stage, plan, one Lithops localhost map with 2 workers, merge.
4. Repeats both (``--repeats``, default 2: this machine's timings vary by 10-20 %)
   and prints the median wall times, their ratio, the bytes the functions read against the
   BAM size, GETs per region, and whether the two VCF bodies are identical.

Prints figures; asserts nothing. Target on 2 cores: ratio <= 0.6, identical.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.evaluation.vcfcompare import vcf_body  # noqa: E402
from functions.bcftools_engine import BcftoolsParams, run_bcftools  # noqa: E402


def ensure_data(data: Path, genome_size: int, coverage: float, seed: int) -> None:
    if (data / "sampleA.bam.bai").exists() and (data / "ref.fa.fai").exists():
        print(f"data: reusing {data}")
        return
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "test_data" / "generate.py"), "--outdir", str(data),
         "--seed", str(seed), "--genome-size", str(genome_size), "--coverage", str(coverage),
         "--threads", "2"],
        check=True,
    )
    print(f"data: generated {genome_size / 1e6:.1f} Mb at {coverage}x in {time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None,
                    help="dataset folder (reused when present); default: $TMPDIR/svc-bench-<genome size>-<coverage>x")
    ap.add_argument("--genome-size", type=int, default=20_000_000)
    ap.add_argument("--coverage", type=float, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--regions", type=int, default=16, help="plan.n_regions for the pipeline")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each; medians are reported")
    ap.add_argument("--sample", default="sampleA")
    ap.add_argument("--keep", action="store_true", help="keep the scratch working directory")
    ap.add_argument("--lithops-config", type=Path, default=None,
                    help="Lithops config for the pipeline run (e.g. one with a Ceph/S3 store); "
                         "default: config/lithops/localhost.yaml")
    ap.add_argument("--bucket", default=None, help="storage.bucket for the pipeline run")
    args = ap.parse_args()
    if args.data is None:
        args.data = Path(tempfile.gettempdir()) / f"svc-bench-{args.genome_size}-{args.coverage:g}x"

    ensure_data(args.data, args.genome_size, args.coverage, args.seed)
    bam = args.data / f"{args.sample}.bam"
    ref = args.data / "ref.fa"
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    params = BcftoolsParams.from_dict(cfg["calling"].get("bcftools", {}))

    singles, pipes = [], []
    for rep in range(args.repeats):
        t_single, t_pipe, work = run_once(args, cfg, params, bam, ref)
        singles.append(t_single)
        pipes.append(t_pipe)
        print(f"run {rep + 1}: single {t_single:.1f} s, pipeline {t_pipe:.1f} s, ratio {t_pipe / t_single:.2f}")
        last = rep == args.repeats - 1
        if last:
            summarise(args, bam, work, singles, pipes)
        if last and args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_once(args: argparse.Namespace, cfg: dict, params: BcftoolsParams, bam: Path, ref: Path
             ) -> tuple[float, float, Path]:
    """One timed single run and one timed pipeline run, in a fresh scratch directory."""
    work = Path(tempfile.mkdtemp(prefix="svc-bench-"))
    t0 = time.perf_counter()
    run_bcftools(str(bam), str(ref), params, str(work / "single.vcf"))
    t_single = time.perf_counter() - t0

    shutil.copytree(ROOT / "config", work / "config")
    (work / "config" / "samples.tsv").write_text(f"sample\tbam\n{args.sample}\t{bam}\n")
    cfg = {**cfg, "reference": str(ref), "samples": "config/samples.tsv",
           "plan": {**cfg["plan"], "n_regions": args.regions},
           "executor": {**cfg["executor"], "progress": False},
           "storage": {**cfg["storage"], "prefix": f"bench-{work.name}", "bucket": args.bucket}}
    if args.lithops_config:
        cfg["lithops_config"] = str(args.lithops_config.resolve())
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (work / "tmp").mkdir()
    env = dict(os.environ, TMPDIR=str(work / "tmp"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(work), "--cores", "2", "--quiet"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    t_pipe = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"pipeline failed:\n{res.stderr[-3000:]}")
    return t_single, t_pipe, work


def summarise(args: argparse.Namespace, bam: Path, work: Path, singles: list[float], pipes: list[float]) -> None:
    from pipeline.manifests import CallResults

    frags = CallResults.read(work / "work" / "calls" / f"{args.sample}.json").fragments
    bam_size = bam.stat().st_size
    bam_read = sum(f["bam_get_bytes"] for f in frags)
    all_read = sum(f["get_bytes"] for f in frags)
    gets = [f["gets"] for f in frags]
    secs = sorted(f["seconds"] for f in frags)
    same = vcf_body(str(work / "results" / f"{args.sample}.vcf.gz")) == vcf_body(str(work / "single.vcf"))
    n_records = len(vcf_body(str(work / "single.vcf")))
    t_single, t_pipe = statistics.median(singles), statistics.median(pipes)
    print(f"dataset: {args.genome_size / 1e6:.1f} Mb, {args.coverage}x, BAM {bam_size / 1e6:.1f} MB; "
          f"{len(frags)} regions, 2 workers (Lithops localhost compute, "
          f"{args.lithops_config or 'local'} store); median of {len(pipes)} run(s)")
    print(f"single-process bcftools mpileup | call : {t_single:8.1f} s")
    print(f"pipeline (snakemake, all steps)        : {t_pipe:8.1f} s")
    print(f"ratio pipeline / single                : {t_pipe / t_single:8.2f}")
    print(f"BAM bytes read / BAM size              : {bam_read / bam_size:8.3f}  "
          f"(all bytes incl. reference: {all_read / bam_size:.3f})")
    print(f"GETs per region                        : min {min(gets)} max {max(gets)}")
    print(f"function seconds                       : min {secs[0]:.1f} median {secs[len(secs) // 2]:.1f} "
          f"max {secs[-1]:.1f}, sum {sum(secs):.1f}")
    print(f"VCF bodies identical                   : {same} ({n_records} records)")


if __name__ == "__main__":
    main()
