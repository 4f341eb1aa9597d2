"""Vectorised pileup evidence from a BAM: per-position, per-strand allele counts.

Contract: :func:`collect_evidence` reads the records of one contig window of an
indexed BAM (a whole BAM or a function's local slice) and returns
:class:`Evidence` for the positions [lo, hi):

* ``counts[x, s, b]`` — bases A, C, G, T (b = 0..3) seen at position ``lo + x`` on
  strand ``s`` (0 forward, 1 reverse) with base quality >= ``min_baseq``, at least
  ``end_skip`` reference bases from either end of the read's alignment (where an
  aligner turns an indel it cannot place into mismatches);
* ``errors[x, s]`` — the sum of those bases' error probabilities (10^(-Q/10)),
  which is what the error model needs (:mod:`functions.lowfreq`);
* ``starts[x, s]`` / ``ends[x, s]`` — reads whose aligned span starts at
  ``lo + x`` / ends (exclusive) at ``lo + x``, clamped to the window, from which the
  number of reads spanning any short window follows by two prefix sums;
* ``indels`` — every insertion and deletion seen in a read, as raw events (anchor,
  length, inserted bases and which of them are of low quality, strand, and the
  read's aligned span).

Reads counted: mapped, primary or supplementary (not secondary, QC-failed or
duplicate), mapping quality >= ``min_mapq``, at least ``min_aligned`` reference
bases in the part of the read that counts (:func:`counted_span`: without primer
bases, and, with ``mates_once``, without the stretch its mate covers too, so that
depth is in fragments where mates overlap), overlapping [lo, hi). Spans, bases and
indel events are those of that part. Each read is counted once, whatever window it lies in,
so the evidence at a position is the same for any window that contains it: that is
what makes a region's calls equal a whole-genome run's.

How it is fast: the BGZF blocks the BAM index names are inflated with zlib and
the records parsed straight from the bytes in batches of ``batch_reads``: the only
per-record Python step is finding where each record starts (its 4-byte length);
CIGAR expansion, base decoding and counting are numpy operations over a whole
batch. Memory is bounded by the batch and by the window (about 100 bytes per
position), not by depth.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from functions.core.bai import coffset, parse_bai, uoffset
from functions.core.bgzf import BGZF_HEADER, block_at, inflate_block
from functions.core.errors import SvcError
from functions.core.primers import PrimerScheme

# 4-bit BAM base codes (=ACMGRSVTWYHKDBN) -> 0..3 for A, C, G, T, 4 for anything else.
_BASE = np.full(16, 4, dtype=np.int64)
_BASE[[1, 2, 4, 8]] = [0, 1, 2, 3]
_BASE8 = _BASE.astype(np.uint8)
# (packed byte << 1 | which nibble) -> base code: the high nibble is the first base of a byte.
_NIB_BASE = np.empty(512, dtype=np.uint8)
_NIB_BASE[0::2] = _BASE8[np.arange(256) >> 4]
_NIB_BASE[1::2] = _BASE8[np.arange(256) & 0xF]
_ERR = 10.0 ** (-np.arange(256, dtype=np.float64) / 10.0)
_SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x400  # unmapped, secondary, QC fail, duplicate
_REF_OPS = np.zeros(16, dtype=np.int64)
_REF_OPS[[0, 2, 3, 7, 8]] = 1  # M D N = X
_QUERY_OPS = np.zeros(16, dtype=np.int64)
_QUERY_OPS[[0, 1, 4, 7, 8]] = 1  # M I S = X
_ALIGNED_OPS = np.zeros(16, dtype=bool)
_ALIGNED_OPS[[0, 7, 8]] = True
MAX_INSERTION = 30  # inserted bases are packed 2 bits each into one int64, with a length mark
_INT32 = struct.Struct("<i")


class PileupError(SvcError, ValueError):
    """The BAM cannot be read as expected."""


@dataclass
class IndelEvents:
    """Raw indel events, one per read showing one; ``length`` > 0 deletes, < 0 inserts."""

    anchor: np.ndarray  # 0-based reference position of the base before the event
    length: np.ndarray
    inserted: np.ndarray  # packed inserted bases (insertions), 0 for deletions
    lowq: np.ndarray  # bit i set: inserted base i has quality < min_baseq (its identity is in doubt)
    strand: np.ndarray
    read_start: np.ndarray  # span of the read showing it, [start, end), for indel windows
    read_end: np.ndarray
    # The last indel-window start the read counts for: its mate's start - 1 for the left
    # mate of an overlapping pair (see ``Evidence.straddle``), else ``NO_LIMIT``.
    last_start: np.ndarray


NO_LIMIT = 1 << 62


@dataclass
class Straddle:
    """Left mates of overlapping pairs (their counted part ``cut`` stops where the mate
    starts, ``mate``, or ``end_skip`` after it). For SNVs each fragment's bases count once
    that way; an indel window that starts before ``mate`` and ends past ``cut`` would then
    be spanned by neither mate, so such a read counts for it when its own trimmed span
    (``start``, ``end``) covers it: every fragment once, whatever the window."""

    start: np.ndarray
    cut: np.ndarray  # sorted
    end: np.ndarray
    mate: np.ndarray
    strand: np.ndarray


@dataclass
class Evidence:
    chrom: str
    lo: int
    hi: int
    counts: np.ndarray  # (L, 2, 4) int64
    errors: np.ndarray  # (L, 2) float64
    starts: np.ndarray  # (L + 1, 2) int64
    ends: np.ndarray  # (L + 1, 2) int64
    indels: IndelEvents
    straddle: Straddle
    reads: int
    # Reads by the position of their alignment start (reads starting in [lo, hi) only):
    primer_trimmed: np.ndarray  # (L,) bases of a primer left out of their evidence
    primer_dropped: np.ndarray  # (L,) too short after that to count at all

    def spanning(self, first: np.ndarray, last: np.ndarray, max_window: int) -> np.ndarray:
        """Reads per strand whose aligned span covers [first, last] (0-based, inclusive).

        Valid for windows shorter than ``max_window`` (no counted read fits inside
        one): then #(start <= first) - #(end <= last) is exactly the reads covering it.
        """
        if np.any(last - first + 1 >= max_window):
            raise ValueError("window longer than the shortest counted read")
        s = np.cumsum(self.starts, axis=0)
        e = np.cumsum(self.ends, axis=0)
        return s[first - self.lo] - e[last - self.lo]

    def indel_depth(self, first: np.ndarray, last: np.ndarray, max_window: int) -> np.ndarray:
        """Fragments per strand that count for indel windows [first, last]: the reads
        spanning them (:meth:`spanning`) and the left mates that span them past the
        point where their counted part stops (:class:`Straddle`)."""
        out = self.spanning(first, last, max_window)
        st = self.straddle
        if not len(st.cut):
            return out
        a = np.searchsorted(st.cut, first, side="right")  # cut > first
        b = np.searchsorted(st.cut, last, side="right")  # cut <= last
        for i in np.flatnonzero(b > a).tolist():
            j = slice(int(a[i]), int(b[i]))
            f, la = int(first[i]), int(last[i])
            ok = (st.start[j] <= f) & (st.mate[j] > f) & (st.end[j] > la)
            out[i] += np.bincount(st.strand[j][ok], minlength=2)
        return out


def pack_bases(codes: np.ndarray) -> int:
    """Pack base codes 0..3 (at most MAX_INSERTION) into one int, 2 bits each, with a length mark."""
    v = 1
    for c in codes[::-1]:
        v = (v << 2) | int(c)
    return v


def unpack_bases(v: int) -> str:
    out = []
    while v > 1:
        out.append("ACGT"[v & 3])
        v >>= 2
    return "".join(out)


def _u(buf: np.ndarray, off: np.ndarray, n: int) -> np.ndarray:
    """Little-endian unsigned integers of ``n`` bytes at byte offsets ``off``."""
    v = buf[off].astype(np.int64)
    for i in range(1, n):
        v |= buf[off + i].astype(np.int64) << (8 * i)
    return v


def _i32(buf: np.ndarray, off: np.ndarray) -> np.ndarray:
    v = _u(buf, off, 4)
    return np.where(v >= 1 << 31, v - (1 << 32), v)


def _segment_arange(lengths: np.ndarray) -> np.ndarray:
    """0..n-1 for every n in ``lengths``, concatenated."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    firsts = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(firsts, lengths)


