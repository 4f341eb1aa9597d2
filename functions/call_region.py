"""The calling function: one (sample, region) in, one VCF fragment and its stats out.

Contract: :func:`call_region` takes a plain dict (built by
:func:`pipeline.call.make_tasks`) naming the store's bucket and prefix (no
credentials: the open ``storage`` comes from Lithops in the worker), the BAM slice
(header range, contig id, chunks, byte ranges) of each BAM to call (one; or, for a
joint call, every sample's, called together), the reference's ``.fai`` entry, the region and the engine
parameters (``engine`` names one of :data:`functions.engines.ENGINES`). It fetches
only those bytes, runs the engine on a local view over the
region's context (the region widened by the plan's padding, so that every read
that can touch a call inside the region — mates whose overlap lowers base
qualities, reads in the indel model's window — is piled up exactly as in a
whole-genome run), keeps the records whose POS lies in [start, end), and writes
back to the store

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
region and object being read. A task with a ``faults`` entry (tests only, see
:mod:`functions.faults`) first has its injected fault, if it draws one; the stats
then also say which attempt this was and what was injected into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Any

import pysam

from functions.core.bai import Chunk
from functions.core.errors import SvcError
from functions.core.fai import FaiEntry
from functions.core.storage import ObjectStore
from functions.engines import make_params, run_engine
from functions.faults import FaultSettings, inject
from functions.slice import fetch_bam_slice, fetch_reference_window

# Bases of reference kept beyond the outermost read piled up: BAQ and the indel
# model look a little past the reads; a generous margin costs a few kB.
REFERENCE_MARGIN = 2000


class RegionError(SvcError, RuntimeError):
    """Calling one region failed."""


def call_region(task: dict[str, Any], storage: Any = None) -> dict[str, Any]:
    """Call one region; ``storage`` is the worker's ``lithops.Storage`` (Lithops passes it)."""
    region = task["region"]
    label = f"sample {task['sample']} region {region['name']}"
    try:
        return _call(task, storage)
    except RegionError:
        raise
    except Exception as exc:
        raise RegionError(f"{label}: {type(exc).__name__}: {exc}") from exc


def _call(task: dict[str, Any], storage: Any) -> dict[str, Any]:
    t0, started = time.monotonic(), time.time()
    store = ObjectStore.from_description(task["store"], storage)
    injected = inject(FaultSettings.from_dict(task["faults"]), store, task) if task.get("faults") else {}
    ref, region = task["reference"], task["region"]
    params = make_params(task["engine"], task["params"])
    start, end, chrom = region["start"], region["end"], region["chrom"]
    ctx_start, ctx_end = region["context_start"], region["context_end"]
    tmp = tempfile.mkdtemp(prefix="svc-region-")
    try:
        slices: list[str] = []
        reads: list[tuple[int, int]] = []
        lo, hi = ctx_start, ctx_end + REFERENCE_MARGIN
        for i, bam in enumerate(task["bams"]):
            path = fetch_bam_slice(
                store,
                bam["key"],
                bam["size"],
                bam["n_ref"],
                tuple(bam["header"]),
                bam["tid"],
                [Chunk(b, e) for b, e in bam["chunks"]],
                [tuple(r) for r in bam["ranges"]],
                os.path.join(tmp, f"slice{i}.bam"),
                bam.get("bucket"),
            )
            slices.append(path)
            reads.append(count_reads(path, chrom, start, end))
            s_lo, s_hi = read_extent(path, chrom, ctx_start, ctx_end, REFERENCE_MARGIN)
            lo, hi = min(lo, s_lo), max(hi, s_hi)
        bam_gets, bam_bytes = store.counts.gets, store.counts.get_bytes
        entry = FaiEntry(**ref["fai"])
        ref_path = fetch_reference_window(
            store,
            ref["key"],
            entry,
            lo - REFERENCE_MARGIN,
            hi,
            os.path.join(tmp, "ref.fa"),
            ref.get("bucket"),
        )
        raw_vcf = run_engine(
            params, slices, ref_path, os.path.join(tmp, "raw.vcf"),
            region=f"{chrom}:{ctx_start + 1}-{ctx_end}", workdir=tmp,
        )
        frag = os.path.join(tmp, "fragment.vcf.gz")
        records = keep_owned(raw_vcf, chrom, start, end, frag, volatile=(tmp,))
        with open(frag, "rb") as fh:
            data = fh.read()
        stats = {
            "sample": task["sample"],
            "region": region["index"],
            "name": region["name"],
            "records": records,
            "md5": hashlib.md5(data).hexdigest(),
            "size": len(data),
            "gets": store.counts.gets,
            "get_bytes": store.counts.get_bytes,
            "bam_gets": bam_gets,
            "bam_get_bytes": bam_bytes,
            "reads": [n for n, _ in reads],
            "usable_reads": [n for _, n in reads],
            "started": round(started, 3),  # epoch seconds, the worker's clock
            "seconds": round(time.monotonic() - t0, 3),
            "key": task["key"],
            **injected,
        }
        store.put(task["out_key"] + ".vcf.gz", data)
        store.put(task["out_key"] + ".json", json.dumps(stats, sort_keys=True).encode())
        return stats
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_extent(bam_path: str, chrom: str, start: int, end: int, margin: int) -> tuple[int, int]:
    """A span [lo, hi) holding every read that overlaps [start, end), and ``end + margin``.

    Cheap and exact: in a sorted BAM the first read returned has the leftmost
    start; a read overlapping [start, end) can end past ``end + margin`` only if it
    also covers position ``end + margin - 1``, so only the reads there are looked at.
    """
    with pysam.AlignmentFile(bam_path, "rb") as bam:
        first = next(bam.fetch(chrom, start, end), None)
        if first is None:
            return start, end + margin
        lo, hi = first.reference_start, end + margin
        for read in bam.fetch(chrom, hi - 1, hi):
            if read.reference_start < end:
                hi = max(hi, read.reference_end or hi)
    return min(lo, start), hi


def count_reads(bam_path: str, chrom: str, start: int, end: int) -> tuple[int, int]:
    """Reads overlapping [start, end): all of them, and those the caller can use."""
    with pysam.AlignmentFile(bam_path, "rb") as bam:
        return (bam.count(contig=chrom, start=start, stop=end, read_callback="nofilter"),
                bam.count(contig=chrom, start=start, stop=end, read_callback="all"))


def stable_header_line(line: str, volatile: tuple[str, ...]) -> bool:
    """False for a meta line that would make the fragment depend on where or when it was
    made: one naming a ``volatile`` path (a temporary folder) or stamped with a date."""
    return not (line.startswith("##") and ("; Date=" in line or any(v in line for v in volatile)))


def keep_owned(vcf_path: str, chrom: str, start: int, end: int, out_path: str,
               volatile: tuple[str, ...] = ()) -> int:
    """Bgzip ``vcf_path`` to ``out_path`` keeping the stable header lines (see
    :func:`stable_header_line`) and the records with POS in [start, end)."""
    kept = 0
    with open(vcf_path) as src, pysam.BGZFile(out_path, "wb") as out:  # type: ignore[call-arg]
        for line in src:
            if line.startswith("#"):
                if not stable_header_line(line, volatile):
                    continue
            else:
                f = line.split("\t", 2)
                if f[0] != chrom or not start < int(f[1]) <= end:
                    continue
                kept += 1
            out.write(line.encode())
    return kept
