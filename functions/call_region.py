"""The calling function: one (sample, region) in, one VCF fragment and its stats out.

Contract: :func:`call_region` takes a :class:`~functions.core.tasks.RegionTask` as a
plain dict (built by :func:`pipeline.call.make_tasks`) naming the store's bucket and prefix (no
credentials: the open ``storage`` comes from Lithops in the worker), the BAM slice
(header range, contig id, chunks, byte ranges) of each BAM to call (one; or, for a
joint call, every sample's, called together), the reference's ``.fai`` entry, the region and the engine
parameters (``engine`` names one of :data:`functions.engines.ENGINES`). It fetches
only those bytes, runs the engine on a local view over the
region's context (the region widened by the plan's padding, so that every read
that can touch a call inside the region — mates whose overlap lowers base
qualities, reads in the indel model's window, for bcftools every read covering a
column of a read overlapping the region, checked by :func:`check_reach` — is piled
up exactly as in a whole-genome run), keeps the records the region owns (:meth:`Span.owns`: POS in
[start, end)), and through :func:`functions.worker.run_task` writes back to the store

* ``<out_key>.vcf.gz`` — a bgzipped VCF (full header, owned records only), and
* ``<out_key>.json`` — stats: records, bytes and GETs (all, and of the BAM
  alone), the reads in the region of each BAM and how many of them the caller can
  use (not flagged duplicate, secondary, QC-fail or unmapped: the reads bcftools
  skips), when it started (epoch seconds) and how long it took, the fragment's md5.

A fragment is a function of the task alone, byte for byte: header lines that would
carry the function's temporary paths or the time (the engine's command lines, its
``##reference``) are left out, so two attempts at the same task, in two runs sharing
a store, write identical bytes. Each PUT is atomic (see
:meth:`functions.core.storage.ObjectStore.put`), so a reader sees a whole fragment or none.

It returns the stats. Any failure raises :class:`RegionError` naming the sample,
region and object being read. Injected faults (tests only) wrap this function from
the runner's side (:func:`functions.faults.run_with_faults`), never from inside it.
"""

from __future__ import annotations

import base64
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pysam

from functions.bcftools_engine import NORM_MARGIN, normalize_vcf
from functions.core.errors import SvcError
from functions.core.primers import PrimerScheme
from functions.core.storage import ObjectStore
from functions.core.targets import contains
from functions.core.tasks import RegionTask, Span
from functions.engines import (
    keeps_depth,
    loads_whole_contig,
    make_params,
    needs_reads_in_context,
    run_engine,
    scores_at_merge,
)
from functions.pileup import Evidence
from functions.slice import CramSlice, fetch_bam_slice, fetch_cram_slice, fetch_reference_window, shift_slice
from functions.worker import Phases, run_task

# Bases of reference kept beyond the outermost read piled up: BAQ and the indel
# model look a little past the reads; a generous margin costs a few kB.
REFERENCE_MARGIN = 2000

# A stretch of a region without reads longer than this is left out of its reference
# (written as N, not fetched): one more GET costs less than reading a megabyte.
REFERENCE_GAP = 1_000_000

# When to move a region's reads to the start of their contig for an engine that loads
# the contig from base 0 (:func:`functions.slice.shift_slice`): bcftools takes about
# 0.9 ns and a byte of memory per base before the region (0.22 s and 250 MB at 249 Mb);
# moving takes about 12 ms and 1.5 us per read. Moving pays when the window starts
# 10 Mb or more along the contig and at least 2,000 bases per read.
SHIFT_MIN_BASES = 10_000_000
SHIFT_BASES_PER_READ = 2_000


class RegionError(SvcError, RuntimeError):
    """Calling one region failed."""


def call_region(task: dict[str, Any], storage: Any = None) -> dict[str, Any]:
    """Call one region (a :class:`~functions.core.tasks.RegionTask` as a dict); ``storage``
    is the worker's ``lithops.Storage`` (Lithops passes it). A pack of light regions
    (``{"tasks": [...], "key": ...}``, see :func:`pipeline.call.pack_tasks`) is called one
    region after another, each with its own fragment: ``{"key", "results": [stats...]}``."""
    if "tasks" in task:
        return {"key": task["key"], "results": [call_region(t, storage) for t in task["tasks"]]}
    t = RegionTask.from_dict(task)
    return run_task(f"sample {t.sample} region {t.region.name}", t.store, storage, t.sample, t.key, t.out_key,
                    ".vcf.gz", lambda store, tmp: _call(t, store, tmp), RegionError, prefix="svc-region-")


