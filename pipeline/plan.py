"""Cut a sample's genome into regions of roughly equal data, from the BAM index alone.

Contract: :func:`plan_sample` takes a parsed BAI, the BAM's contigs and size and a
:class:`PlanSettings`, and returns a :class:`SamplePlan`: regions (0-based,
half-open, never across contigs, never wider than the maximum length) that together
cover every contig holding reads, each with the chunks (virtual offsets) and the
compressed byte ranges a function must fetch to see every read overlapping it. The
BAM body is never read. Contigs without reads get no region, so they cost no
function. :func:`plan_joint` plans several samples over the same regions (cut by
their summed bytes) for calling them together. Plans are written to and read from a
TSV a person can read.

The index's resolution bounds how closely a region's bytes fit its reads: a BAI
locates reads to 16 kb windows, so on a deep, short genome (a 30 kb virus at 5,000x
holds tens of MB per window) each region would fetch whole windows. Staging builds a
CSI of finer windows for such BAMs (:func:`pipeline.stage.fine_index`); planning then
reads it instead of the BAI (:func:`plan_input`), balances and snaps the cuts at its
resolution, and each region fetches little more than the reads overlapping its
context.

The data bounds the number of regions: no contig is cut into regions of fewer than
``min_region_bytes`` estimated compressed bytes (a contig with reads still gets one),
so an absurd ``n_regions`` (or a tiny ``target_bytes``) plans as many regions as the
data allows, with one warning naming the key, instead of hundreds of thousands of
near-empty functions; planning time and memory stay bounded by the data.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from functions.core.bai import MAX_BGZF_BLOCK, BamIndex, Chunk, coffset, uoffset
from functions.core.crai import CramIndex
from functions.core.cram import is_cram
from functions.core.errors import SvcError
from functions.core.targets import Intervals, TargetError, overlapping, targets
from functions.core.tasks import SCAN_SLACK, region_name
from pipeline.validate import bam_name

if TYPE_CHECKING:
    from functions.core.bamheader import BamHeader
    from functions.core.storage import IoCounts, ObjectStore
    from pipeline.manifests import StagedReference, StagedSample

logger = logging.getLogger(__name__)

# What planning reads: a BAM's BAI (or fine CSI), or a CRAM's .crai.
Index = BamIndex | CramIndex

# What a region costs a function beside its bytes (engine start, reference window, a
# few GETs), as BAM bytes: about 0.1 s at the 0.42 s per MB measured (README "Benchmarks").
REGION_OVERHEAD_BYTES = 256 << 10


class PlanError(SvcError, ValueError):
    """A plan cannot be made or read."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes [start, end) of an object, plus (``tail``) the BGZF block starting at end.

    The index says where the last record of a chunk ends inside a block, not where
    that block ends: a function learns the tail block's size from its header.
    """

    start: int
    end: int
    tail: bool = False

    def __len__(self) -> int:
        """Bytes known from the index (the tail block, at most 64 KiB, comes on top)."""
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.start}-{self.end}{'+' if self.tail else ''}"

    def __repr__(self) -> str:
        return f"ByteRange({self})"

    @classmethod
    def parse(cls, text: str) -> ByteRange:
        tail = text.endswith("+")
        start, end = text.rstrip("+").split("-")
        return cls(int(start), int(end), tail)


@dataclass(frozen=True)
class Region:
    """One unit of work: positions [start, end) of ``chrom`` (0-based, half-open)."""

    index: int
    chrom: str
    tid: int
    start: int
    end: int
    est_bytes: int
    chunks: tuple[Chunk, ...]
    ranges: tuple[ByteRange, ...]
    context_start: int  # reads overlapping [context_start, context_end) are piled up
    context_end: int
    # (virtual offset, bytes): the ranges end at that offset's block, and the function
    # reads on from it only as far as the reads starting before context_end go, asking
    # first for that many bytes (functions.core.tasks.BamSlice.scan); None: no scan.
    scan: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        """samtools-style 1-based inclusive region string (:func:`region_name`)."""
        return region_name(self.chrom, self.start, self.end)

    @property
    def fetch_bytes(self) -> int:
        """The bytes planned: the ranges, and the scan's first guess."""
        return sum(len(r) for r in self.ranges) + (self.scan[1] if self.scan else 0)

    @property
    def chunk_bytes(self) -> int:
        """Compressed bytes the index assigns to the region's chunks."""
        return sum(coffset(c.end) - coffset(c.beg) for c in self.chunks)

    def __repr__(self) -> str:
        return f"Region(#{self.index} {self.name}, {self.fetch_bytes} B in {len(self.ranges)} ranges)"


