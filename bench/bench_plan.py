#!/usr/bin/env python
"""Planning speed on a human-scale index: builds a synthetic BAI (24 contigs, 3.1 Gb,
30x-like density: every 16 kb window holds reads, one leaf bin per window plus the
bins of reads crossing window edges) of about 8 MB, then times parsing it and
planning 200 and 2000 regions. Prints the figures; asserts nothing."""

from __future__ import annotations

import argparse
import struct
import time

import numpy as np

from functions.core.bai import META_BIN, parse_bai
from pipeline.plan import PlanSettings, plan_sample

HUMAN = [248_956_422, 242_193_529, 198_295_559, 190_214_555, 181_538_259, 170_805_979,
         159_345_973, 145_138_636, 138_394_717, 133_797_422, 135_086_622, 133_275_309,
         114_364_328, 107_043_718, 101_991_189, 90_338_345, 83_257_441, 80_373_285,
         58_617_616, 64_444_167, 46_709_983, 50_818_468, 156_040_895, 57_227_415]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data, bam_size = synthetic_bai(HUMAN)
    contigs = tuple((f"chr{i + 1}", n) for i, n in enumerate(HUMAN))
    print(f"synthetic BAI: {len(data) / 1e6:.2f} MB for a {sum(HUMAN) / 1e9:.2f} Gb genome, "
          f"BAM of {bam_size / 1e9:.1f} GB")
    for n in (200, 2000):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            index = parse_bai(data)
            plan = plan_sample("s", index, contigs, "k", bam_size, PlanSettings(n_regions=n))
            best = min(best, time.perf_counter() - t0)
        fetch = sum(r.fetch_bytes for r in plan.regions)
        print(f"parse + plan {n:5d} regions: {best:.3f} s (best of {args.repeats}); "
              f"{len(plan.regions)} regions, fetch {fetch / bam_size:.4f} x BAM size")


if __name__ == "__main__":
    main()