def _call(t: RegionTask, store: ObjectStore, tmp: str) -> tuple[str, dict[str, Any]]:
    """The calling function's own work in ``tmp``: the fragment's path and its own stats."""
    params = make_params(t.engine, t.params)
    region, context = t.region, t.context
    clock = Phases()
    slices: list[str] = []
    scans: list[ReadScan] = []
    decoded: list[CramSlice] = []
    for i, bam in enumerate(t.bams):
        if bam.cram:
            decoded.append(fetch_cram_slice(store, bam, t.reference, t.fai, context, os.path.join(tmp, f"slice{i}"),
                                            REFERENCE_MARGIN))
            slices.append(decoded[-1].bam)
            clock.lap("decode_cram")
        else:
            slices.append(fetch_bam_slice(store, bam, os.path.join(tmp, f"slice{i}.bam"), stop=context.end))
            clock.lap("fetch_bam")
        scans.append(scan_reads(slices[-1], region, context))
        clock.lap("scan")
    if needs_reads_in_context(t.engine):
        check_reach(scans, region, context, t.fai.length)
    bam_gets = store.counts.gets - sum(d.gets for d in decoded)
    bam_bytes = store.counts.get_bytes - sum(d.get_bytes for d in decoded)
    lo, hi, gaps = reference_window(scans, context, tight=loads_whole_contig(t.engine))
    normalize = bool(getattr(params, "normalize", False))
    if normalize:  # bases to left-align into, before the region, and its reference as it is
        lo, gaps = norm_window(lo, gaps, region)
    shift = lo if worth_shifting(t.engine, lo, sum(s.reads for s in scans)) and not normalize else 0
    # A CRAM's decoding window, when it holds every base the engine needs (true bases
    # where this window would have had N: the same calls), saves fetching them again.
    ref_path = next((d.reference for d in decoded if not shift and d.window[0] <= max(0, lo)
                     and min(hi, t.fai.length) <= d.window[1]), None)
    if ref_path is None:
        ref_path = fetch_reference_window(store, t.reference.key, t.fai, lo, hi, os.path.join(tmp, "ref.fa"),
                                          t.reference.bucket, shifted=bool(shift), gaps=gaps)
    clock.lap("fetch_reference")
    run_on = context
    if shift:
        run_on = Span(context.chrom, max(0, context.start - shift), context.end - shift)
        slices = [shift_slice(path, context, shift, path[: -len(".bam")] + ".shifted.bam") for path in slices]
        clock.lap("shift")
    own: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if keeps_depth(t.engine):
        extra["on_evidence"] = lambda ev: own.update(evidence_stats(ev, region))
    if scores_at_merge(t.engine):
        extra["owned"] = region
        extra["on_noise"] = lambda table: own.update(noise=table)
    if t.primers is not None:
        extra["primers"] = PrimerScheme.from_rows([list(p) for p in t.primers], "the task's primers")
    raw_vcf = run_engine(params, slices, ref_path, os.path.join(tmp, "raw.vcf"), region=run_on, workdir=tmp,
                         **extra)
    clock.lap("engine")
    frag = os.path.join(tmp, "fragment.vcf.gz")
    records = keep_owned(raw_vcf, region, frag, volatile=(tmp,), shift=shift, targets=t.targets)
    if normalize:
        owned = os.path.join(tmp, "owned.vcf.gz")
        os.replace(frag, owned)
        normed = normalize_vcf(owned, ref_path, os.path.join(tmp, "normalized.vcf"), tmp)
        records = keep_owned(normed, None, frag, volatile=(tmp,))
        check_moved(frag, region)
    clock.lap("write")
    return frag, {
        **own,
        "phases": clock.seconds,
        "region": t.index,
        "name": region.name,
        "chrom": region.chrom,
        "start": region.start,
        "end": region.end,
        "records": records,
        "shift": shift,
        "reference_gaps": len(gaps),
        "bam_gets": bam_gets,
        "bam_get_bytes": bam_bytes,
        "reads": [s.reads for s in scans],
        "usable_reads": [s.usable for s in scans],
    }