def _raw_chunks(path: str, chunks: list[tuple[int, int]], block_bytes: int):  # type: ignore[no-untyped-def]
    """Yield the inflated bytes of each index chunk [beg, end) (virtual offsets), piece by piece."""
    with open(path, "rb") as fh:
        for beg, end in chunks:
            pos, skip = coffset(beg), uoffset(beg)
            end_c, end_u = coffset(end), uoffset(end)
            # The last block to open: the block at the chunk's end holds part of it only
            # from a non-zero offset on.
            last_block = end_c if end_u > 0 else end_c - 1
            while pos <= last_block:
                fh.seek(pos)
                raw = fh.read(block_bytes + (1 << 16))
                out = []
                at = 0
                while at + BGZF_HEADER <= len(raw) and pos + at <= last_block:
                    size = block_at(raw, at)
                    if size is None:
                        if at == 0:
                            raise PileupError(f"{path}: truncated BGZF block at byte {pos}")
                        break
                    data = inflate_block(raw, at, size)
                    last = pos + at == end_c
                    out.append(data[skip : end_u if last else None])
                    skip = 0
                    at += size
                    if at >= block_bytes:
                        break
                if not out:
                    break
                pos += at
                yield b"".join(out)


def _record_batches(path: str, chunks: list[tuple[int, int]], batch_reads: int):  # type: ignore[no-untyped-def]
    """Yield (buffer, record offsets) holding whole BAM records, ``batch_reads`` at a time."""
    pending = b""
    for piece in _raw_chunks(path, chunks, 1 << 22):
        data = pending + piece if pending else piece
        offs: list[int] = []
        at, n = 0, len(data)
        unpack = _INT32.unpack_from
        while at + 4 <= n:
            size = unpack(data, at)[0]
            if size < 32:
                raise PileupError(f"{path}: a BAM record of {size} bytes; the file is damaged")
            if at + 4 + size > n:
                break
            offs.append(at)
            at += 4 + size
            if len(offs) >= batch_reads:
                yield np.frombuffer(data, dtype=np.uint8), np.array(offs, dtype=np.int64)
                offs = []
        if offs:
            yield np.frombuffer(data, dtype=np.uint8), np.array(offs, dtype=np.int64)
        pending = data[at:]
    if pending:
        raise PileupError(f"{path}: the last BAM record is cut short; the file is truncated")