@dataclass(frozen=True)
class PlanSettings:
    """How to cut: by a number of regions or a target of bytes per region, never into
    regions of fewer than ``min_region_bytes`` (the schema's ``plan.min_region_bytes``)."""

    n_regions: int | None = None
    target_bytes: int | None = None
    max_region_length: int = 10_000_000
    padding: int = 1000
    min_region_bytes: int = 32768
    # calling.targets / calling.exclude BED paths ({"targets": ..., "exclude": ...}), if any
    targets: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if (self.n_regions is None) == (self.target_bytes is None):
            raise PlanError("set exactly one of plan.n_regions and plan.target_bytes")
        if self.max_region_length < 1:
            raise PlanError("plan.max_region_length must be positive")
        if self.padding < 0:
            raise PlanError("plan.padding must not be negative")
        if self.min_region_bytes < 1:
            raise PlanError("plan.min_region_bytes must be positive")


@dataclass
class SamplePlan:
    """A sample's regions; ``index``: the index they were cut from, for people
    (e.g. "CSI, 256 bp windows"; empty when not known)."""

    sample: str
    bam_key: str
    bam_size: int
    contigs: tuple[tuple[str, int], ...]
    header: ByteRange
    regions: list[Region] = field(default_factory=list)
    index: str = ""
    # The functions the settings ask for (plan.n_regions, or the bytes / plan.target_bytes;
    # 0: not known). More regions than that (a region per contig with reads, at least)
    # are packed into about that many functions (pipeline.call.pack_tasks).
    functions: int = 0

    @property
    def n_ref(self) -> int:
        return len(self.contigs)

    @property
    def fetch_bytes(self) -> int:
        return self.header.end * len(self.regions) + sum(r.fetch_bytes for r in self.regions)


def plan_sample(
    sample: str,
    index: Index,
    contigs: tuple[tuple[str, int], ...],
    bam_key: str,
    bam_size: int,
    settings: PlanSettings,
    cuts: dict[str, list[int]] | None = None,
) -> SamplePlan:
    """Plan one sample. ``cuts`` (tests, expert use) fixes the cut positions per contig."""
    _check_index(index, contigs)
    called = called_intervals(settings, contigs, f"sample {sample}'s BAM")
    weights = _masked(_weights(index, contigs), called, contigs, index.min_shift, settings.padding)
    shift = index.min_shift
    asked = 0
    if cuts is None:
        bounds, asked = _bounds(weights, contigs, settings, f"sample {sample}'s BAM", shift)
    else:
        bounds = {}
        for tid in weights:
            name, length = contigs[tid]
            inner = sorted({c for c in cuts.get(name, []) if 0 < c < length})
            bounds[tid] = [0, *inner, length]
    plan = _empty_plan(sample, index, contigs, bam_key, bam_size)
    plan.functions = asked
    for tid in sorted(bounds):
        cum = _cumulative(weights[tid], contigs[tid][1], shift)
        for start, end in _within(_limit(bounds[tid], settings.max_region_length), called, contigs[tid][0]):
            if index.query(tid, start, end):  # else no read overlaps: nothing to call
                plan.regions.append(_region(len(plan.regions), index, contigs, tid, start, end,
                                            cum, settings.padding))
    return plan


def called_intervals(settings: PlanSettings, contigs: tuple[tuple[str, int], ...], where: str) -> Intervals | None:
    """The intervals the run calls (calling.targets minus calling.exclude), None for all;
    a BED that cannot be read, or names a contig ``where`` lacks, is a PlanError."""
    if not settings.targets:
        return None
    try:
        return targets(contigs, settings.targets.get("targets"), settings.targets.get("exclude"), where)
    except TargetError as exc:
        raise PlanError(str(exc)) from exc