def worth_shifting(engine: str, window_start: int, n_reads: int) -> bool:
    """Should a region's reads move to the start of their contig (see :data:`SHIFT_MIN_BASES`)?"""
    return (loads_whole_contig(engine) and window_start >= SHIFT_MIN_BASES
            and window_start >= SHIFT_BASES_PER_READ * n_reads)


def evidence_stats(ev: Evidence, region: Span) -> dict[str, Any]:
    """What a region's stats keep of the engine's evidence, for its owned positions:
    the informative depth of each position (``depth``: zlib of little-endian uint32,
    base64), and the reads starting in the region whose primer bases were left out
    (``primer_trimmed``) or that were too short after that to count
    (``primer_dropped``)."""
    a, b = region.start - ev.lo, region.end - ev.lo
    depth = ev.counts[a:b].sum(axis=(1, 2)).astype("<u4")
    return {
        "depth": {"start": region.start, "end": region.end,
                  "zlib_u32": base64.b64encode(zlib.compress(depth.tobytes(), 6)).decode()},
        "primer_trimmed": int(ev.primer_trimmed[a:b].sum()),
        "primer_dropped": int(ev.primer_dropped[a:b].sum()),
    }


@dataclass
class ReadScan:
    """What one pass over a slice's reads overlapping a region's context finds."""

    reads: int = 0  # reads overlapping the region itself
    usable: int = 0  # of those, reads the caller can use (not unmapped, secondary, QC-fail, duplicate)
    # [start, end) spanned by the usable reads overlapping the region (None: there are none)
    reach: tuple[int, int] | None = None
    # [start, end) stretches covered by reads, apart by more than REFERENCE_GAP, in order
    islands: list[list[int]] = field(default_factory=list)


def scan_reads(bam_path: str, region: Span, context: Span) -> ReadScan:
    """One pass over the reads of ``bam_path`` overlapping ``context``: where they lie,
    and how many overlap ``region`` (as htslib counts them: a read without reference
    bases covers one)."""
    scan = ReadScan()
    lo = hi = -1  # the span of the usable reads overlapping the region (none yet)
    with pysam.AlignmentFile(bam_path, "rb") as bam:
        for read in bam.fetch(contig=context.chrom, start=context.start, stop=context.end):
            start = read.reference_start
            end = max(read.reference_end or 0, start + 1)
            _add_span(scan.islands, start, end)
            if start < region.end and end > region.start:
                scan.reads += 1
                if not read.flag & _UNUSABLE:
                    scan.usable += 1
                    lo, hi = (start if lo < 0 else lo), max(hi, end)
    if lo >= 0:
        scan.reach = (lo, hi)
    return scan


def check_reach(scans: list[ReadScan], region: Span, context: Span, length: int) -> None:
    """Refuse a region some read overlapping it reaches out of its context from (but
    not past the contig's ends), for an engine whose calls are exact only with every
    such read inside (:func:`functions.engines.needs_reads_in_context`): the function
    holds the reads overlapping the context, not the ones a whole-genome run would pile
    up with that read beyond it."""
    reaches = [s.reach for s in scans if s.reach is not None]
    if not reaches:
        return
    lo, hi = min(r[0] for r in reaches), max(r[1] for r in reaches)
    if (context.start > 0 and lo < context.start) or (context.end < length and hi > context.end):
        padding = max(region.start - context.start, context.end - region.end)
        need = max(region.start - lo, hi - region.end)
        raise RegionError(
            f"a read overlapping region {region.name} reaches {need:,} bp beyond it, past the {padding:,} bp "
            f"of context each side, so its calls could differ from a whole-genome run's: set plan.padding to "
            f"the reference span of the longest reads or more (at least {need:,})"
        )


def _add_span(islands: list[list[int]], start: int, end: int) -> None:
    """Add [start, end) to ``islands`` (given in order of start)."""
    if islands and start <= islands[-1][1] + REFERENCE_GAP:
        islands[-1][1] = max(islands[-1][1], end)
    else:
        islands.append([start, end])


