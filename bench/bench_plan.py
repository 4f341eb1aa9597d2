#!/usr/bin/env python
"""Planning: its speed on a human-scale index, and the bytes the planned functions fetch.

Three parts, each printed as it finishes; asserts nothing.

1. Human scale: a synthetic BAI (24 contigs, 3.1 Gb, 30x-like density: every 16 kb
   window holds reads, one leaf bin per window plus the bins of reads crossing window
   edges) of about 8 MB; times parsing it and planning 200 and 2000 regions, and the
   staging decision on a fine index (none: its windows are light).
2. The bundled test data (``test_data/sample{A,B}.bam``: 310 kb at 30x): the fetch
   ratio of BAI plans, and the staging decision (no fine index, so their plans are
   the BAI's).
3. Deep viral data (``test_data/viral.py``, 30 kb at 5,000x and 10,000x, generated
   into ``--data`` on the first run, about a minute each): for 4 and 17 regions, the
   bytes the functions fetch (:attr:`SamplePlan.fetch_bytes`: the BAM header once per
   region plus every region's byte ranges) over the BAM's size, planned from the BAI
   ("before") and from the fine CSI staging builds ("after"), beside the floor: the
   header plus, per region, the compressed bytes from the first to the last read
   overlapping its context (the region widened by lowfreq's padding, 120 bp), which every
   exact plan must fetch (the overlap of neighbouring contexts, 2 x padding per cut,
   is in it). Also the fine index's build time and size, and the planning time.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pysam

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_lowfreq import _viral  # noqa: E402
from functions.core.bai import META_BIN, BamIndex, parse_bai  # noqa: E402
from functions.core.csi import parse_csi  # noqa: E402
from functions.engines import context_padding  # noqa: E402
from pipeline.plan import PlanSettings, SamplePlan, plan_sample  # noqa: E402
from pipeline.stage import content_fingerprint, fine_index, fine_min_shift  # noqa: E402

HUMAN = [248_956_422, 242_193_529, 198_295_559, 190_214_555, 181_538_259, 170_805_979,
         159_345_973, 145_138_636, 138_394_717, 133_797_422, 135_086_622, 133_275_309,
         114_364_328, 107_043_718, 101_991_189, 90_338_345, 83_257_441, 80_373_285,
         58_617_616, 64_444_167, 46_709_983, 50_818_468, 156_040_895, 57_227_415]
REGIONS = (4, 17)
DEPTHS = (5000, 10000)


def synthetic_bai(lengths: list[int], seed: int = 1) -> tuple[bytes, int]:
    rng = np.random.default_rng(seed)
    out = [b"BAI\x01", struct.pack("<i", len(lengths))]
    coff = 1000  # compressed offset (bytes) where records start
    for length in lengths:
        n_win = (length + 16383) // 16384
        sizes = rng.integers(150_000, 250_000, n_win)  # compressed bytes per window (~30x)
        starts = coff + np.concatenate([[0], np.cumsum(sizes)[:-1]])
        ends = starts + sizes
        ref_beg, ref_end = int(starts[0]), int(ends[-1])
        bins = []
        for w in range(n_win):
            # leaf bin: reads wholly inside the window
            bins.append((4681 + w, [(int(starts[w]) << 16, int(ends[w] - 100) << 16)]))
        # reads crossing window edges fall in the 128 kb bins: one small chunk per edge
        by_parent: dict[int, list[tuple[int, int]]] = {}
        for w in range(1, n_win):
            by_parent.setdefault(585 + (w >> 3), []).append(
                ((int(ends[w - 1]) - 100) << 16, int(ends[w - 1]) << 16))
        bins.extend(by_parent.items())
        bins.append((META_BIN, [(ref_beg << 16, ref_end << 16), (int(sizes.sum() // 60), 0)]))
        out.append(struct.pack("<i", len(bins)))
        for b, chunks in bins:
            out.append(struct.pack("<Ii", b, len(chunks)))
            out.extend(struct.pack("<QQ", x, y) for x, y in chunks)
        out.append(struct.pack("<i", n_win))
        out.append((starts.astype(np.uint64) << np.uint64(16)).astype("<u8").tobytes())
        coff = ref_end
    out.append(struct.pack("<Q", 0))
    return b"".join(out), coff


def human_scale(repeats: int) -> None:
    data, bam_size = synthetic_bai(HUMAN)
    contigs = tuple((f"chr{i + 1}", n) for i, n in enumerate(HUMAN))
    print(f"[human scale] synthetic BAI: {len(data) / 1e6:.2f} MB for a {sum(HUMAN) / 1e9:.2f} Gb genome, "
          f"BAM of {bam_size / 1e9:.1f} GB")
    for n in (200, 2000):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            index = parse_bai(data)
            plan = plan_sample("s", index, contigs, "k", bam_size, PlanSettings(n_regions=n))
            best = min(best, time.perf_counter() - t0)
        print(f"  parse + plan {n:5d} regions: {best:.3f} s (best of {repeats}); "
              f"{len(plan.regions)} regions, fetch {plan.fetch_bytes / bam_size:.4f} x BAM size")
    t0 = time.perf_counter()
    shift = fine_min_shift(parse_bai(data), list(HUMAN), [150] * 100)
    print(f"  fine index at staging: {'none' if shift is None else f'{1 << shift} bp windows'} "
          f"(decided in {time.perf_counter() - t0:.2f} s, BAI parse included)")


def header_contigs(bam: str) -> tuple[tuple[str, int], ...]:
    with pysam.AlignmentFile(bam, "rb", check_sq=False) as fh:
        return tuple(zip(fh.references, fh.lengths, strict=True))


def bundled(work: Path) -> None:
    print("[bundled test data] 310 kb, 30x")
    for sample in ("sampleA", "sampleB"):
        bam = str(ROOT / "test_data" / f"{sample}.bam")
        size = os.path.getsize(bam)
        csi = fine_index(sample, bam, bam + ".bai", work, content_fingerprint(bam, bam + ".bai"))
        index = parse_bai(Path(bam + ".bai").read_bytes())
        ratios = []
        for n in (*REGIONS, 8, 16):
            plan = plan_sample(sample, index, header_contigs(bam), "k", size, PlanSettings(n_regions=n))
            ratios.append(f"{n} regions {plan.fetch_bytes / size:.3f}")
        print(f"  {sample} ({size / 1e6:.1f} MB): fine index {'none' if csi is None else csi}; "
              f"BAI plans fetch (x BAM size): {', '.join(ratios)}")


class Reads:
    """Every record's start, end and virtual offset (and the offset after the last), in file order."""

    def __init__(self, bam: str) -> None:
        pos, end, voff = [], [], []
        with pysam.AlignmentFile(bam, "rb", check_sq=False) as fh:
            v = fh.tell()
            for r in fh.fetch(until_eof=True):
                pos.append(r.reference_start)
                end.append(r.reference_end if r.reference_end is not None else r.reference_start + 1)
                voff.append(v)
                v = fh.tell()
        voff.append(v)
        self.pos, self.end = np.array(pos), np.array(end)
        self.coff = np.array(voff, dtype=np.uint64) >> np.uint64(16)

    def floor(self, plan: SamplePlan) -> int:
        """The bytes an exact plan with ``plan``'s contexts must fetch (one contig)."""
        total = plan.header.end * len(plan.regions)
        for r in plan.regions:
            sel = np.flatnonzero((self.pos < r.context_end) & (self.end > r.context_start))
            if len(sel):
                total += int(self.coff[sel[-1] + 1] - self.coff[sel[0]])
        return total


