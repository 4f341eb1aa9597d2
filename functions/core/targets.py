"""Target regions (``calling.targets``, ``calling.exclude``): BED intervals a run calls
in, and those it leaves out.

Contract: :func:`read_bed` reads a BED file (``chrom start end ...``, 0-based,
half-open; ``#``, ``track`` and ``browser`` lines skipped) into sorted, merged
intervals per contig, or raises :class:`TargetError` naming the file, the line and
the fix. :func:`targets` combines a targets BED and an exclude BED into the intervals
that are called (targets minus exclude; the whole of every contig minus exclude when
only that is given). A record is called when its POS lies in one of them, as
``bcftools view -T targets.bed`` and then ``-T ^exclude.bed`` keep records; so the
merged VCF equals one whole-genome run filtered that way.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from functions.core.bed import bed_rows
from functions.core.errors import SvcError

Intervals = dict[str, list[tuple[int, int]]]


class TargetError(SvcError, ValueError):
    """A targets or exclude BED that cannot be read as one."""


def merge_intervals(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged (overlapping or touching) intervals."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def read_bed(path: str, what: str = "targets") -> Intervals:
    """The intervals of a BED file, merged per contig (in the file's contig order)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    source = f"{what} BED {path}"
    try:
        with open(path) as fh:
            for n, f, start, end in bed_rows(fh, 3, source, "chrom, start, end", "fix the line", TargetError):
                if start < 0 or end <= start:
                    raise TargetError(f"{source} line {n}: interval {f[0]}:{start}-{end} is empty or reversed "
                                      "(BED is 0-based, end after start); fix the line")
                spans.setdefault(f[0], []).append((start, end))
    except FileNotFoundError as exc:
        raise TargetError(f"{what} BED {path} not found; fix calling.{what} in the config") from exc
    except UnicodeDecodeError as exc:
        raise TargetError(f"{what} BED {path} is not a text file; give an uncompressed BED") from exc
    if not spans:
        raise TargetError(f"{what} BED {path} holds no interval; give one, or unset calling.{what}")
    return {chrom: merge_intervals(s) for chrom, s in spans.items()}


def subtract(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged intervals ``a`` without sorted, merged intervals ``b``."""
    out = []
    j = 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k, cur = j, start
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < end:
            out.append((cur, end))
    return out


def targets(contigs: Sequence[tuple[str, int]], targets_bed: str | None, exclude_bed: str | None,
            where: str) -> Intervals | None:
    """The intervals called on each of ``contigs`` (name, length): None when neither BED
    is given (everything is called). A BED naming a contig ``contigs`` lack (``where``
    names them: "sample S's BAM") is refused: its intervals would silently call nothing."""
    if targets_bed is None and exclude_bed is None:
        return None
    lengths = dict(contigs)
    beds = {"targets": targets_bed, "exclude": exclude_bed}
    read = {what: read_bed(path, what) for what, path in beds.items() if path is not None}
    for what, named in read.items():
        unknown = [c for c in named if c not in lengths]
        if unknown:
            raise TargetError(f"{what} BED {beds[what]} names contig {unknown[0]!r}, which {where} does not have "
                              f"({len(unknown)} such); use the reference's contig names (e.g. chr1 or 1)")
    keep = read.get("targets") or {name: [(0, length)] for name, length in contigs}
    drop = read.get("exclude", {})
    out: Intervals = {}
    for name, length in contigs:
        called = subtract([(s, min(e, length)) for s, e in keep.get(name, []) if s < length], drop.get(name, []))
        if called:
            out[name] = called
    return out


def overlapping(intervals: Sequence[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The intervals overlapping [start, end), clipped to it."""
    i = bisect.bisect_right(intervals, (start, float("inf"))) - 1
    i = max(i, 0)
    out = []
    while i < len(intervals) and intervals[i][0] < end:
        s, e = intervals[i]
        if e > start:
            out.append((max(s, start), min(e, end)))
        i += 1
    return out


def contains(intervals: Sequence[tuple[int, int]], pos: int) -> bool:
    """Does one of the sorted, merged ``intervals`` hold 0-based position ``pos``?"""
    i = bisect.bisect_right(intervals, (pos, float("inf"))) - 1
    return i >= 0 and intervals[i][0] <= pos < intervals[i][1]