def _masked(weights: dict[int, np.ndarray], called: Intervals | None, contigs: tuple[tuple[str, int], ...],
            shift: int, padding: int) -> dict[int, np.ndarray]:
    """``weights`` with the windows no called interval (widened by the padding) touches
    set to 0, and contigs without one left out: regions are cut by the bytes that will
    be fetched."""
    if called is None:
        return weights
    out = {}
    for tid, w in weights.items():
        spans = called.get(contigs[tid][0])
        if not spans:
            continue
        keep = np.zeros(len(w), dtype=bool)
        for start, end in spans:
            keep[max(0, start - padding) >> shift: ((end + padding - 1) >> shift) + 1] = True
        masked = np.where(keep, w, 0.0)
        if masked.sum() > 0:
            out[tid] = masked
    return out


def _within(spans: list[tuple[int, int]], called: Intervals | None, chrom: str) -> list[tuple[int, int]]:
    """Each region shrunk to the called intervals it overlaps (from the first one's start
    to the last one's end), regions overlapping none dropped."""
    if called is None:
        return spans
    out = []
    for start, end in spans:
        inside = overlapping(called.get(chrom, []), start, end)
        if inside:
            out.append((inside[0][0], inside[-1][1]))
    return out


@dataclass(frozen=True)
class PlanInput:
    """What planning reads of one sample: its index and its BAM's contigs, key and size."""

    sample: str
    index: Index
    contigs: tuple[tuple[str, int], ...]
    bam_key: str
    bam_size: int


def plan_joint(inputs: list[PlanInput], settings: PlanSettings) -> list[SamplePlan]:
    """Plans of several samples over the same regions, for calling them together.

    The regions are cut by the samples' summed bytes (so a region is about as heavy
    for the joint call as any other) and kept where any sample has reads; each
    sample's plan lists, for every region, the chunks and byte ranges of its own BAM
    (none where it has no reads there). Region ``i`` is the same span in every plan.
    """
    if not inputs:
        raise PlanError("no samples to plan")
    first = inputs[0]
    for p in inputs:
        _check_index(p.index, p.contigs)
        if p.contigs != first.contigs:
            raise PlanError(
                f"sample {p.sample}'s BAM lists other contigs (or another order) than sample "
                f"{first.sample}'s: joint calling needs every BAM aligned to the same reference; "
                "realign it, or call the samples one by one (calling.mode: per_sample)"
            )
    contigs = first.contigs
    called = called_intervals(settings, contigs, f"sample {first.sample}'s BAM")
    # Indexes of other resolutions (a CSI beside BAIs) are summed at the finest one.
    shift = min(p.index.min_shift for p in inputs)
    per_sample = [
        _masked({tid: _refine(w, p.index.min_shift, shift, contigs[tid][1])
                 for tid, w in _weights(p.index, contigs).items()}, called, contigs, shift, settings.padding)
        for p in inputs
    ]
    tids = sorted({tid for w in per_sample for tid in w})
    summed = {tid: sum(w.get(tid, 0.0) for w in per_sample) for tid in tids}
    cut, asked = _bounds(summed, contigs, settings, f"the {len(inputs)} samples' BAMs", shift)  # type: ignore[arg-type]
    spans = [
        (tid, start, end)
        for tid, bounds in sorted(cut.items())
        for start, end in _within(_limit(bounds, settings.max_region_length), called, contigs[tid][0])
        if any(p.index.query(tid, start, end) for p in inputs)
    ]
    plans = []
    for p, weights in zip(inputs, per_sample, strict=True):
        plan = _empty_plan(p.sample, p.index, contigs, p.bam_key, p.bam_size)
        plan.functions = asked
        cums = {tid: _cumulative(weights.get(tid, np.zeros_like(summed[tid])), contigs[tid][1], shift)
                for tid in tids}
        for i, (tid, start, end) in enumerate(spans):
            plan.regions.append(_region(i, p.index, contigs, tid, start, end, cums[tid], settings.padding))
        plans.append(plan)
    return plans


def _check_index(index: Index, contigs: tuple[tuple[str, int], ...]) -> None:
    if len(index.refs) != len(contigs):
        raise PlanError(
            f"index lists {len(index.refs)} contigs but the BAM header {len(contigs)}: "
            "the index does not belong to this BAM; rebuild it with `samtools index`"
        )


