#!/usr/bin/env python
"""A function's peak memory against the size of its slice: 10 MB and 1 GB, one region each.

1. Generates once (fixed seed; reused when present) in ``--workdir``: a 20 Mb random
   contig and two BAMs of 2 x 150 bp-style reads (single-end records, both strands) at
   ``--depth`` (150x) from its start, heterozygous SNVs every ~800 bp and qualities
   drawn per base (so the BAM compresses as real reads do, about 100 bytes a read): one
   stops at ``--small-mb`` (10 MB), the other at ``--big-mb`` (1,024 MB).
2. Runs each through the real ``snakemake`` with ``plan.n_regions: 1``, so one function
   fetches the whole slice (streamed to disk in GETs of at most 64 MB) and calls it with
   bcftools, and prints that function's slice bytes, seconds, peak RSS (``VmHWM`` of
   the worker during the task; the engine runs in it) and local disk, and the
   difference between the two peaks.

Prints figures; asserts nothing. About 15 minutes here (2 cores), most of it bcftools
over the 1 GB slice.

    python bench/bench_slice_memory.py
    python bench/bench_slice_memory.py --big-mb 100 --workdir /tmp/sm   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_amplicon import timed  # noqa: E402
from bench.bench_cohort import workflow_dir  # noqa: E402
from bench.bench_genome import BASES, READ, write_reference  # noqa: E402

CONTIG, LENGTH = "chrS", 20_000_000


def write_reads(path: Path, seq: np.ndarray, depth: float, stop_bytes: int, rng: np.random.Generator) -> int:
    """Reads from ``seq``'s start at ``depth`` until the BAM holds ``stop_bytes``; how many."""
    import pysam

    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": CONTIG, "LN": len(seq)}],
              "RG": [{"ID": "rg1", "SM": "sample"}]}
    alt = seq.copy()
    snvs = np.arange(400, len(seq), 800)
    alt[snvs] = BASES[(np.searchsorted(BASES, seq[snvs]) + 1) % 4]
    step = 100_000  # bases of reads written per round, then the file's size is looked at
    count = 0
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for lo in range(0, len(seq) - step, step):
            n = int(depth * step / READ)
            starts = np.sort(rng.integers(lo, lo + step, n))
            haps = rng.integers(0, 2, n)
            quals = rng.integers(20, 41, (n, READ), dtype=np.uint8)
            for j in range(n):
                s = int(starts[j])
                r = pysam.AlignedSegment(out.header)
                r.query_name = f"r{count}"
                r.flag = 16 if j % 2 else 0
                r.reference_id, r.reference_start, r.mapping_quality = 0, s, 60
                r.cigarstring = f"{READ}M"
                r.query_sequence = (alt if haps[j] else seq)[s : s + READ].tobytes().decode()
                r.query_qualities = quals[j]
                r.set_tag("RG", "rg1")
                out.write(r)
                count += 1
            if path.stat().st_size >= stop_bytes:
                break
    pysam.index(str(path))
    return count


def generate(wd: Path, depth: float, sizes: dict[str, int], seed: int) -> dict[str, Path]:
    import pysam

    stamp = wd / "generated.json"
    params = {"depth": depth, "sizes": sizes, "seed": seed}
    bams = {name: wd / f"{name}.bam" for name in sizes}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return bams
    wd.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ref = wd / "ref.fa"
    write_reference(ref, {CONTIG: LENGTH}, rng)
    pysam.faidx(str(ref))
    with pysam.FastaFile(str(ref)) as fa:
        seq = np.frombuffer(fa.fetch(CONTIG).encode(), dtype=np.uint8)
    for name, size in sizes.items():
        t = time.time()
        n = write_reads(bams[name], seq, depth, size, np.random.default_rng(seed + 1))
        print(f"{name}: {n:,} reads, {bams[name].stat().st_size / 1e6:.0f} MB in {time.time() - t:.0f} s",
              file=sys.stderr)
    stamp.write_text(json.dumps(params))
    return bams


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/svc-bench-slice")
    ap.add_argument("--small-mb", type=float, default=10)
    ap.add_argument("--big-mb", type=float, default=1024)
    ap.add_argument("--depth", type=float, default=150)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args(argv)
    wd = Path(args.workdir)
    bams = generate(wd, args.depth, {"small": int(args.small_mb * 2**20), "big": int(args.big_mb * 2**20)},
                    args.seed)
    peaks = {}
    for name, bam in bams.items():
        run = wd / f"run-{name}"
        cmd, env = workflow_dir(run, {"sample": bam}, wd / "ref.fa",
                                {"plan": {"n_regions": 1, "max_region_length": LENGTH}})
        wall, _, _ = timed(cmd, env=env)
        frags = json.loads((run / "work" / "calls" / "sample.json").read_text())["fragments"]
        f = max(frags, key=lambda f: f["bam_get_bytes"])
        peaks[name] = (f.get("peak_rss_bytes") or 0) / 1e6
        print(f"{name}: {len(frags)} region(s); the function fetched {f['bam_get_bytes'] / 1e6:,.1f} MB of BAM in "
              f"{f['bam_gets']} GETs, {f['reads'][0]:,} reads, took {f['seconds']:.1f} s, peak RSS "
              f"{peaks[name]:.0f} MB, local disk {f['disk_bytes'] / 1e6:,.1f} MB; {f['records']:,} records; "
              f"workflow wall {wall:.1f} s")
    print(f"peak RSS, {args.big_mb:g} MB slice - {args.small_mb:g} MB slice: {peaks['big'] - peaks['small']:+.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