class _Accumulator:
    def __init__(self, chrom: str, lo: int, hi: int):
        n = hi - lo
        self.chrom, self.lo, self.hi = chrom, lo, hi
        self.counts = np.zeros((n, 2, 4), dtype=np.int64)
        self.errors = np.zeros((n, 2), dtype=np.float64)
        self.starts = np.zeros((n + 1, 2), dtype=np.int64)
        self.ends = np.zeros((n + 1, 2), dtype=np.int64)
        self.indel_parts: list[tuple[np.ndarray, ...]] = []
        self.straddle_parts: list[tuple[np.ndarray, ...]] = []
        self.reads = 0
        self.primer_trimmed = np.zeros(n, dtype=np.int64)
        self.primer_dropped = np.zeros(n, dtype=np.int64)

    def evidence(self) -> Evidence:
        cols = _columns(self.indel_parts, 8)
        st = _columns(self.straddle_parts, 5)
        order = np.argsort(st[1], kind="stable")
        return Evidence(self.chrom, self.lo, self.hi, self.counts, self.errors, self.starts, self.ends,
                        IndelEvents(*cols), Straddle(*(c[order] for c in st)), self.reads, self.primer_trimmed,
                        self.primer_dropped)


def _columns(parts: list[tuple[np.ndarray, ...]], n: int) -> list[np.ndarray]:
    """``n`` int64 columns, each the concatenation of that column of every part."""
    cols = list(zip(*parts, strict=True)) if parts else [[]] * n
    return [np.concatenate(c).astype(np.int64) if len(c) else np.zeros(0, dtype=np.int64) for c in cols]