def _weights(index: Index, contigs: tuple[tuple[str, int], ...]) -> dict[int, np.ndarray]:
    """Estimated bytes per window of the index (16 kb for a BAI), of each contig holding reads."""
    return {
        tid: index.window_bytes(tid, length)
        for tid, (_, length) in enumerate(contigs)
        if index.refs[tid].has_reads
    }


def _refine(weights: np.ndarray, shift: int, to_shift: int, length: int) -> np.ndarray:
    """Bytes per window of ``2**shift`` bp spread evenly over windows of ``2**to_shift``
    bp (``to_shift <= shift``), for a contig of ``length``; the total is kept."""
    if shift == to_shift:
        return weights
    factor = 1 << (shift - to_shift)
    n_win = max(1, (length + (1 << to_shift) - 1) >> to_shift)
    fine = np.repeat(weights / factor, factor)
    out = fine[:n_win].copy()
    out[-1] += fine[n_win:].sum()
    return out


def _bounds(weights: dict[int, np.ndarray], contigs: tuple[tuple[str, int], ...],
            settings: PlanSettings, what: str, shift: int) -> tuple[dict[int, list[int]], int]:
    """Cut positions per contig: regions of about equal bytes, snapped to windows of
    ``2**shift`` bp (the index's, whose bytes ``weights`` holds per window); and the
    number of regions the settings ask for.

    ``what`` names the data in the one warning logged when the data bounds the number
    of regions (e.g. "sample sampleA's BAM").
    """
    counts, asked = _allocate(weights, settings)
    used = sum(counts.values())
    if asked > used:
        total = sum(float(w.sum()) for w in weights.values())
        key = (f"plan.target_bytes {settings.target_bytes:,} asks for {asked:,} regions" if settings.target_bytes
               else f"plan.n_regions asks for {asked:,} regions")
        logger.warning(
            "warning: %s, but there are only %.2f MB of reads in %s: planned %s regions, so as not to cut regions "
            "under plan.min_region_bytes (%s compressed bytes; lower it for smaller regions)",
            key, total / 1e6, what, f"{used:,}", f"{settings.min_region_bytes:,}",
        )
    return {tid: _snap(_cut(weights[tid], contigs[tid][1], n, shift), settings.padding, 1 << shift)
            for tid, n in counts.items()}, asked


def _empty_plan(sample: str, index: Index, contigs: tuple[tuple[str, int], ...],
                bam_key: str, bam_size: int) -> SamplePlan:
    first = first_record(index, sample, bam_key)
    return SamplePlan(sample, bam_key, bam_size, contigs, ByteRange(0, _range_end(index, first, bam_size)),
                      index=f"{index.fmt}, {index.window} bp windows")


def _region(i: int, index: Index, contigs: tuple[tuple[str, int], ...], tid: int, start: int, end: int,
            cum: tuple[np.ndarray, np.ndarray], padding: int) -> Region:
    """Region ``i``: [start, end) of contig ``tid`` with the chunks of its padded context;
    ``cum``: the contig's cumulative bytes (:func:`_cumulative`), for the estimate."""
    name, length = contigs[tid]
    ctx_start, ctx_end = max(0, start - padding), min(length, end + padding)
    chunks = tuple(index.query(tid, ctx_start, ctx_end))
    est = float(np.interp(end, cum[0], cum[1]) - np.interp(start, cum[0], cum[1]))
    scan = _scan(index, tid, chunks, ctx_end, cum) if ctx_end < length else None
    fetched = chunks if scan is None else _before(chunks, scan[0])
    return Region(index=i, chrom=name, tid=tid, start=start, end=end, est_bytes=round(est),
                  chunks=chunks, ranges=_byte_ranges(fetched), context_start=ctx_start, context_end=ctx_end,
                  scan=scan)