def viral(data: Path, depth: int, work: Path, repeats: int) -> None:
    folder = data / f"plan-viral-{depth}x"
    bam = str(folder / "mixture.bam")
    if not (folder / "mixture.bam.bai").exists():
        t0 = time.perf_counter()
        _viral().generate_mixture(folder, depth=float(depth), threads=2, log=False)
        print(f"  (generated {folder} in {time.perf_counter() - t0:.0f} s)")
    size = os.path.getsize(bam)
    t0 = time.perf_counter()
    csi = fine_index(f"viral{depth}", bam, bam + ".bai", work, content_fingerprint(bam, bam + ".bai"))
    built = time.perf_counter() - t0
    contigs = header_contigs(bam)
    print(f"[viral] 30 kb at {depth:,}x: BAM {size / 1e6:.1f} MB, BAI {os.path.getsize(bam + '.bai'):,} B; "
          + ("no fine index" if csi is None else
             f"fine index {os.path.getsize(csi):,} B, {1 << parse_csi(Path(csi).read_bytes()).min_shift} bp "
             f"windows, built in {built:.1f} s"))
    reads = Reads(bam)
    # Deep viral data is called with lowfreq: plan.padding null gives its padding.
    padding = context_padding("lowfreq", {})
    print(f"  padding {padding} bp (lowfreq's, plan.padding: null)")
    indexes: list[tuple[str, bytes, Callable[[bytes], BamIndex]]] = [
        ("BAI", Path(bam + ".bai").read_bytes(), parse_bai)]
    if csi is not None:
        indexes.append(("CSI", Path(csi).read_bytes(), parse_csi))
    for n in REGIONS:
        cells = []
        for name, raw, parse in indexes:
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                plan = plan_sample("s", parse(raw), contigs, "k", size, PlanSettings(n_regions=n, padding=padding))
                best = min(best, time.perf_counter() - t0)
            gets = sum(1 + sum(1 + b.tail for b in r.ranges) for r in plan.regions)
            cells.append(f"{name} {plan.fetch_bytes / size:.3f} x ({plan.fetch_bytes / 1e6:.0f} MB, {gets} BAM GETs, "
                         f"parse + plan {best * 1000:.1f} ms)")
            floor = reads.floor(plan)
        print(f"  {n:2d} regions: before {cells[0]}; after {cells[-1] if len(cells) > 1 else '-'}; "
              f"floor for the last plan's contexts {floor / size:.3f} x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache" / "svc-bench",
                    help="where the viral datasets are generated and reused")
    ap.add_argument("--no-viral", action="store_true", help="skip part 3 (and generating its data)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        human_scale(args.repeats)
        bundled(Path(tmp))
        if not args.no_viral:
            for depth in DEPTHS:
                viral(args.data, depth, Path(tmp), args.repeats)


if __name__ == "__main__":
    main()