def counted_span(pos: np.ndarray, end: np.ndarray, flag: np.ndarray, mate_tid: np.ndarray, mate_pos: np.ndarray,
                 tid: int, chrom: str, end_skip: int, mates_once: bool,
                 primers: PrimerScheme | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The part [lo, hi) of each read's alignment [pos, end) whose evidence counts.

    * ``primers``: the bases of the primer a read starts in (its 5' end) do not count
      (:meth:`PrimerScheme.trim_bounds`, as ``ivar trim``);
    * ``mates_once``: where the two mates of a properly paired fragment overlap, only
      the right mate counts: the left one (the one starting first; read 1 when both
      start together) stops at its mate's start plus ``end_skip`` (the right mate does
      not count its first ``end_skip`` bases, so no position is lost between them).
      It needs only the read's own record (its mate's position), so every read is
      treated the same in any window.

    Returns (lo, hi) and, before the mates' overlap is taken off, the primer-trimmed span.
    """
    lo, hi = pos, end
    if primers is not None and primers.primers:
        lo, hi = primers.trim_bounds(chrom, pos, end, ((flag >> 4) & 1).astype(bool))
    t_lo, t_hi = lo, hi
    if mates_once:
        left = ((flag & 0x1) != 0) & ((flag & 0x2) != 0) & ((flag & 0x8) == 0) & (mate_tid == tid)
        left &= (mate_pos > pos) | ((mate_pos == pos) & ((flag & 0x40) != 0))
        hi = np.where(left, np.minimum(hi, mate_pos + end_skip), hi)
    return lo, hi, t_lo, t_hi


def _add_batch(acc: _Accumulator, buf: np.ndarray, rec: np.ndarray, tid: int,
               min_mapq: int, min_baseq: int, min_aligned: int, end_skip: int,
               mates_once: bool = False, primers: PrimerScheme | None = None, anchor_bases: int = 0) -> None:
    """Count one batch of records (offsets ``rec`` into ``buf``) into ``acc``."""
    lo, hi = acc.lo, acc.hi
    ref_id = _i32(buf, rec + 4)
    pos = _i32(buf, rec + 8)
    l_name = buf[rec + 12].astype(np.int64)
    mapq = buf[rec + 13].astype(np.int64)
    n_cig = _u(buf, rec + 16, 2)
    flag = _u(buf, rec + 18, 2)
    l_seq = _i32(buf, rec + 20)
    keep = (ref_id == tid) & ((flag & _SKIP_FLAGS) == 0) & (mapq >= min_mapq) & (n_cig > 0) & (l_seq > 0)
    keep &= pos < hi
    if not keep.any():
        return
    rec, pos, l_name, n_cig, flag, l_seq = rec[keep], pos[keep], l_name[keep], n_cig[keep], flag[keep], l_seq[keep]
    mate_tid, mate_pos = _i32(buf, rec + 24), _i32(buf, rec + 28)
    cig_off = rec + 36 + l_name
    seq_off = cig_off + 4 * n_cig
    qual_off = seq_off + (l_seq + 1) // 2

    # CIGAR operations of all reads, flat; per op: its read, where it starts on the reference and the read.
    op_read = np.repeat(np.arange(len(rec)), n_cig)
    v = _u(buf, np.repeat(cig_off, n_cig) + 4 * _segment_arange(n_cig), 4)
    op, length = v & 0xF, v >> 4
    ref_len, q_len = length * _REF_OPS[op], length * _QUERY_OPS[op]
    first_op = np.cumsum(n_cig) - n_cig
    ref_cum, q_cum = np.cumsum(ref_len) - ref_len, np.cumsum(q_len) - q_len
    op_ref = ref_cum - ref_cum[first_op][op_read]
    op_q = q_cum - q_cum[first_op][op_read]
    span = np.add.reduceat(ref_len, first_op)
    end = pos + span
    c_lo, c_hi, t_lo, t_hi = counted_span(pos, end, flag, mate_tid, mate_pos, tid, acc.chrom, end_skip,
                                          mates_once, primers)
    good = (c_hi - c_lo >= min_aligned) & (c_hi > lo) & (c_lo < hi)
    if primers is not None and primers.primers:
        here = (pos >= lo) & (pos < hi) & (span >= min_aligned)
        trimmed = here & ((t_lo > pos) | (t_hi < end))
        np.add.at(acc.primer_trimmed, pos[trimmed] - lo, 1)
        dropped = trimmed & (t_hi - t_lo < min_aligned)
        np.add.at(acc.primer_dropped, pos[dropped] - lo, 1)
    if not good.any():
        return
    acc.reads += int(good.sum())
    strand = (flag >> 4) & 1

    # Spans for the indel counts, clamped to the window: the counted span, widened by up
    # to ``anchor_bases`` of the primer bases trimmed off it. Those bases are the primer's,
    # not the sample's, but they anchor the alignment as well as any: an indel just past
    # a primer is placed by the aligner from them (the mates' overlap is not added back:
    # its bases are counted in the other mate).
    x_lo = np.where(c_lo == t_lo, c_lo - np.minimum(anchor_bases, t_lo - pos), c_lo)
    x_hi = np.where(c_hi == t_hi, c_hi + np.minimum(anchor_bases, end - t_hi), c_hi)
    s_pos = np.clip(x_lo[good], lo, hi) - lo
    e_pos = np.clip(x_hi[good], lo, hi) - lo
    np.add.at(acc.starts, (s_pos, strand[good]), 1)
    np.add.at(acc.ends, (e_pos, strand[good]), 1)
    # Left mates cut short by their mate (:class:`Straddle`): their whole trimmed span
    # for the indel windows that start before the mate does.
    cut = good & (c_hi < t_hi)
    full_hi = np.where(cut, t_hi + np.minimum(anchor_bases, end - t_hi), x_hi)
    last_start = np.where(cut, mate_pos - 1, NO_LIMIT)
    if cut.any():
        acc.straddle_parts.append((x_lo[cut], c_hi[cut], full_hi[cut], mate_pos[cut], strand[cut]))

    op_ok = good[op_read]
    # Aligned bases (M, =, X): each op's stretch is first cut to the window and away
    # from the read's ends, then expanded one entry per base (int32: half the traffic).
    al = np.flatnonzero(_ALIGNED_OPS[op] & op_ok)
    r_al = op_read[al]
    ref0 = pos[r_al] + op_ref[al]
    lo_cut = np.maximum(np.maximum(ref0, lo), np.maximum(pos[r_al] + end_skip, c_lo[r_al]))
    hi_cut = np.minimum(np.minimum(ref0 + length[al], hi), np.minimum(end[r_al] - end_skip, c_hi[r_al]))
    n_al = np.maximum(hi_cut - lo_cut, 0)
    q0 = op_q[al] + (lo_cut - ref0)
    k = _segment_arange(n_al).astype(np.int32)
    x = np.repeat((lo_cut - lo).astype(np.int32), n_al) + k
    # int32 offsets (a batch's buffer is a few MB): half the traffic of int64
    qual = buf[np.repeat((qual_off[r_al] + q0).astype(np.int32), n_al) + k]
    nib = np.repeat((2 * seq_off[r_al] + q0).astype(np.int32), n_al) + k
    base = _NIB_BASE[(buf[nib >> 1].astype(np.int32) << 1) | (nib & 1)]
    s = np.repeat(strand[r_al].astype(np.int32), n_al)
    use = (qual >= min_baseq) & (base < 4) & (qual != 0xFF)
    if len(x):
        # Bases not used go to one extra cell past the window's (dropped), which is
        # cheaper than taking the used ones out of four arrays.
        first = int(x.min())
        width = int(x.max()) - first + 1
        pair = (x - first) * 2 + s
        cell = np.where(use, pair * 4 + base, width * 8)
        acc.counts[first : first + width] += np.bincount(cell, minlength=width * 8 + 1)[:-1].reshape(width, 2, 4)
        acc.errors[first : first + width] += np.bincount(pair, weights=np.where(use, _ERR[qual], 0.0),
                                                         minlength=width * 2).reshape(width, 2)

    # Insertions and deletions with an aligned base before them.
    ev = np.flatnonzero(((op == 1) | (op == 2)) & op_ok & (op_ref > 0))
    if len(ev):
        r = op_read[ev]
        anchor = pos[r] + op_ref[ev] - 1
        is_ins = op[ev] == 1
        ev_len = np.where(is_ins, -length[ev], length[ev])
        inserted = np.zeros(len(ev), dtype=np.int64)
        lowq = np.zeros(len(ev), dtype=np.int64)
        ins = np.flatnonzero(is_ins)
        if len(ins):
            n_ins = length[ev[ins]]
            kk = _segment_arange(n_ins)
            qi = np.repeat(op_q[ev[ins]], n_ins) + kk
            rr = np.repeat(r[ins], n_ins)
            pk = buf[seq_off[rr] + (qi >> 1)].astype(np.int64)
            codes = _BASE[np.where(qi & 1, pk & 0xF, pk >> 4)]
            # Pack: sum of code << 2k, plus a length mark; too long insertions are dropped.
            # An N or a base of low quality is marked in lowq (and packed as A).
            weak = (codes == 4) | (buf[qual_off[rr] + qi] < min_baseq)
            firsts = np.cumsum(n_ins) - n_ins
            shift = np.minimum(kk, MAX_INSERTION)
            word = np.add.reduceat(np.left_shift(np.where(weak, 0, codes), 2 * shift), firsts)
            ok = n_ins <= MAX_INSERTION
            inserted[ins] = np.where(ok, word | np.left_shift(1, 2 * np.minimum(n_ins, MAX_INSERTION)), 0)
            lowq[ins] = np.add.reduceat(np.left_shift(weak.astype(np.int64), shift), firsts)
        valid = inserted > 0
        valid[~is_ins] = True
        # Only events inside the counted span (a cut left mate's whole trimmed span), with
        # a counted base after them.
        valid &= (anchor >= c_lo[r]) & (anchor + np.maximum(ev_len, 0) + 1 < np.where(cut, t_hi, c_hi)[r])
        if valid.any():
            acc.indel_parts.append((anchor[valid], ev_len[valid], inserted[valid], lowq[valid], strand[r][valid],
                                    x_lo[r][valid], full_hi[r][valid], last_start[r][valid]))


def collect_evidence(
    bam_path: str,
    chrom: str,
    lo: int,
    hi: int,
    min_mapq: int,
    min_baseq: int,
    min_aligned: int,
    end_skip: int = 0,
    batch_reads: int = 8192,
    mates_once: bool = False,
    primers: PrimerScheme | None = None,
    anchor_bases: int = 0,
) -> Evidence:
    """Evidence for positions [lo, hi) of ``chrom`` from every read overlapping them
    (``mates_once``, ``primers``: see :func:`counted_span`; ``anchor_bases``: how many
    trimmed primer bases still anchor an indel, see the indel spans in :func:`_add_batch`)."""
    import pysam

    with pysam.AlignmentFile(bam_path, "rb") as bam:
        tid = bam.get_tid(chrom)
        if tid < 0:
            raise PileupError(f"{bam_path}: contig {chrom!r} is not in the BAM header")
    bai = bam_path + ".bai" if os.path.exists(bam_path + ".bai") else os.path.splitext(bam_path)[0] + ".bai"
    with open(bai, "rb") as fh:
        index = parse_bai(fh.read())
    chunks = [(c.beg, c.end) for c in index.query(tid, lo, hi)]
    acc = _Accumulator(chrom, lo, hi)
    for buf, rec in _record_batches(bam_path, chunks, batch_reads):
        _add_batch(acc, buf, rec, tid, min_mapq, min_baseq, min_aligned, end_skip, mates_once, primers, anchor_bases)
    return acc.evidence()
