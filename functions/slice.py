"""Give htslib a valid local view of a region from a few ranged GETs.

Contract:

* :func:`fetch_bam_slice` fetches the BAM header range and a region's byte ranges
  (both from the plan, both bounded) and writes them at their true offsets into a
  sparse local file of the BAM's size, ended by the BGZF EOF block, beside a pruned
  index (:func:`functions.core.bai.write_bai`) that lists only the region's chunks.
  htslib reads that file like the real BAM for any query inside the region. The
  chunks are virtual offsets of the BAM whichever index the plan was cut from (its
  BAI, or the finer CSI staging builds for deep BAMs): the local index is always a
  BAI.
* :func:`fetch_reference_window` fetches the bases [start, end) of one contig
  through its ``.fai`` entry in one ranged GET and writes a local BGZF-compressed
  FASTA (+ ``.fai``, ``.gzi``) in which the contig keeps its name and coordinates:
  positions before ``start`` are ``N`` (compressed to about 1/600 of their number of
  bytes, without compression work) and the contig ends at ``end``. Callers choose a window that covers every read
  they pile up, so no read ever sees an ``N`` that the real reference does not have.
* :func:`fetch_cram_slice` does the same for a CRAM: it fetches the header and the
  region's whole containers into a compact local CRAM, the reference over the
  containers' spans on the region's contig (which decoding needs, and whose MD5 it
  checks), and decodes the reads overlapping the context into a local BAM, so that
  every engine reads a BAM whatever the input.
* :func:`shift_slice` moves a region's reads (and, with ``shifted``, the reference
  window) to the start of their contig, for engines whose cost grows with the
  position on the contig (bcftools loads every contig from its first base).

Nothing here downloads a whole BAM, reference or index.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import mmap
import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import pysam

from functions.capture import stderr_into
from functions.core.bai import Chunk, write_bai
from functions.core.bgzf import (
    BGZF_HEADER,
    EOF_BLOCK,
    MAX_BLOCK_DATA,
    block_size,
    deflate_block,
    deflate_blocks,
    inflate_block,
)
from functions.core.crai import CraiEntry, parse_crai
from functions.core.cram import EOF_CONTAINER, slice_header
from functions.core.errors import SvcError
from functions.core.fai import FaiEntry
from functions.core.storage import ObjectStore
from functions.core.tasks import BamSlice, ObjectRef, Span, region_name


def fetch_bam_slice(store: ObjectStore, bam: BamSlice, path: str, stop: int | None = None) -> str:
    """Write the local view of a region's slice at ``path`` (+ ``.bai``); returns path.

    A range ``(start, end, tail)`` is fetched as bytes [start, end) and, with
    ``tail``, the BGZF block at ``end``: the first GET reaches 18 bytes into that
    block (its header, which holds its size) and a second GET fetches the rest. The
    bytes go to disk as they arrive, in GETs of at most 64 MB
    (:meth:`~functions.core.storage.ObjectStore.get_range_into`): a function's memory
    does not grow with its slice.

    With ``bam.scan`` and ``stop`` (the end of the region's context), the bytes from
    the scan's block on are fetched as the reads need them (:func:`_scan_to`): up to
    the first record that starts at or past ``stop``, and the local index's chunks
    end there. The last range's GET reaches on into the scan's first guess.
    """
    bam_key, bucket, bam_size = bam.obj.key, bam.obj.bucket, bam.size
    chunks = list(bam.chunks)
    with open(path, "w+b") as out:
        out.truncate(bam_size)
        ranges = [(*bam.header, False), *bam.ranges]
        scan = bam.scan if stop is not None else None
        lead = None
        if scan is not None and ranges[-1][1] == scan[0] >> 16 and not ranges[-1][2]:
            lead = ranges.pop()[0]  # its GET reaches on into the scan's first guess
        for start, end, tail in ranges:
            out.seek(start)
            if not tail:
                store.get_range_into(bam_key, start, end, out, bucket)
                continue
            store.get_range_into(bam_key, start, end + BGZF_HEADER, out, bucket)
            out.seek(end)
            block_end = end + block_size(out.read(BGZF_HEADER))
            store.get_range_into(bam_key, end + BGZF_HEADER, block_end, out, bucket)
        if scan is not None and stop is not None:
            limit = max(e for _, e in chunks)
            until = _scan_to(store, bam, out, scan, lead, bam.tid, stop, limit)
            chunks = [(b, min(e, until)) for b, e in chunks if b < until]
        if bam_size >= len(EOF_BLOCK):
            out.seek(bam_size - len(EOF_BLOCK))
            out.write(EOF_BLOCK)
    with open(path + ".bai", "wb") as out:
        out.write(write_bai(bam.n_ref, bam.tid, [Chunk(b, e) for b, e in chunks]))
    return path


def _scan_to(store: ObjectStore, bam: BamSlice, out: BinaryIO, scan: tuple[int, int], lead: int | None,
             tid: int, stop: int, limit: int) -> int:
    """Fetch the BAM from the scan's virtual offset on, into ``out`` at the true offsets,
    as far as the records need; returns the virtual offset of the first record there
    that lies on another contig or starts at or past ``stop`` (``limit``, the chunks'
    end, at the latest; the bytes of the block holding it are fetched).

    The first GET asks for the scan's guess of bytes past its block (from ``lead``,
    the start of a range ending there, when given: one GET for both). When that falls
    short, each next GET asks for the bytes the positions still to go would take at
    the bytes per base read so far, and the header of the block there (twice the last
    GET while no two positions are known); or, when the block being read has its header
    here and should hold the stop, for that block's bytes alone. So the last GET ends
    on the end of the block holding the first record not needed, most often: on the
    harness's 5 Mb genome at 200 regions, 1.10 times the BAM in 788 GETs, against 1.14
    times in 779 asking a quarter more and :data:`~functions.core.tasks.SCAN_SLACK`
    each time. Only the blocks holding the records' first 12 bytes (size,
    contig, position) are inflated, one after another.
    """
    voffset, guess = scan
    block = voffset >> 16
    fetched = lead if lead is not None else block
    # Never past the block holding the chunks' end (the 18 bytes of its header first).
    cap = (limit >> 16) + (BGZF_HEADER if limit & 0xFFFF else 0)
    want = max(guess, BGZF_HEADER)
    starts: list[tuple[int, int]] = []  # (block offset, its first byte's place in data)
    data = bytearray()  # the inflated blocks from starts[0] on
    base = 0  # the place in all inflated bytes of data[0]
    at = voffset & 0xFFFF  # the next record's place in all inflated bytes
    first = last = -1  # the first and the last position read

    def voffset_of(place: int) -> int:
        i = bisect.bisect_right([p for _, p in starts], place) - 1
        return (starts[i][0] << 16) | (place - starts[i][1])

    while True:
        while at + 12 <= base + len(data):
            size, ref, pos = struct.unpack_from("<iii", data, at - base)
            here = voffset_of(at)
            if here >= limit or ref != tid or pos >= stop:
                return min(here, limit)
            first, last = (pos if first < 0 else first), pos
            at += 4 + size
        if block << 16 >= limit:
            return limit
        # inflate the next block, fetching more bytes first when it is not all here
        out.seek(block)
        head = out.read(BGZF_HEADER) if block + BGZF_HEADER <= fetched else b""
        need = block + (block_size(head) if head else BGZF_HEADER)
        if need > fetched:
            if fetched >= bam.size:
                return limit  # the file ended first: nothing to cut
            ask = want
            if last > first:  # the bytes per base so far, for the positions still to go
                read = at - (voffset & 0xFFFF)  # inflated bytes of the records read so far
                per_base = read * (block - (voffset >> 16)) / (base + len(data)) / (last - first)
                inflated_per_base = read / (last - first)
                # To about the first record past the stop, with the header of its block
                # (whose end the next GET then asks for exactly): an extra GET in
                # some regions saves fetching half a block past the stop in most.
                ask = int(per_base * (stop - last)) + BGZF_HEADER
                # This block's size is known (its header is here) and, at the inflated
                # bytes per base so far, four fifths of a full block reach the stop:
                # fetch that block alone.
                if head and last + 0.8 * (base + len(data) - at + MAX_BLOCK_DATA) / inflated_per_base >= stop:
                    ask = 0
            end = min(bam.size, max(need, min(cap, max(fetched, block) + ask)))
            out.seek(fetched)
            store.get_range_into(bam.obj.key, fetched, end, out, bam.obj.bucket)
            fetched, want = end, 2 * want
            continue
        out.seek(block)
        raw = out.read(need - block)
        inflated = inflate_block(raw, 0, len(raw))
        if not inflated:
            return limit  # the EOF block
        while len(starts) > 1 and starts[1][1] <= at:  # drop blocks the records are past
            drop = starts[1][1] - base
            del data[:drop], starts[0]
            base += drop
        starts.append((block, base + len(data)))
        data += inflated
        block = need


class CramSliceError(SvcError, ValueError):
    """A CRAM slice cannot be decoded; the message names the problem and the fix."""


@dataclass(frozen=True)
class CramSlice:
    """A CRAM slice decoded by :func:`fetch_cram_slice`: the local BAM, the reference
    window it was decoded with (``window``: its bases [start, end), ``N`` before) and
    the GETs and bytes that window took."""

    bam: str
    reference: str
    window: tuple[int, int]
    gets: int
    get_bytes: int


def fetch_cram_slice(store: ObjectStore, cram: BamSlice, reference: ObjectRef, entry: FaiEntry, context: Span,
                     stem: str, margin: int) -> CramSlice:
    """Write ``<stem>.bam`` (+ ``.bai``): the reads of a CRAM overlapping ``context``,
    as htslib's region query returns them.

    The header range and the containers (the slice's byte ranges: whole containers)
    go one after another into ``<stem>.cram``, ended by the CRAM EOF container, and
    ``samtools index`` lists them there. The reference goes to ``<stem>.ref.fa``
    (:func:`fetch_reference_window`): the bases the containers' slices span on the
    region's contig (each slice's MD5 is checked over its span: :func:`_check_md5s`)
    and the context, ``margin`` more on each side, the rest ``N``; the caller may give
    it to its engine when it covers what the engine needs. ``REF_PATH`` is pointed at
    nothing, so htslib never looks a reference up by MD5 elsewhere (its default is a
    server on the internet).
    """
    os.environ["REF_PATH"] = os.path.join(os.path.dirname(stem), "no-reference-lookup", "%s")
    local, bam = stem + ".cram", stem + ".bam"
    key, bucket = cram.obj.key, cram.obj.bucket
    with open(local, "wb") as out:
        for start, end, _ in [(*cram.header, False), *cram.ranges]:
            store.get_range_into(key, start, end, out, bucket)
        out.write(EOF_CONTAINER)
    pysam.index(local)
    with open(local + ".crai", "rb") as fh:
        entries = [e for e in parse_crai(fh.read()) if e.tid == cram.tid]
    spans = [(e.start, e.end) for e in entries]
    lo = max(0, min([context.start, *(a for a, _ in spans)]) - margin)
    hi = min(entry.length, max([context.end, *(b for _, b in spans)]) + margin)
    gets, got = store.counts.gets, store.counts.get_bytes
    ref = fetch_reference_window(store, reference.key, entry, lo, hi, stem + ".ref.fa", reference.bucket)
    fetched = (store.counts.gets - gets, store.counts.get_bytes - got)
    _check_md5s(local, entries, ref, entry, key, reference.key)
    with tempfile.TemporaryFile() as err:
        try:
            with stderr_into(err), pysam.AlignmentFile(local, "rc", reference_filename=ref) as src, \
                    pysam.AlignmentFile(bam, "wb0", template=src) as dst:
                for read in src.fetch(contig=context.chrom, start=context.start, stop=context.end):
                    dst.write(read)
        except (OSError, ValueError) as exc:
            err.seek(0)
            said = err.read().decode(errors="replace")
            raise CramSliceError(f"CRAM {key} cannot be decoded over {context.name} ({exc}: "
                                 f"{said.strip().splitlines()[-1] if said.strip() else 'htslib said nothing'})"
                                 ) from exc
    pysam.index(bam)
    return CramSlice(bam, ref, (lo, hi), *fetched)


def _check_md5s(cram: str, entries: list[CraiEntry], fasta: str, entry: FaiEntry, key: str, ref_key: str) -> None:
    """Each slice of ``entries`` (a local CRAM's, on ``entry``'s contig) that gives the
    MD5 of its reference bases has it from ``fasta`` too, else a :class:`CramSliceError`.

    htslib checks those MD5s only when it decodes a whole file, not a region, and
    would silently decode a region's reads against other bases. (A slice holding
    several contigs' reads gives no MD5: there, only the header's ``@SQ M5``, checked
    at planning, tells the reference.)
    """
    with open(cram, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data, \
            pysam.FastaFile(fasta) as ref:
        for e in entries:
            head = slice_header(data, e.container, e.slice_offset)
            if head.tid < 0 or not any(head.md5):
                continue
            start = head.start - 1
            bases = ref.fetch(entry.name, start, min(entry.length, start + head.span)).upper().encode()
            if hashlib.md5(bases).digest() != head.md5:
                raise CramSliceError(
                    f"CRAM {key} was not written against reference {ref_key}: the MD5 of "
                    f"{region_name(entry.name, start, start + head.span)} is not the one the CRAM holds; give the "
                    "reference the CRAM was written against in the config")


def fetch_reference_window(
    store: ObjectStore, fasta_key: str, entry: FaiEntry, start: int, end: int, path: str,
    bucket: str | None = None, shifted: bool = False, gaps: Sequence[tuple[int, int]] = (),
) -> str:
    """Write a local FASTA (+ ``.fai``, ``.gzi``) holding ``entry``'s bases [start, end).

    The FASTA is BGZF-compressed: the ``N`` before ``start`` are copies of one
    precompressed block (106 bytes per 65,280 bases), so a window at 250 Mb costs
    about 400 kB of disk and no compression work, not 250 MB. Readers of the file
    (htslib's faidx, through bcftools and pysam) find the window at its true
    coordinates through the ``.gzi``. ``shifted``: the contig holds the window alone,
    base ``start`` at position 0 (for reads moved by :func:`shift_slice`). ``gaps``:
    spans inside the window, sorted and apart, whose bases are neither fetched nor
    written but ``N`` like those before it (stretches without reads): each piece
    between them is one ranged GET.
    """
    start, end = max(0, start), min(entry.length, end)
    pieces, at = [], start
    for g_start, g_end in gaps:
        if not at < g_start < g_end < end:
            raise ValueError(f"gap [{g_start}, {g_end}) is not inside [{at}, {end}) of {entry.name}")
        pieces.append((at, g_start))
        at = g_end
    pieces.append((at, end))
    head = f">{entry.name}\n".encode()
    starts: list[tuple[int, int]] = []  # (compressed, uncompressed) offset of each block
    with open(path, "wb") as out:
        c = u = 0

        def put(block: bytes, n: int) -> None:
            nonlocal c, u
            starts.append((c, u))
            out.write(block)
            c, u = c + len(block), u + n

        def put_n(n: int) -> None:
            full, rest = divmod(n, MAX_BLOCK_DATA)
            for _ in range(full):
                put(_n_block(), MAX_BLOCK_DATA)
            if rest:
                put(deflate_block(b"N" * rest), rest)

        def put_bases(data: bytes) -> None:
            for block, n in deflate_blocks(data):
                put(block, n)

        put(deflate_block(head), len(head))
        # One line for the whole contig: the .fai stays exact whatever the window.
        put_n(0 if shifted else start)
        for i, (p_start, p_end) in enumerate(pieces):
            if i:
                put_n(p_start - pieces[i - 1][1])
            raw = store.get_range(fasta_key, entry.byte_offset(p_start), entry.byte_offset(p_end - 1) + 1, bucket)
            seq = raw.replace(b"\n", b"").replace(b"\r", b"")
            if len(seq) != p_end - p_start:
                raise ValueError(
                    f"reference {fasta_key}: expected {p_end - p_start} bases of {entry.name} at "
                    f"{p_start}, got {len(seq)}; the .fai does not match the FASTA"
                )
            put_bases(seq)
        put_bases(b"\n")
        out.write(EOF_BLOCK)
    with open(path + ".gzi", "wb") as out:  # htslib's BGZF index: every block but the first
        out.write(struct.pack("<Q", len(starts) - 1))
        out.write(b"".join(struct.pack("<QQ", co, uo) for co, uo in starts[1:]))
    length = end - start if shifted else end
    with open(path + ".fai", "w") as fai:
        fai.write(f"{entry.name}\t{length}\t{len(head)}\t{length}\t{length + 1}\n")
    return path


def shift_slice(bam_path: str, span: Span, offset: int, out_path: str) -> str:
    """Write the reads of ``bam_path`` overlapping ``span``, moved ``offset`` bases left on
    their contig, as a BAM (+ ``.bai``) with the same header (the contig keeps its length,
    which the VCF header repeats).

    For engines that load every contig they pile up from its first base (bcftools
    mpileup keeps ``[0, end)`` of it in memory): with the reads and the reference window
    (:func:`fetch_reference_window`, ``shifted``) moved to the contig's start, a region
    at 250 Mb costs what one at its start costs. The pileup is the same: every read
    keeps its order and its distance to every other read and base. Mates on the
    contig move too; one before ``offset`` (never in the slice: the caller's offset
    lies left of every read) is placed at 0, which keeps it before its read, as the
    overlap detection of htslib's pileup needs. The caller moves the records back
    (:func:`functions.call_region.keep_owned`).
    """
    with pysam.AlignmentFile(bam_path, "rb") as src:
        tid = src.get_tid(span.chrom)
        with pysam.AlignmentFile(out_path, "wb0", template=src) as out:  # uncompressed: read once, locally
            for read in src.fetch(contig=span.chrom, start=span.start, stop=span.end):
                if read.reference_start < offset:
                    raise ValueError(f"read {read.query_name} at {read.reference_start} starts before {offset}")
                read.reference_start -= offset
                if read.next_reference_id == tid and read.next_reference_start >= 0:
                    read.next_reference_start = max(0, read.next_reference_start - offset)
                out.write(read)
    pysam.index(out_path)
    return out_path


@functools.cache
def _n_block() -> bytes:
    return deflate_block(b"N" * MAX_BLOCK_DATA)