def _scan(index: Index, tid: int, chunks: tuple[Chunk, ...], ctx_end: int,
          cum: tuple[np.ndarray, np.ndarray]) -> tuple[int, int] | None:
    """Where a function reads on by itself rather than to the chunks' end, and its first
    guess of the bytes (:attr:`Region.scan`); None when that would save nothing.

    The chunks end at the first record of an index bin starting at or past
    ``ctx_end``: up to a window (16 kb for a BAI) of reads past it, which the
    function does not need. The records before the linear index's offset for the
    window holding ``ctx_end - 1`` all lie before that window, and the ones after it
    the function reads in order until one starts at or past ``ctx_end``. The guess:
    the bytes the index puts between the window's start and ``ctx_end``, a quarter
    more, and :data:`~functions.core.tasks.SCAN_SLACK` (on the harness's 5 Mb genome at
    200 regions these read 1.14 times the BAM, in 0.7 times the GETs of reading to
    the chunks' end, 1.69 times the BAM).
    """
    linear = index.refs[tid].linear
    w = (ctx_end - 1) >> index.min_shift
    if not chunks or w >= len(linear) or not linear[w]:
        return None
    at = int(linear[w])
    if not chunks[0].beg < at < max(c.end for c in chunks):
        return None
    est = float(np.interp(ctx_end, cum[0], cum[1]) - np.interp(w << index.min_shift, cum[0], cum[1]))
    return at, int(1.25 * max(0.0, est)) + SCAN_SLACK


def _before(chunks: tuple[Chunk, ...], voffset: int) -> tuple[Chunk, ...]:
    """The parts of ``chunks`` before the block holding ``voffset``."""
    block = coffset(voffset) << 16
    return tuple(Chunk(c.beg, min(c.end, block)) for c in chunks if c.beg < block)


def first_record(index: Index, sample: str, bam: str) -> int:
    """Virtual offset of the BAM's first record; a BAM (or CRAM) without aligned reads is refused."""
    first = index.first_record
    if first is None:
        raise PlanError(f"{bam_name(sample, bam)} has no aligned reads, so there is nothing to call: point the "
                        f"sample sheet at the {'CRAM' if is_cram(bam) else 'BAM'} with the aligned reads, or remove "
                        "the sample")
    return first


def _range_end(index: Index, voffset: int, bam_size: int) -> int:
    """End of the bytes to fetch so that reading stops at ``voffset``."""
    if uoffset(voffset) == 0:
        return coffset(voffset)
    return index.block_end_bound(coffset(voffset), bam_size)


def _byte_ranges(chunks: tuple[Chunk, ...]) -> tuple[ByteRange, ...]:
    """The compressed bytes holding the chunks: whole blocks from each chunk's first
    block up to its last, whose end only the block's own header tells.

    A range whose last block ends at most one BGZF block before the next range starts
    (the next range most often starts on the block right after it: the records
    between are of bins the query left out) is joined to it: the same bytes, give or
    take less than one block, in two GETs fewer.
    """
    ranges: list[ByteRange] = []
    for c in chunks:  # sorted, and merged where they share a block
        start, end, tail = coffset(c.beg), coffset(c.end), uoffset(c.end) != 0
        if ranges and (start <= ranges[-1].end or (ranges[-1].tail and start - ranges[-1].end <= MAX_BGZF_BLOCK)):
            last = ranges.pop()
            if end > last.end:
                ranges.append(ByteRange(last.start, end, tail))
            else:
                ranges.append(ByteRange(last.start, last.end, last.tail or (end == last.end and tail)))
        else:
            ranges.append(ByteRange(start, end, tail))
    return tuple(ranges)


