#!/usr/bin/env python
"""Alignment benchmark: FASTQ -> sorted, indexed BAM, the pipeline against
``minimap2 -t 2 -ax sr | samtools sort``, same data, same run.

1. Generates (once; fixed seed; reused when present) a germline dataset with
   ``test_data/generate.py --fastq``: by default 5 Mb at 30x, 500,000 pairs of
   2 x 150 bp per sample, in generation (not position) order as a sequencer writes them.
2. Runs and times, each in its own process tree (wall seconds, CPU seconds of the tree,
   and the peak RSS of its largest process), ``--repeats`` times, alternating:

   a. ``minimap2 -t 2 -ax sr REF R1 R2 | samtools sort -o BAM`` then ``samtools index``
      (Debian packages ``minimap2`` and ``samtools``; minimap2 builds its index from
      the FASTA, as a user running it would);
   b. the pipeline through the real ``snakemake`` command line, target
      ``results/SAMPLE.bam`` (staging and chunking the FASTQs, building and staging
      the minimap2 index, the fan-out, the merge and its index), Lithops localhost with
      2 workers, a fresh local object store each time.

3. Prints one table (median wall and CPU, peak RSS, ratio to (a)) and the agreement of
   the two BAMs: records, primary reads at the same place, properly paired reads; writes
   the same as JSON (``--json``).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
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
SAMPLE = "sampleA"


class ToolError(RuntimeError):
    pass


def ensure_data(data: Path, genome_size: int, coverage: float, seed: int) -> None:
    want = [data / "ref.fa.fai", data / "fastq" / f"{SAMPLE}_R1.fastq.gz", data / "fastq" / f"{SAMPLE}_R2.fastq.gz"]
    if all(p.exists() for p in want):
        print(f"data: reusing {data}")
        return
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "test_data" / "generate.py"), "--outdir", str(data), "--seed", str(seed),
         "--genome-size", str(genome_size), "--coverage", str(coverage), "--threads", "2", "--fastq"],
        check=True,
    )
    print(f"data: generated {genome_size / 1e6:.1f} Mb at {coverage:g}x in {time.perf_counter() - t0:.0f} s")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``cmd``; its wall seconds, CPU seconds (user + system of the whole tree) and
    the peak RSS (MiB) of its largest process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise ToolError(f"{shlex.join(cmd)[:200]} failed:\n{err.read().decode(errors='replace')[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_minimap2(data: Path, out: Path) -> tuple[float, float, float]:
    missing = [t for t in ("minimap2", "samtools") if shutil.which(t) is None]
    if missing:
        raise ToolError(f"not installed: {' '.join(missing)} (apt-get install minimap2 samtools)")
    ref, fq = data / "ref.fa", data / "fastq"
    q = shlex.quote
    r1, r2 = fq / f"{SAMPLE}_R1.fastq.gz", fq / f"{SAMPLE}_R2.fastq.gz"
    pipe = (f"minimap2 -t 2 -ax sr {q(str(ref))} {q(str(r1))} {q(str(r2))}"
            f" | samtools sort -o {q(str(out))} - && samtools index {q(str(out))}")
    return timed(["bash", "-o", "pipefail", "-c", pipe])


def run_pipeline(data: Path, run_dir: Path, chunk_pairs: int, level: int) -> tuple[float, float, float]:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(ROOT / "config", run_dir / "config")
    fq = data / "fastq"
    (run_dir / "config" / "samples.tsv").write_text(
        f"sample\tfastq_1\tfastq_2\n{SAMPLE}\t{fq / f'{SAMPLE}_R1.fastq.gz'}\t{fq / f'{SAMPLE}_R2.fastq.gz'}\n"
    )
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg = {**cfg, "reference": str(data / "ref.fa"), "samples": "config/samples.tsv",
           "align": {**cfg["align"], "chunk_pairs": chunk_pairs, "compression_level": level},
           "executor": {**cfg["executor"], "progress": False}}
    (run_dir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run_dir / "tmp").mkdir()
    env = dict(os.environ, TMPDIR=str(run_dir / "tmp"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(run_dir),
           "--cores", "2", "--quiet", "all", "--", f"results/{SAMPLE}.bam"]
    return timed(cmd, env=env)


def flagstat(bam: Path) -> dict[str, int]:
    text = subprocess.run(["samtools", "flagstat", str(bam)], capture_output=True, text=True, check=True).stdout
    out = {}
    for key, pattern in (("records", r"^(\d+) \+ \d+ in total"), ("mapped", r"^(\d+) \+ \d+ primary mapped"),
                         ("proper", r"^(\d+) \+ \d+ properly paired"), ("secondary", r"^(\d+) \+ \d+ secondary"),
                         ("supplementary", r"^(\d+) \+ \d+ supplementary")):
        m = re.search(pattern, text, re.M)
        out[key] = int(m.group(1)) if m else -1
    return out


def agreement(a: Path, b: Path) -> dict[str, Any]:
    """Primary reads placed identically (contig, POS, strand) in both BAMs."""
    import pysam

    def places(path: Path) -> dict[tuple[str, bool], tuple[int, int, bool]]:
        with pysam.AlignmentFile(str(path)) as fh:
            return {(r.query_name, r.is_read1): (r.reference_id, r.reference_start, r.is_reverse)
                    for r in fh if not (r.is_secondary or r.is_supplementary or r.is_unmapped)}

    pa, pb = places(a), places(b)
    same = sum(1 for k, v in pa.items() if pb.get(k) == v)
    return {"primary_mapped_pipeline": len(pa), "primary_mapped_minimap2": len(pb), "same_place": same,
            "same_place_fraction": same / max(1, len(pb))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None,
                    help="dataset folder (reused when present); default: $TMPDIR/svc-bench-align-<size>-<cov>x")
    ap.add_argument("--genome-size", type=int, default=5_000_000)
    ap.add_argument("--coverage", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--chunk-pairs", type=int, default=50_000, help="align.chunk_pairs of the pipeline")
    ap.add_argument("--compression-level", type=int, default=1, help="align.compression_level of the pipeline")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each, alternating; medians are reported")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)
    data = args.data or Path(tempfile.gettempdir()) / f"svc-bench-align-{args.genome_size}-{args.coverage:g}x"
    ensure_data(data, args.genome_size, args.coverage, args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="svc-bench-align-"))
    work.mkdir(parents=True, exist_ok=True)
    base_bam = work / "minimap2.bam"
    runs: dict[str, list[tuple[float, float, float]]] = {"minimap2": [], "pipeline": []}
    for i in range(args.repeats):
        runs["minimap2"].append(run_minimap2(data, base_bam))
        print(f"run {i + 1}: minimap2 | samtools sort  {runs['minimap2'][-1][0]:.1f} s", flush=True)
        runs["pipeline"].append(run_pipeline(data, work / "pipeline", args.chunk_pairs, args.compression_level))
        print(f"run {i + 1}: pipeline             {runs['pipeline'][-1][0]:.1f} s", flush=True)
    pipe_bam = work / "pipeline" / "results" / f"{SAMPLE}.bam"
    report = (work / "pipeline" / "results" / f"{SAMPLE}.align.txt").read_text()
    pairs = int(re.search(r"^pairs\t(\d+)", report, re.M).group(1))  # type: ignore[union-attr]
    chunks = re.search(r"^chunks\t(\d+)", report, re.M).group(1)  # type: ignore[union-attr]
    base_wall = statistics.median(r[0] for r in runs["minimap2"])
    rows = []
    for name, label in (("minimap2", "minimap2 -t 2 -ax sr | samtools sort; samtools index"),
                        ("pipeline", f"pipeline: snakemake -> results/{SAMPLE}.bam ({chunks} chunks, 2 workers)")):
        wall = statistics.median(r[0] for r in runs[name])
        cpu = statistics.median(r[1] for r in runs[name])
        rows.append({"tool": label, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                     "max_rss_mib": round(max(r[2] for r in runs[name]), 1), "ratio": round(wall / base_wall, 3),
                     "walls": [round(r[0], 2) for r in runs[name]]})
    fs = {"minimap2": flagstat(base_bam), "pipeline": flagstat(pipe_bam)}
    agree = agreement(pipe_bam, base_bam)
    minimap2_version = subprocess.run(["minimap2", "--version"], capture_output=True, text=True,
                                      check=True).stdout.strip()
    print(f"\ndata: {args.genome_size / 1e6:g} Mb, {args.coverage:g}x: {pairs:,} pairs of {SAMPLE}; "
          f"{os.cpu_count()} cores; minimap2 {minimap2_version}")
    print(f"{'tool':<72} {'wall s':>7} {'CPU s':>7} {'RSS MiB':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['tool']:<72} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} {r['max_rss_mib']:>8.0f} {r['ratio']:>6.2f}")
    for name, f in fs.items():
        print(f"{name:>9}: {f['records']:,} records, {f['secondary']:,} secondary, {f['supplementary']:,} "
              f"supplementary, {f['mapped']:,} primary mapped, {f['proper']:,} properly paired")
    print(f"primary reads placed alike (contig, POS, strand): {agree['same_place']:,} of the "
          f"{agree['primary_mapped_minimap2']:,} minimap2 mapped ({100 * agree['same_place_fraction']:.2f} %)")
    if args.json:
        args.json.write_text(json.dumps({"data": {"genome_size": args.genome_size, "coverage": args.coverage,
                                                  "pairs": pairs, "dir": str(data)},
                                         "minimap2": minimap2_version, "rows": rows, "flagstat": fs,
                                         "agreement": agree}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