def reference_window(scans: list[ReadScan], context: Span, tight: bool) -> tuple[int, int, list[tuple[int, int]]]:
    """The reference a region's engine needs: ``(start, end, gaps)`` for
    :func:`functions.slice.fetch_reference_window`. ``tight`` (bcftools, which piles up
    only where reads are): the stretches of reads, :data:`REFERENCE_MARGIN` around each,
    stretches without reads longer than :data:`REFERENCE_GAP` left out; otherwise the
    whole context, and any read reaching out of it, with the margin."""
    islands: list[list[int]] = []
    for start, end in sorted(span for scan in scans for span in scan.islands):
        _add_span(islands, start, end)
    if not tight or not islands:
        end = max(context.end, islands[-1][1]) if islands else context.end
        return max(0, context.start - REFERENCE_MARGIN), end + REFERENCE_MARGIN, []
    gaps = [(a[1] + REFERENCE_MARGIN, b[0] - REFERENCE_MARGIN) for a, b in zip(islands, islands[1:], strict=False)]
    return max(0, islands[0][0] - REFERENCE_MARGIN), islands[-1][1] + REFERENCE_MARGIN, gaps


_UNUSABLE = 0x4 | 0x100 | 0x200 | 0x400  # what bcftools mpileup skips: unmapped, secondary, QC-fail, duplicate


def stable_header_line(line: str, volatile: tuple[str, ...]) -> bool:
    """False for a meta line that would make the fragment depend on where or when it was
    made: one naming a ``volatile`` path (a temporary folder) or stamped with a date."""
    return not (line.startswith("##") and ("; Date=" in line or any(v in line for v in volatile)))


def norm_window(lo: int, gaps: list[tuple[int, int]], region: Span) -> tuple[int, list[tuple[int, int]]]:
    """The reference window's start and gaps when a region's records are normalised:
    every base from :data:`NORM_MARGIN` before the region on, so that no record
    left-aligns into an ``N`` the real reference does not have."""
    keep_from = max(0, region.start - NORM_MARGIN - 1)
    return min(lo, keep_from), [(a, b) for a, b in gaps if b <= keep_from or a >= region.end]


def check_moved(fragment: str, region: Span) -> None:
    """A normalised record moved :data:`NORM_MARGIN` bases or more before its region (in
    a repeat that long) is refused: the merge orders records only across that margin."""
    with pysam.BGZFile(fragment, "rb") as fh:  # type: ignore[call-arg]
        for raw in fh:
            line = raw.decode()
            if line.startswith("#"):
                continue
            pos = int(line.split("\t", 2)[1])
            if pos <= region.start - NORM_MARGIN:
                raise RegionError(
                    f"calling.normalize: a record of {region.name} left-aligns to {region.chrom}:{pos}, "
                    f"{NORM_MARGIN} or more bases before the region, further than the merge orders records; "
                    "call without calling.normalize and run `bcftools norm -f <reference> -m-` on the merged VCF"
                )
            break  # sorted: the first record is the leftmost


def keep_owned(vcf_path: str, region: Span | None, out_path: str, volatile: tuple[str, ...] = (),
               shift: int = 0, targets: Sequence[tuple[int, int]] | None = None) -> int:
    """Bgzip ``vcf_path`` to ``out_path`` keeping the stable header lines (see
    :func:`stable_header_line`) and the records ``region`` owns (:meth:`Span.owns`),
    the records in BGZF blocks of their own (the header's blocks end at ``#CHROM``).

    ``shift``: the engine ran on reads moved that many bases left on the region's contig
    (:func:`functions.slice.shift_slice`); records (POS, and INFO ``END``) move back.
    ``targets``: only records whose POS lies in one of these intervals (0-based,
    sorted, merged: calling.targets minus calling.exclude) are kept. ``region`` None:
    every record (a normalised fragment, whose records were owned before)."""
    kept = 0
    with open(vcf_path) as src, pysam.BGZFile(out_path, "wb") as out:  # type: ignore[call-arg]
        for line in src:
            if line.startswith("#"):
                if stable_header_line(line, volatile):
                    out.write(line.encode())
                if line.startswith("#CHROM"):
                    out.flush()  # the records start a BGZF block: the merge copies their blocks as they are
                continue
            f = line.split("\t", 8 if shift else 2)  # INFO (field 8) only when records move
            if shift:
                f[1] = str(int(f[1]) + shift)
                if "END=" in f[7]:
                    f[7] = _END.sub(lambda m: f"{m[1]}END={int(m[2]) + shift}", f[7])
                line = "\t".join(f)
            if ((region is None or region.owns(f[0], int(f[1])))
                    and (targets is None or contains(targets, int(f[1]) - 1))):
                kept += 1
                out.write(line.encode())
    return kept


_END = re.compile(r"(^|;)END=(\d+)")