def _cumulative(weights: np.ndarray, length: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, cumulative bytes) at the edges of windows of ``2**shift`` bp, for
    linear interpolation."""
    edges = np.minimum(np.arange(len(weights) + 1, dtype=np.int64) << shift, length)
    return edges, np.concatenate([[0.0], np.cumsum(weights)])


def _allocate(weights: dict[int, np.ndarray], settings: PlanSettings) -> tuple[dict[int, int], int]:
    """Regions per contig, at least one each, keeping the largest region small; and the
    number of functions the settings ask for (regions of small contigs are packed into
    functions at the call).

    With a byte target, or more contigs with reads than regions asked: each contig cut
    into parts of the bytes a function should take (small contigs: one region each). With a number of regions: each
    next region goes to the contig whose regions are currently the largest, so the
    regions of all contigs come out about equally heavy (what balances the workers).
    Either way a contig of ``t`` bytes gets at most ``t // min_region_bytes`` regions
    (at least one), so no region is planned below that minimum; the work done is
    bounded by that cap, not by the number asked.
    """
    totals = {tid: float(w.sum()) for tid, w in weights.items()}
    caps = {tid: max(1, int(t // settings.min_region_bytes)) for tid, t in totals.items()}
    whole = sum(totals.values())
    if settings.target_bytes is not None or len(totals) > (settings.n_regions or 1):
        # More contigs than functions asked for (GRCh38's ~3,000 small ones): each contig
        # is cut at the bytes a function is asked to take, and light regions are packed
        # into functions at the call (pipeline.call.pack_tasks).
        target = settings.target_bytes or _packed_target(list(totals.values()), settings.n_regions or 1)
        wanted = {tid: max(1, math.ceil(t / target)) for tid, t in totals.items()}
        asked = (settings.n_regions or 1) if settings.target_bytes is None else max(1, math.ceil(whole / target))
        return {tid: min(n, caps[tid]) for tid, n in wanted.items()}, asked
    asked = settings.n_regions or 1
    counts = dict.fromkeys(totals, 1)
    heap = [(-t, tid) for tid, t in totals.items() if caps[tid] > 1]
    heapq.heapify(heap)
    for _ in range(min(asked, sum(caps.values())) - len(totals)):
        _, tid = heapq.heappop(heap)
        counts[tid] += 1
        if counts[tid] < caps[tid]:
            heapq.heappush(heap, (-totals[tid] / counts[tid], tid))
    return counts, asked


def _packed_target(totals: list[float], functions: int) -> float:
    """Bytes per region such that the regions, each weighing its bytes plus
    :data:`REGION_OVERHEAD_BYTES`, fill ``functions`` functions of one region's weight:
    contigs lighter than that are one region each (packed together at the call),
    heavier ones are cut. Solves n(T + o) = B + (B_big / T + N_small) o, reclassifying
    the contigs a few times."""
    o, n, whole = REGION_OVERHEAD_BYTES, functions, sum(totals)
    target = max(1.0, whole / n)
    for _ in range(4):
        big = sum(t for t in totals if t > target)
        small = sum(1 for t in totals if t <= target)
        b = n * o - whole - small * o
        target = max(1.0, (-b + math.sqrt(b * b + 4 * n * big * o)) / (2 * n))
    return target


def _cut(weights: np.ndarray, length: int, n: int, shift: int) -> list[int]:
    """Boundaries splitting one contig into ``n`` parts of equal estimated bytes
    (``weights``: bytes per window of ``2**shift`` bp)."""
    pos, cum = _cumulative(weights, length, shift)
    if n <= 1 or cum[-1] <= 0:
        return [0, length]
    targets = cum[-1] * np.arange(1, n) / n
    # np.interp needs increasing x: flat stretches (empty windows) collapse harmlessly.
    keep = np.concatenate([[True], np.diff(cum) > 0])
    inner = np.interp(targets, cum[keep], pos[keep]).round().astype(np.int64)
    return [0, *sorted({int(c) for c in inner if 0 < c < length}), length]


def _snap(bounds: list[int], padding: int, window: int) -> list[int]:
    """Move inner cuts to ``padding`` bases past an edge of the index's windows (of
    ``window`` bp: 16 kb for a BAI), where possible.

    A region's reads are fetched from the first read overlapping the window holding
    its context start. With the context starting exactly on a window edge, no
    region fetches the tail of the previous window. Cuts move by at most half a
    window and never past a neighbour, so regions stay balanced.
    """
    out = [bounds[0]]
    for cut, nxt in itertools.pairwise(bounds[1:]):
        snapped = round((cut - padding) / window) * window + padding
        if out[-1] + window <= snapped <= nxt - window:
            cut = snapped
        out.append(cut)
    out.append(bounds[-1])
    return out


def _limit(bounds: list[int], max_len: int) -> list[tuple[int, int]]:
    """Consecutive (start, end) pairs, any wider than ``max_len`` split evenly."""
    out: list[tuple[int, int]] = []
    for start, end in itertools.pairwise(bounds):
        parts = max(1, math.ceil((end - start) / max_len))
        edges = [start + (end - start) * k // parts for k in range(parts + 1)]
        out.extend(itertools.pairwise(edges))
    return out


# -- TSV -------------------------------------------------------------------------
COLUMNS = (
    "region", "chrom", "start", "end", "length", "context_start", "context_end",
    "est_bytes", "fetch_bytes", "ranges", "chunks", "scan",
)


def write_plan(plan: SamplePlan, path: str | Path, io: IoCounts | None = None) -> None:
    """Write the plan as TSV: ``#key=value`` lines, then one row per region.

    ``io``, the storage requests planning made, is recorded as ``#planning_*`` lines.
    """
    lines = [
        "# serverless-variant-calling region plan; regions are 0-based, half-open (BED style).",
        "# A region's function piles up the reads overlapping [context_start, context_end)",
        "# and keeps the records whose POS lies in [start, end). Byte ranges are [start-end);",
        "# a '+' means the BGZF block starting at end is needed too (its size is in its header).",
        "# scan: the function reads on from that virtual offset (block:offset) as far as the",
        "# reads starting before context_end go, asking first for the bytes after '+'.",
        f"#sample={plan.sample}",
        f"#bam_key={plan.bam_key}",
        f"#bam_size={plan.bam_size}",
        "#contigs=" + ",".join(f"{name}:{length}" for name, length in plan.contigs),
        f"#header_bytes={plan.header.start}-{plan.header.end}",
        *([f"#index={plan.index}"] if plan.index else []),
        *([f"#functions={plan.functions}"] if plan.functions else []),
        *([f"#planning_gets={io.gets}", f"#planning_get_bytes={io.get_bytes}"] if io else []),
        "\t".join(COLUMNS),
    ]
    for r in plan.regions:
        lines.append(
            "\t".join(
                str(x)
                for x in (
                    r.index,
                    r.chrom,
                    r.start,
                    r.end,
                    r.end - r.start,
                    r.context_start,
                    r.context_end,
                    r.est_bytes,
                    r.fetch_bytes,
                    ",".join(str(b) for b in r.ranges),
                    ",".join(
                        f"{_voffset_text(c.beg)}-{_voffset_text(c.end)}"
                        for c in r.chunks
                    ),
                    f"{_voffset_text(r.scan[0])}+{r.scan[1]}" if r.scan else "",
                )
            )
        )
    Path(path).write_text("\n".join(lines) + "\n")


def read_plan(path: str | Path) -> SamplePlan:
    meta: dict[str, str] = {}
    rows: list[list[str]] = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            if "=" in line:
                k, v = line[1:].split("=", 1)
                meta[k] = v
        elif line and not line.startswith("region\t"):
            rows.append(line.split("\t"))
    try:
        hs, he = meta["header_bytes"].split("-")
        plan = SamplePlan(
            sample=meta["sample"],
            bam_key=meta["bam_key"],
            bam_size=int(meta["bam_size"]),
            contigs=tuple(
                (name, int(length))
                for name, length in (c.rsplit(":", 1) for c in meta["contigs"].split(","))
            ),
            header=ByteRange(int(hs), int(he)),
            index=meta.get("index", ""),
            functions=int(meta.get("functions", 0)),
        )
        tids = {name: i for i, (name, _) in enumerate(plan.contigs)}
        for row in rows:
            if len(row) == len(COLUMNS) - 1:  # a plan of 0.3.0, without the scan column
                row = [*row, ""]
            rec = dict(zip(COLUMNS, row, strict=True))
            chunks = tuple(_parse_chunk(c) for c in rec["chunks"].split(",") if c)
            ranges = tuple(ByteRange.parse(b) for b in rec["ranges"].split(",") if b)
            plan.regions.append(
                Region(
                    index=int(rec["region"]),
                    chrom=rec["chrom"],
                    tid=tids[rec["chrom"]],
                    start=int(rec["start"]),
                    end=int(rec["end"]),
                    est_bytes=int(rec["est_bytes"]),
                    chunks=chunks,
                    ranges=ranges,
                    context_start=int(rec["context_start"]),
                    context_end=int(rec["context_end"]),
                    scan=_parse_scan(rec["scan"]),
                )
            )
    except (KeyError, ValueError) as exc:
        raise PlanError(f"plan {path} is malformed ({exc}); delete it and rerun") from exc
    return plan


def _voffset_text(voffset: int) -> str:
    """A virtual offset as the plan writes it: ``block:offset``."""
    return f"{coffset(voffset)}:{uoffset(voffset)}"


def _parse_voffset(text: str) -> int:
    c, u = map(int, text.split(":"))
    return (c << 16) | u


def _parse_scan(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    at, guess = text.split("+")
    return _parse_voffset(at), int(guess)


def _parse_chunk(text: str) -> Chunk:
    a, b = text.split("-")
    return Chunk(_parse_voffset(a), _parse_voffset(b))


def plan_input(
    store: ObjectStore,
    sample: str,
    manifest: StagedSample,
    reference: StagedReference | None = None,
    one_sample: bool = False,
) -> PlanInput:
    """Read a staged sample's index and BAM header (only) from the store.

    The index is the staged CSI when staging built one (finer windows, see
    :func:`pipeline.stage.fine_index`), else the BAI.

    The header must not say the BAM is unsorted and, given the staged ``reference``'s
    manifest, must agree with it on every contig (name, length, MD5 where both have one).
    With ``one_sample`` (the sample is called on its own), its read groups must name
    one sample (``SM``) at most.
    """
    from functions.core.bai import parse_bai
    from functions.core.bamheader import parse_header
    from functions.core.bgzf import inflate
    from functions.core.csi import parse_csi
    from pipeline.validate import check_contigs, check_one_sample, check_sort_order, sq_tags

    bam = manifest.bam
    index: Index
    if is_cram(bam.key):
        index, header = _cram_index(store, sample, manifest)
    else:
        if manifest.csi is not None:
            index = parse_csi(store.get(manifest.csi.key, manifest.csi.bucket))
            logger.info("sample %s: planning from its fine index (%d bp windows)", sample, index.window)
        else:
            index = parse_bai(store.get(manifest.bai.key, manifest.bai.bucket))
        first = first_record(index, sample, bam.path)
        raw = store.get_range(bam.key, 0, _range_end(index, first, bam.size), bam.bucket)
        header = parse_header(inflate(raw, allow_partial=True))
    check_sort_order(header.sort_order, sample, bam.path)
    if one_sample:
        check_one_sample(header.text, sample, bam.path)
    if reference is not None:
        check_contigs(sample, header.contigs, sq_tags(header.text, "M5"), reference.fasta.path, reference.contigs,
                      what="CRAM" if is_cram(bam.key) else "BAM")
    return PlanInput(sample, index, header.contigs, bam.key, bam.size)


def _cram_index(store: ObjectStore, sample: str, manifest: StagedSample) -> tuple[CramIndex, BamHeader]:
    """A staged CRAM's ``.crai`` and header, read for :func:`plan_input` (which checks the
    header as a BAM's)."""
    from functions.core.bai import IndexFormatError
    from functions.core.crai import parse_crai
    from functions.core.cram import EOF_CONTAINER, CramFormatError, cram_header

    cram, crai = manifest.bam, manifest.bai
    try:
        entries = parse_crai(store.get(crai.key, crai.bucket))
        if not entries:
            raise IndexFormatError("it lists no container")
        header = cram_header(store.get_range(cram.key, 0, min(e.container for e in entries), cram.bucket))
        index = CramIndex(entries, len(header.contigs), cram.size - len(EOF_CONTAINER))
    except (IndexFormatError, CramFormatError) as exc:
        raise PlanError(f"index {crai.path} of CRAM {cram.path} of sample {sample} cannot be used ({exc}): "
                        f"rebuild it with `samtools index {cram.path}`") from exc
    first_record(index, sample, cram.path)
    logger.info("sample %s: planning from its CRAM index (%d containers)", sample, index.n_containers)
    return index, header


def plan_from_store(
    store: ObjectStore,
    sample: str,
    manifest: StagedSample,
    settings: PlanSettings,
    cuts: dict[str, list[int]] | None = None,
    reference: StagedReference | None = None,
) -> SamplePlan:
    """Plan a staged sample to call on its own (see :func:`plan_input` for what is read
    and checked; its BAM must hold one sample's reads)."""
    p = plan_input(store, sample, manifest, reference, one_sample=True)
    return plan_sample(sample, p.index, p.contigs, p.bam_key, p.bam_size, settings, cuts)
