"""Put a sample's BAM + BAI (or CRAM + CRAI), and the reference FASTA + FAI, into object storage.

Contract: :func:`stage_sample` and :func:`stage_reference` copy (or, with the local
store, link) local files into the store through :class:`functions.core.storage.ObjectStore`,
skipping objects already there with the same size, and write a small JSON manifest
naming each object's key, size and fingerprint. Every later step reads the inputs
from the store only, through these manifests. A missing FASTA index is built first;
a missing BAM index is built when the BAM is local and coordinate-sorted (beside the
BAM, or in the manifest's folder when the BAM's folder is not writable).

A local BAM whose 16 kb BAI windows are heavy (deep data on a short genome: a 30 kb
virus at 5,000x holds tens of MB per window) also gets a CSI of finer windows
(:func:`fine_index`, in the manifest's folder, never beside the BAM), staged beside
the BAM in the store, from which planning cuts regions that fetch little more than
their own reads. Shallow or large BAMs (a 30x human genome) never get one.

A fingerprint names an input's content in fragment keys. An object's is its ETag; a
local BAM linked into the local store gets :func:`content_fingerprint` (an MD5 of its
size, first and last 64 KiB and whole index) instead of the store's size and mtime,
so a BAM replaced by another of the same size and mtime is not taken for the old one.
:func:`bam_fingerprint` gives the workflow the same value before staging, so a
changed BAM is staged again.

Staging is also where inputs are checked (:mod:`pipeline.validate`): a BAM must be a
BAM, end with the BGZF EOF block, be sorted by coordinate and have an index no older
than itself (a CRAM: be a CRAM 3, end with its EOF container, the same otherwise; it
gets no fine index, as planning cuts it by its containers); the reference must be a
plain (uncompressed) FASTA. The reference manifest lists each contig's name, length
and (for a local FASTA) MD5, which planning compares with every BAM (or CRAM) header.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pysam

from functions.capture import stderr_into
from functions.core.bai import BamIndex, IndexFormatError, parse_bai
from functions.core.bamheader import BamHeader, BamHeaderError, parse_header
from functions.core.bgzf import EOF_BLOCK, inflate
from functions.core.cram import EOF_CONTAINER, CramFormatError, cram_header, is_cram
from functions.core.errors import SvcError
from functions.core.storage import ObjectMissingError, ObjectStore, split_url
from pipeline.manifests import Contig, StagedReference, StagedSample, StoredFile
from pipeline.validate import (
    HEAD_BYTES,
    InputError,
    bam_name,
    check_bam_start,
    check_cram_start,
    check_eof,
    check_index_age,
    check_reference_start,
    check_sort_order,
    fasta_contigs,
    sort_fix,
)

logger = logging.getLogger(__name__)

# Beyond this a BAM header is taken for corrupt (one with 200,000 contigs takes about 10 MB).
MAX_HEADER_READ = 64 << 20
# Bytes read from each end of a BAM for its content fingerprint: its header and first
# reads at the start, its last reads and the EOF block at the end.
FINGERPRINT_EDGE = 64 << 10
# Bytes of the reference read to tell a plain FASTA from a gzip or BGZF file (whose
# header, extra field included, fits in this).
REFERENCE_HEAD = 1024
# The fine index (see fine_index): a BAM gets one when at least HEAVY_SHARE of its
# bytes lie in 16 kb windows of HEAVY_WINDOW_BYTES or more: several hundred x (the
# 5,000x viral mixture of test_data/viral.py has 25 MB per window; a 30x human genome
# about 0.5 MB).
HEAVY_WINDOW_BYTES = 4 << 20
HEAVY_SHARE = 0.5
# Its windows: 2**FINE_MIN_SHIFT bp at the finest; none when they would be coarser
# than 2**FINE_MAX_SHIFT (a quarter of a BAI's window).
FINE_MIN_SHIFT = 8
FINE_MAX_SHIFT = 12
# Reads whose reference spans decide how wide its smallest bins must be.
SPAN_SAMPLE = 2000
# htslib folds a bin whose reads take less than 64 KiB (compressed) into its parent;
# the smallest bins are made wide enough to hold twice that of the reads wholly inside them.
MIN_LEAF_BYTES = 128 << 10


class StageError(SvcError, RuntimeError):
    """An input cannot be staged; the message names the file and the fix."""


def stage_file(store: ObjectStore, path: str, key: str, fingerprint: str | None = None) -> StoredFile:
    """Put a local file at ``key`` (unless there already); its manifest entry.

    ``fingerprint``: what names the content. With the local store it is the manifest's
    (default: the store's, :attr:`ObjectInfo.fingerprint`); with an uploading store it
    decides whether an object already there is this file (see
    :meth:`~functions.core.storage.ObjectStore.put_file`) and the manifest keeps the ETag.
    """
    uploaded = store.put_file(key, path, fingerprint)
    info = store.head(key)
    logger.info("%s %s -> %s (%d bytes)", "staged" if uploaded else "already staged", path, key, info.size)
    return StoredFile(os.path.abspath(path), store.bucket, key, info.size,
                      fingerprint if store.backend == "localhost" and fingerprint else info.fingerprint)


def content_fingerprint(path: str, index: str | None) -> str:
    """``md5:`` and the MD5 of a local file's size, its first 64 KiB, its whole ``index``
    (if any) and its last 64 KiB.

    Cheap (about 130 KiB and the index read, whatever the file's size) and, unlike size
    and mtime, changed by a change of content: a BAM's first bytes hold its header and
    first reads, its index the offset of every 16 kb window's reads, its last bytes the
    last reads. (What it can miss: an edit in the middle of a BAM that leaves every
    BGZF block's compressed size, hence the index, unchanged.)
    """
    md5 = hashlib.md5()
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        md5.update(b"%d\n" % size)
        md5.update(fh.read(FINGERPRINT_EDGE))
        if index is not None:
            md5.update(Path(index).read_bytes())
        fh.seek(max(0, size - FINGERPRINT_EDGE))
        md5.update(fh.read(FINGERPRINT_EDGE))
    return "md5:" + md5.hexdigest()


def bam_fingerprint(sample: str, bam: str, bai: str, index_dir: str | Path) -> str:
    """The :func:`content_fingerprint` a local BAM will be staged with, with the index
    :func:`local_index` would use (none yet: without one); for the workflow, which stages
    the sample again when it changes. ``index_dir``: as for :func:`stage_sample`."""
    return content_fingerprint(bam, _existing_index(sample, bam, bai, index_dir))


def _in_place(store: ObjectStore, url: str, what: str, fix: str) -> StoredFile:
    """An input already in object storage: used where it is, never copied."""
    if store.backend == "localhost":
        raise StageError(
            f"{what} {url} is in object storage, but the Lithops config uses the local store; "
            "set an S3 storage backend (e.g. config/lithops/ceph.yaml)"
        )
    bucket, key = split_url(url) or ("", "")
    try:
        info = store.head(key, bucket)
    except ObjectMissingError as exc:
        raise StageError(f"{what} {url} not found in object storage; {fix}") from exc
    logger.info("using %s in place (%d bytes)", url, info.size)
    return StoredFile(url, bucket, key, info.size, info.fingerprint)


def run_samtools(tool: str, *args: str) -> str | None:
    """Run ``pysam.<tool>(*args)``; None on success, else the reason htslib gave."""
    with tempfile.TemporaryFile() as err:
        try:
            with stderr_into(err):
                getattr(pysam, tool)(*args)
            return None
        except pysam.utils.SamtoolsError as exc:
            err.seek(0)
            said = [ln.strip() for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
            logger.debug("samtools %s %s failed: %s %s", tool, " ".join(args), exc, said)
            reasons = [ln.split("] ", 1)[-1] for ln in said if ln.startswith("[E::")] or said or [str(exc)]
            return reasons[0]


def check_local_bam(sample: str, bam: str) -> None:
    """A local BAM is a BAM (a ``.cram``: a CRAM 3), complete (the BGZF EOF block, or
    the CRAM EOF container, at the end) and not declared unsorted."""
    cram = is_cram(bam)
    with open(bam, "rb") as fh:
        (check_cram_start if cram else check_bam_start)(fh.read(HEAD_BYTES), sample, bam)
        fh.seek(max(0, os.fstat(fh.fileno()).st_size - len(EOF_CONTAINER if cram else EOF_BLOCK)))
        check_eof(fh.read(), sample, bam)
    check_sort_order(_local_header(sample, bam).sort_order, sample, bam)


def check_remote_cram(store: ObjectStore, sample: str, url: str, obj: StoredFile) -> None:
    """A CRAM in object storage is a CRAM 3 ending with the EOF container: two ranged GETs."""
    check_cram_start(store.get_range(obj.key, 0, min(obj.size, 6), obj.bucket), sample, url)
    check_eof(store.get_range(obj.key, max(0, obj.size - len(EOF_CONTAINER)), obj.size, obj.bucket), sample, url)


def _local_header(sample: str, bam: str) -> BamHeader:
    """The header of a local BAM (or CRAM), read with our parser (htslib would also open,
    and judge, the index).

    Reads the first MiB, then 4, 16 and 64 MiB while the header runs past what was read.
    """
    cram = is_cram(bam)
    size = 1 << 20
    with open(bam, "rb") as fh:
        while True:
            fh.seek(0)
            data = fh.read(size)
            try:
                return cram_header(data) if cram else parse_header(inflate(data, allow_partial=True))
            except (BamHeaderError, CramFormatError) as exc:
                if len(data) < size or size >= MAX_HEADER_READ:
                    raise InputError(f"the header of {bam_name(sample, bam)} cannot be read ({exc}): "
                                     "copy it again from its source, or write it again with samtools") from exc
            size *= 4


def check_remote_bam(store: ObjectStore, sample: str, url: str, obj: StoredFile) -> None:
    """A BAM in object storage ends with the BGZF EOF block: one ranged GET of its last 28 bytes.

    Only when it does not, a second GET of its first block tells a truncated BAM from a
    file that is no BAM at all.
    """
    size = obj.size
    tail = store.get_range(obj.key, max(0, size - len(EOF_BLOCK)), size, obj.bucket)
    if tail != EOF_BLOCK:
        check_bam_start(store.get_range(obj.key, 0, min(size, HEAD_BYTES), obj.bucket), sample, url)
        check_eof(tail, sample, url)


def _existing_index(sample: str, bam: str, bai: str, index_dir: str | Path) -> str | None:
    """``bai`` if it exists, else the index an earlier run built in ``index_dir`` if it is
    not older than the BAM, else None."""
    if os.path.exists(bai):
        return bai
    ours = os.path.join(index_dir, _our_index_name(sample, bam))
    if os.path.exists(ours) and int(os.path.getmtime(ours)) >= int(os.path.getmtime(bam)):
        return ours
    return None


def _our_index_name(sample: str, bam: str) -> str:
    """The name of the index staging builds for a BAM (or CRAM) that has none."""
    return f"{sample}.cram.crai" if is_cram(bam) else f"{sample}.bam.bai"


def local_index(sample: str, bam: str, bai: str, index_dir: str | Path) -> str:
    """The index of a local BAM (or CRAM): ``bai`` (its ``.bai``, or ``.crai``) if it
    exists and is not older than the file, else one built now (beside the file if its
    folder is writable, else in ``index_dir``)."""
    kind, suffix = ("CRAM", ".crai") if is_cram(bam) else ("BAM", ".bai")
    found = _existing_index(sample, bam, bai, index_dir)
    if found == bai:
        check_index_age(bai, bam, kind, f"samtools index {bam}")
        return bai
    if found is not None:
        logger.info("%s %s has no index beside it: using the one built by an earlier run, %s", kind, bam, found)
        return found
    ours = os.path.join(index_dir, _our_index_name(sample, bam))
    writable = os.access(os.path.dirname(os.path.abspath(bam)), os.W_OK)
    target = bam + suffix if writable else ours
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    tmp = f"{target}.tmp{os.getpid()}"
    t0 = time.monotonic()
    try:
        failed = run_samtools("index", "-o", tmp, bam)
        if failed is None:
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if failed is not None:
        if "unsorted" in failed.lower() or "not sorted" in failed.lower():
            raise InputError(f"{kind} {bam} of sample {sample} has no index and cannot be indexed: it is not "
                             f"sorted by coordinate ({failed}): {sort_fix(bam)}")
        raise InputError(f"{kind} {bam} of sample {sample} has no index and `samtools index` failed on it "
                         f"({failed}): check the file, then index it with `samtools index {bam}`")
    logger.info("%s %s had no index: built %s in %.1f s%s", kind, bam, target, time.monotonic() - t0,
                "" if writable else " (the BAM's folder is not writable)")
    return target


def fine_min_shift(index: BamIndex, lengths: list[int], spans: list[int]) -> int | None:
    """The ``min_shift`` of the fine index a BAM should get, or None for none.

    ``index``: its BAI; ``lengths``: its contigs' lengths; ``spans``: reference spans of
    some of its reads. None unless at least :data:`HEAVY_SHARE` of the BAM's bytes lie in
    windows of :data:`HEAVY_WINDOW_BYTES` or more. A smallest bin holds the reads that
    start in it and end in it: it is made wide enough (``2**min_shift`` bp, at least
    ``2**FINE_MIN_SHIFT``) that the reads of the 90th-percentile span starting in its
    first ``window - span`` bases take :data:`MIN_LEAF_BYTES` at the heavy windows'
    median density, so that htslib keeps it (and with it the offset of its window);
    None when that is coarser than ``2**FINE_MAX_SHIFT`` bp (long reads, or windows
    only just heavy).
    """
    weights = [index.window_bytes(tid, n) for tid, n in enumerate(lengths) if index.refs[tid].has_reads]
    if not weights or not spans:
        return None
    w = np.concatenate(weights)
    heavy = w[w >= HEAVY_WINDOW_BYTES]
    if not len(heavy) or heavy.sum() < HEAVY_SHARE * w.sum():
        return None
    per_bp = float(np.median(heavy)) / index.window
    span = float(np.percentile(spans, 90))
    shift = max(FINE_MIN_SHIFT, math.ceil(math.log2(span + MIN_LEAF_BYTES / per_bp)))
    return shift if shift <= FINE_MAX_SHIFT else None


def _read_spans(bam: str, n: int = SPAN_SAMPLE) -> list[int]:
    """Reference spans of the first ``n`` mapped primary reads of a local BAM."""
    spans: list[int] = []
    with pysam.AlignmentFile(bam, "rb", check_sq=False) as fh:
        for read in fh.fetch(until_eof=True):
            if read.is_unmapped or read.is_secondary or read.is_supplementary:
                continue
            spans.append(read.reference_length or 1)
            if len(spans) >= n:
                break
    return spans


def _file_md5(path: str) -> str:
    """``md5:`` and the MD5 of a (small) file's whole content."""
    return "md5:" + hashlib.md5(Path(path).read_bytes()).hexdigest()


def fine_index(sample: str, bam: str, bai: str, index_dir: str | Path, fingerprint: str) -> str | None:
    """A CSI of a deep local BAM, finer than its BAI, for planning; None when the BAM
    does not need one (see :func:`fine_min_shift`) or it cannot be built.

    Built with ``samtools index -c -m <min_shift>`` into ``index_dir`` as
    ``<sample>.bam.csi`` (never beside the BAM, where htslib would prefer it to the
    BAI in every other tool), with ``<sample>.bam.csi.source`` naming the BAM's
    ``fingerprint`` and the ``min_shift``: reused while both hold, rebuilt otherwise.
    A BAM smaller than one heavy window is judged without reading its index.
    """
    if os.path.getsize(bam) < HEAVY_WINDOW_BYTES:
        return None
    try:
        index = parse_bai(Path(bai).read_bytes())
    except IndexFormatError as exc:
        logger.warning("warning: index %s of BAM %s cannot be read (%s): no fine index", bai, bam, exc)
        return None
    lengths = [n for _, n in _local_header(sample, bam).contigs]
    if len(lengths) != len(index.refs):
        return None  # the index is not this BAM's: planning says so
    shift = fine_min_shift(index, lengths, _read_spans(bam))
    if shift is None:
        return None
    target = os.path.join(index_dir, f"{sample}.bam.csi")
    stamp, source = target + ".source", f"{fingerprint} min_shift={shift}\n"
    if os.path.exists(target) and os.path.exists(stamp) and Path(stamp).read_text() == source:
        logger.info("BAM %s: using its fine index %s (%d bp windows)", bam, target, 1 << shift)
        return target
    os.makedirs(index_dir, exist_ok=True)
    tmp = f"{target}.tmp{os.getpid()}"
    t0 = time.monotonic()
    try:
        failed = run_samtools("index", "-c", "-m", str(shift), "-o", tmp, bam)
        if failed is None:
            os.replace(tmp, target)
            Path(f"{stamp}.tmp{os.getpid()}").write_text(source)
            os.replace(f"{stamp}.tmp{os.getpid()}", stamp)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if failed is not None:
        logger.warning("warning: BAM %s: building its fine index failed (%s); planning uses its BAI", bam, failed)
        return None
    logger.info("BAM %s has heavy 16 kb index windows: built the fine index %s (%d bp windows) in %.1f s",
                bam, target, 1 << shift, time.monotonic() - t0)
    return target


def stage_sample(
    store: ObjectStore, sample: str, bam: str, bai: str, out: str | Path, index_dir: str | Path | None = None
) -> StagedSample:
    """Check and stage one sample's BAM and index; a missing index of a local BAM is built
    (in ``index_dir``, by default the manifest's folder, when the BAM's folder is not writable),
    and a deep local BAM's fine index (:func:`fine_index`, in ``index_dir``) is staged too."""
    if is_cram(bam):
        manifest = _stage_cram(store, sample, bam, bai, Path(out).parent if index_dir is None else Path(index_dir))
    elif split_url(bam):
        fix_bai = f"index it with `samtools index` and upload the .bai beside {bam}"
        bam_obj = _in_place(store, bam, "BAM", "fix the path in the sample sheet")
        check_remote_bam(store, sample, bam, bam_obj)
        manifest = StagedSample(sample, bam_obj, _in_place(store, bam + ".bai", "index of BAM", fix_bai))
    else:
        if not os.path.exists(bam):
            raise StageError(f"BAM {bam} of sample {sample} not found; fix the path in the sample sheet")
        check_local_bam(sample, bam)
        folder = Path(out).parent if index_dir is None else Path(index_dir)
        bai = local_index(sample, bam, bai, folder)
        bam_key = store.key("inputs", sample, os.path.basename(bam))
        # The local store links the file itself: its content is the file's, whose size
        # and mtime do not tell it from another BAM. An uploaded object keeps its ETag,
        # and is uploaded again when the content changed (even at the same size).
        fingerprint = content_fingerprint(bam, bai)
        csi = fine_index(sample, bam, bai, folder, fingerprint)
        manifest = StagedSample(sample, stage_file(store, bam, bam_key, fingerprint),
                                stage_file(store, bai, bam_key + ".bai"),
                                None if csi is None else stage_file(store, csi, bam_key + ".csi", _file_md5(csi)))
    manifest.write(out, indent=2)
    return manifest


def _stage_cram(store: ObjectStore, sample: str, cram: str, crai: str, index_dir: Path) -> StagedSample:
    """:func:`stage_sample` for a CRAM and its ``.crai`` (a local one gets a ``.crai``
    built when it has none); planning cuts by the ``.crai``'s containers, so there is no fine index."""
    if split_url(cram):
        fix = f"index it with `samtools index` and upload the .crai beside {cram}"
        obj = _in_place(store, cram, "CRAM", "fix the path in the sample sheet")
        check_remote_cram(store, sample, cram, obj)
        return StagedSample(sample, obj, _in_place(store, cram + ".crai", "index of CRAM", fix))
    if not os.path.exists(cram):
        raise StageError(f"CRAM {cram} of sample {sample} not found; fix the path in the sample sheet")
    check_local_bam(sample, cram)
    crai = local_index(sample, cram, crai, index_dir)
    key = store.key("inputs", sample, os.path.basename(cram))
    return StagedSample(sample, stage_file(store, cram, key, content_fingerprint(cram, crai)),
                        stage_file(store, crai, key + ".crai"))


def stage_reference(store: ObjectStore, fasta: str, out: str | Path) -> StagedReference:
    """Stage the reference and its index; the manifest's ``contigs`` list each contig's
    name, length and MD5 (None for a reference already in object storage)."""
    if split_url(fasta):
        fix_fai = f"index it with `samtools faidx` and upload the .fai beside {fasta}"
        obj = _in_place(store, fasta, "reference", "fix 'reference' in the config")
        check_reference_start(store.get_range(obj.key, 0, min(obj.size, REFERENCE_HEAD), obj.bucket), fasta)
        fai = _in_place(store, fasta + ".fai", "index of reference", fix_fai)
        # The MD5s would take reading the whole reference out of the store: for a
        # reference used in place, only contig names and lengths (its .fai) are compared
        # with the BAM headers.
        manifest = StagedReference(obj, fai, contigs_from_fai(store, fai))
    else:
        if not os.path.exists(fasta):
            raise StageError(f"reference {fasta} not found; fix 'reference' in the config")
        with open(fasta, "rb") as fh:
            check_reference_start(fh.read(REFERENCE_HEAD), fasta)
        if os.path.exists(fasta + ".fai"):
            check_index_age(fasta + ".fai", fasta, "reference", f"samtools faidx {fasta}")
        else:
            logger.info("indexing %s", fasta)
            failed = run_samtools("faidx", fasta)
            if failed is not None:
                raise InputError(f"reference {fasta} cannot be indexed ({failed}): check that it is a FASTA "
                                 "file (plain text, not compressed), then fix 'reference' in the config")
        t0 = time.monotonic()
        try:
            contigs = fasta_contigs(fasta)
        except (OSError, ValueError) as exc:
            raise InputError(f"reference {fasta} cannot be read through its index ({exc}): rebuild the index "
                             f"with `samtools faidx {fasta}`") from exc
        logger.info("MD5 of %d reference contigs computed in %.1f s", len(contigs), time.monotonic() - t0)
        key = store.key("reference", os.path.basename(fasta))
        manifest = StagedReference(stage_file(store, fasta, key), stage_file(store, fasta + ".fai", key + ".fai"),
                                   tuple(contigs))
    manifest.write(out, indent=2)
    return manifest


def contigs_from_fai(store: ObjectStore, fai: StoredFile) -> tuple[Contig, ...]:
    """Name and length (no MD5) of each contig of a staged reference, from its .fai in the store."""
    from functions.core.fai import parse_fai

    entries = parse_fai(store.get(fai.key, fai.bucket).decode())
    return tuple(Contig(e.name, e.length) for e in entries.values())
