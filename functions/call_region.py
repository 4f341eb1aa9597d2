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
qualities, reads in the indel model's window — is piled up exactly as in a
whole-genome run), keeps the records the region owns (:meth:`Span.owns`: POS in
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
import zlib
from typing import Any

import pysam

from functions.core.errors import SvcError
from functions.core.primers import PrimerScheme
from functions.core.storage import ObjectStore
from functions.core.tasks import RegionTask, Span
from functions.engines import keeps_depth, make_params, run_engine, scores_at_merge
from functions.pileup import Evidence
from functions.slice import fetch_bam_slice, fetch_reference_window
from functions.worker import run_task

# Bases of reference kept beyond the outermost read piled up: BAQ and the indel
# model look a little past the reads; a generous margin costs a few kB.
REFERENCE_MARGIN = 2000


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
    slices: list[str] = []
    reads: list[tuple[int, int]] = []
    lo, hi = context.start, context.end + REFERENCE_MARGIN
    for i, bam in enumerate(t.bams):
        path = fetch_bam_slice(store, bam, os.path.join(tmp, f"slice{i}.bam"))
        slices.append(path)
        reads.append(count_reads(path, region))
        s_lo, s_hi = read_extent(path, context, REFERENCE_MARGIN)
        lo, hi = min(lo, s_lo), max(hi, s_hi)
    bam_gets, bam_bytes = store.counts.gets, store.counts.get_bytes
    ref_path = fetch_reference_window(store, t.reference.key, t.fai, lo - REFERENCE_MARGIN, hi,
                                      os.path.join(tmp, "ref.fa"), t.reference.bucket)
    own: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if keeps_depth(t.engine):
        extra["on_evidence"] = lambda ev: own.update(evidence_stats(ev, region))
    if scores_at_merge(t.engine):
        extra["owned"] = region
        extra["on_noise"] = lambda table: own.update(noise=table)
    if t.primers is not None:
            extra["primers"] = PrimerScheme.from_rows([list(p) for p in t.primers], "the task's primers")
    raw_vcf = run_engine(params, slices, ref_path, os.path.join(tmp, "raw.vcf"), region=context, workdir=tmp,
                         **extra)
    frag = os.path.join(tmp, "fragment.vcf.gz")
    records = keep_owned(raw_vcf, region, frag, volatile=(tmp,))
    return frag, {
        **own,
        "region": t.index,
        "name": region.name,
        "chrom": region.chrom,
        "start": region.start,
        "end": region.end,
        "records": records,
        "bam_gets": bam_gets,
        "bam_get_bytes": bam_bytes,
        "reads": [n for n, _ in reads],
        "usable_reads": [n for _, n in reads],
    }


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


def read_extent(bam_path: str, span: Span, margin: int) -> tuple[int, int]:
    """A span [lo, hi) holding every read that overlaps ``span``, and ``span.end + margin``.

    Cheap and exact: in a sorted BAM the first read returned has the leftmost
    start; a read overlapping [start, end) can end past ``end + margin`` only if it
    also covers position ``end + margin - 1``, so only the reads there are looked at.
    """
    chrom, start, end = span.chrom, span.start, span.end
    with pysam.AlignmentFile(bam_path, "rb") as bam:
        first = next(bam.fetch(contig=chrom, start=start, stop=end), None)
        if first is None:
            return start, end + margin
        lo, hi = first.reference_start, end + margin
        for read in bam.fetch(contig=chrom, start=hi - 1, stop=hi):
            if read.reference_start < end:
                hi = max(hi, read.reference_end or hi)
    return min(lo, start), hi


def count_reads(bam_path: str, span: Span) -> tuple[int, int]:
    """Reads overlapping ``span``: all of them, and those the caller can use."""
    with pysam.AlignmentFile(bam_path, "rb") as bam:
        return (bam.count(contig=span.chrom, start=span.start, stop=span.end, read_callback="nofilter"),
                bam.count(contig=span.chrom, start=span.start, stop=span.end, read_callback="all"))


def stable_header_line(line: str, volatile: tuple[str, ...]) -> bool:
    """False for a meta line that would make the fragment depend on where or when it was
    made: one naming a ``volatile`` path (a temporary folder) or stamped with a date."""
    return not (line.startswith("##") and ("; Date=" in line or any(v in line for v in volatile)))


def keep_owned(vcf_path: str, region: Span, out_path: str, volatile: tuple[str, ...] = ()) -> int:
    """Bgzip ``vcf_path`` to ``out_path`` keeping the stable header lines (see
    :func:`stable_header_line`) and the records ``region`` owns (:meth:`Span.owns`),
    the records in BGZF blocks of their own (the header's blocks end at ``#CHROM``)."""
    kept = 0
    with open(vcf_path) as src, pysam.BGZFile(out_path, "wb") as out:  # type: ignore[call-arg]
        for line in src:
            if line.startswith("#"):
                if stable_header_line(line, volatile):
                    out.write(line.encode())
                if line.startswith("#CHROM"):
                    out.flush()  # the records start a BGZF block: the merge copies their blocks as they are
                continue
            f = line.split("\t", 2)
            if region.owns(f[0], int(f[1])):
                kept += 1
                out.write(line.encode())
    return kept
