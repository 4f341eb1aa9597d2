"""Parse a BAM index (``.bai``) and answer the questions planning needs.

Contract: :func:`parse_bai` turns the bytes of a BAI file into a :class:`BamIndex`
without touching the BAM itself (:func:`functions.core.csi.parse_csi` does the same
for a CSI, at its own, finer, resolution). The index answers

* which compressed byte ranges of the BAM hold every read overlapping a region
  (:meth:`BamIndex.query`) — a superset of what htslib's iterator would read, with
  chunks merged where they touch the same BGZF block;
* how many compressed bytes each window of a contig holds
  (:meth:`BamIndex.window_bytes`; 16 kb windows for a BAI, ``2**min_shift`` bp for a
  CSI), used to balance regions by data;
* where BGZF blocks are known to start (:meth:`BamIndex.block_end_bound`), used to
  bound the one partial block at the end of each byte range.

The BAI format is the one in the SAM specification (section 5.2): a binning index
of 6 levels (bins of 512 Mb down to 16 kb) with chunks of virtual file offsets, and a
linear index of the smallest virtual offset per 16 kb window. A CSI (section 5.3) is
the same binning scheme with a chosen smallest bin (``min_shift``) and number of
levels (``depth``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from functions.core.errors import SvcError

BAI_MAGIC = b"BAI\x01"
MIN_SHIFT = 14  # a BAI's 16 kb windows
DEPTH = 5  # a BAI's levels below the root bin
META_BIN = 37450  # a BAI's pseudo-bin with per-reference offsets and read counts
MAX_BGZF_BLOCK = 65536  # largest BGZF block, header and footer included
FIRST_LEAF_BIN = 4681  # ((1 << 15) - 1) // 7


def level_first(level: int) -> int:
    """Number of the first bin of ``level`` (0: the root bin) of a binning index."""
    return ((1 << (3 * level)) - 1) // 7


def meta_bin(depth: int) -> int:
    """Number of the pseudo-bin of an index of ``depth`` levels below the root (37450 for a BAI)."""
    return level_first(depth + 1) + 1


class IndexFormatError(SvcError, ValueError):
    """The bytes given are not a valid BAI (or CSI) index."""


def coffset(voffset: int) -> int:
    """Compressed (file) offset of a BGZF virtual offset."""
    return voffset >> 16


def uoffset(voffset: int) -> int:
    """Offset inside the uncompressed block of a BGZF virtual offset."""
    return voffset & 0xFFFF


@dataclass(frozen=True)
class Chunk:
    """A run of BAM records from virtual offset ``beg`` up to (not including) ``end``."""

    beg: int
    end: int

    def __repr__(self) -> str:
        return (
            f"Chunk({coffset(self.beg)}:{uoffset(self.beg)}"
            f"-{coffset(self.end)}:{uoffset(self.end)})"
        )


@dataclass
class RefIndex:
    """The index of one reference sequence (contig).

    Chunks of all bins sit in one (n, 2) array, grouped by bin in file order;
    ``bin_ids`` (sorted) with ``bin_lo``/``bin_hi`` give each bin's rows.
    """

    bin_ids: np.ndarray  # int64, sorted
    bin_lo: np.ndarray  # int64, first row of each bin in ``chunks``
    bin_hi: np.ndarray  # int64, one past its last row
    chunks: np.ndarray  # (n, 2) uint64 virtual offsets [beg, end)
    linear: np.ndarray  # uint64, smallest virtual offset per window (0 = none known)
    n_mapped: int = 0
    n_unmapped: int = 0
    beg: int = 0  # virtual offset of the first record of this reference
    end: int = 0  # virtual offset just past its last record
    # Start positions of the bins holding chunks (sorted), and for each the smallest
    # first-record offset of that bin and of every bin starting further right.
    after_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    after_first: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    @property
    def has_reads(self) -> bool:
        return self.n_mapped > 0 or len(self.chunks) > 0

    def bin_chunks(self, b: int) -> np.ndarray:
        i = int(np.searchsorted(self.bin_ids, b))
        if i < len(self.bin_ids) and self.bin_ids[i] == b:
            return self.chunks[self.bin_lo[i] : self.bin_hi[i]]
        return self.chunks[:0]

    def rows_of_bins(self, bins: np.ndarray) -> np.ndarray:
        """Row numbers in ``chunks`` of every chunk of the given bins."""
        i = np.searchsorted(self.bin_ids, bins)
        ok = i < len(self.bin_ids)
        ok[ok] = self.bin_ids[i[ok]] == bins[ok]
        i = i[ok]
        lo, hi = self.bin_lo[i], self.bin_hi[i]
        lens = hi - lo
        offsets = np.cumsum(lens) - lens
        return np.arange(int(lens.sum())) + np.repeat(lo - offsets, lens)


@dataclass
class BamIndex:
    """A parsed BAI or CSI: one :class:`RefIndex` per reference, in header order.

    ``min_shift`` and ``depth`` give the binning (14 and 5 for a BAI: 16 kb windows);
    ``fmt`` says which file it came from ("BAI" or "CSI").
    """

    refs: list[RefIndex]
    n_no_coor: int | None
    known_blocks: np.ndarray  # sorted unique compressed offsets known to start a block
    min_shift: int = MIN_SHIFT
    depth: int = DEPTH
    fmt: str = "BAI"

    @property
    def window(self) -> int:
        """Width in bp of the index's smallest bins and of its linear-index windows."""
        return 1 << self.min_shift

    @property
    def first_record(self) -> int | None:
        """Virtual offset of the first alignment record (the end of the header)."""
        begs = [int(r.chunks[:, 0].min()) for r in self.refs if len(r.chunks)]
        return min(begs) if begs else None

    def block_end_bound(self, coff: int, data_end: int) -> int:
        """A file offset at or past the end of the BGZF block starting at ``coff``.

        The bound is the next block start the index knows of, never more than one
        maximal BGZF block away and never past ``data_end``.
        """
        i = int(np.searchsorted(self.known_blocks, coff, side="right"))
        bound = coff + MAX_BGZF_BLOCK
        if i < len(self.known_blocks):
            bound = min(bound, int(self.known_blocks[i]))
        return min(bound, data_end)

    def query(self, tid: int, beg: int, end: int) -> list[Chunk]:
        """Chunks holding every record of reference ``tid`` that overlaps [beg, end).

        Like htslib's ``hts_itr_query``: chunks of all bins overlapping the region,
        minus what the linear index proves lies before the region and what a bin to
        the right proves lies after it; chunks touching one BGZF block are merged.
        """
        ref = self.refs[tid]
        if beg >= end or not len(ref.chunks):
            return []
        min_off = np.uint64(0)
        if len(ref.linear):
            min_off = ref.linear[min(beg >> self.min_shift, len(ref.linear) - 1)]
        max_off = np.uint64(_max_offset(ref, end))
        bins = reg2bins(beg, end, self.min_shift, self.depth)
        c = ref.chunks[ref.rows_of_bins(np.asarray(bins, dtype=np.int64))]
        if not len(c):
            return []
        cb, ce = np.maximum(c[:, 0], min_off), np.minimum(c[:, 1], max_off)
        keep = ce > cb
        cb, ce = cb[keep], ce[keep]
        if not len(cb):
            return []
        order = np.argsort(cb, kind="stable")
        cb, ce = cb[order], ce[order]
        # Merge: a chunk joins the previous group when it starts in a block the
        # group already reaches.
        reach = np.maximum.accumulate(ce)
        new = np.ones(len(cb), dtype=bool)
        new[1:] = (cb[1:] >> np.uint64(16)) > (reach[:-1] >> np.uint64(16))
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], len(cb)) - 1
        return [Chunk(int(cb[s]), int(reach[e])) for s, e in zip(starts, ends, strict=True)]

    def window_bytes(self, tid: int, length: int) -> np.ndarray:
        """Estimated compressed bytes of reads starting in each window (:attr:`window` bp).

        From the linear index: the growth of the smallest offset from one window to
        the next, the last window closed by the reference's end offset.
        """
        ref = self.refs[tid]
        n_win = max(1, (length + self.window - 1) >> self.min_shift)
        if not ref.has_reads or not len(ref.linear):
            return np.zeros(n_win, dtype=np.float64)
        lin = np.zeros(n_win + 1, dtype=np.int64)
        m = min(len(ref.linear), n_win)
        lin[:m] = (ref.linear[:m] >> np.uint64(16)).astype(np.int64)
        # Empty windows carry the previous offset forward; leading ones the first.
        nz = np.flatnonzero(lin[:m])
        if len(nz):
            lin[: nz[0]] = lin[nz[0]]
            filled = np.maximum.accumulate(lin[:m])
            lin[:m] = filled
        end_off = coffset(ref.end) if ref.end else int(lin[m - 1])
        lin[m:] = max(end_off, int(lin[m - 1]))
        return np.diff(lin).astype(np.float64).clip(min=0)


def reg2bins(beg: int, end: int, min_shift: int = MIN_SHIFT, depth: int = DEPTH) -> list[int]:
    """All bins that may hold records overlapping [beg, end) (SAM spec 5.3), of a BAI
    or, given its ``min_shift`` and ``depth``, of a CSI."""
    end -= 1
    bins: list[int] = []
    for level in range(depth + 1):
        first, shift = level_first(level), min_shift + 3 * (depth - level)
        bins.extend(range(first + (beg >> shift), first + (end >> shift) + 1))
    return bins


def bin_starts(bins: np.ndarray, min_shift: int, depth: int) -> np.ndarray:
    """First position covered by each bin (int64) of a binning index."""
    firsts = np.array([level_first(lv) for lv in range(depth + 2)], dtype=np.int64)
    level = np.searchsorted(firsts, bins, side="right") - 1
    return (bins - firsts[level]) << (min_shift + 3 * (depth - level))


def _max_offset(ref: RefIndex, end: int) -> int:
    """A virtual offset past every record starting before ``end`` (or 2**64-1).

    A record lies in the smallest bin wholly holding it, so every record of a bin
    starting at or after ``end`` begins at or after ``end``: in a sorted BAM, every
    record starting before ``end`` comes before the first record of any such bin.
    """
    i = int(np.searchsorted(ref.after_pos, end, side="left"))
    if i < len(ref.after_pos):
        return int(ref.after_first[i])
    return (1 << 64) - 1


def parse_bai(data: bytes) -> BamIndex:
    """Parse the bytes of a ``.bai`` file."""
    if data[:4] != BAI_MAGIC:
        raise IndexFormatError("not a BAI file (bad magic)")
    try:
        return _parse(data)
    except (struct.error, ValueError) as exc:
        raise IndexFormatError(f"truncated or corrupt BAI: {exc}") from exc


def _parse(data: bytes) -> BamIndex:
    (n_ref,) = struct.unpack_from("<i", data, 4)
    if n_ref < 0:
        raise ValueError(f"negative number of references ({n_ref})")
    raw = np.frombuffer(data, dtype=np.uint8)
    pos = 8
    refs: list[RefIndex] = []
    unpack = struct.unpack_from
    for _ in range(n_ref):
        (n_bin,) = unpack("<i", data, pos)
        pos += 4
        ids, counts, at = [], [], []
        meta = None
        for _ in range(n_bin):
            b, n_chunk = unpack("<Ii", data, pos)
            if b == META_BIN:
                meta = unpack("<QQQQ", data, pos + 8) if n_chunk >= 2 else None
            else:
                ids.append(b)
                counts.append(n_chunk)
                at.append(pos + 8)
            pos += 8 + 16 * n_chunk
        (n_intv,) = unpack("<i", data, pos)
        linear = np.frombuffer(data, dtype="<u8", count=n_intv, offset=pos + 4).astype(np.uint64)
        pos += 4 + 8 * n_intv
        refs.append(build_ref(raw, ids, counts, at, linear, meta, MIN_SHIFT, DEPTH))
    if pos > len(data):
        raise ValueError("index ends early")
    n_no_coor = None
    if pos + 8 <= len(data):
        (n_no_coor,) = unpack("<Q", data, pos)
    return BamIndex(refs=refs, n_no_coor=n_no_coor, known_blocks=known_blocks(refs))


def build_ref(raw: np.ndarray, ids: list[int], counts: list[int], at: list[int], linear: np.ndarray,
              meta: tuple[int, ...] | None, min_shift: int, depth: int) -> RefIndex:
    """One reference's :class:`RefIndex` from its bins as laid out in an index file.

    ``raw``: the (uncompressed) index bytes; bin ``ids[i]`` has ``counts[i]`` chunks of
    16 bytes from byte ``at[i]``; ``linear``: the smallest virtual offset per window;
    ``meta``: the pseudo-bin's four numbers (first and end offsets, mapped and
    unmapped reads), if any.
    """
    # Gather every chunk's 16 bytes in one go, then sort bins by id.
    cnt = np.array(counts, dtype=np.int64)
    first_byte = np.repeat(np.array(at, dtype=np.int64) - 16 * (np.cumsum(cnt) - cnt), cnt)
    rows = first_byte + 16 * np.arange(int(cnt.sum()), dtype=np.int64)
    if len(rows) and int(rows[-1]) + 16 > len(raw):
        raise ValueError("index ends early")
    chunks = raw[rows[:, None] + np.arange(16)].view("<u8").reshape(-1, 2).astype(np.uint64)
    bin_ids = np.array(ids, dtype=np.int64)
    lo = np.cumsum(cnt) - cnt
    order = np.argsort(bin_ids, kind="stable")
    ref = RefIndex(
        bin_ids=bin_ids[order], bin_lo=lo[order], bin_hi=(lo + cnt)[order],
        chunks=chunks, linear=linear,
    )
    if meta is not None:
        ref.beg, ref.end, ref.n_mapped, ref.n_unmapped = (int(x) for x in meta)
    # First record of each non-empty bin (bins are contiguous in file order), by the
    # bins' start positions: what bounds a query on the right (see _max_offset).
    nonempty = cnt > 0
    if nonempty.any():
        firsts = np.minimum.reduceat(chunks[:, 0], lo[nonempty])
        starts = bin_starts(bin_ids[nonempty], min_shift, depth)
        by_start = np.argsort(starts, kind="stable")
        ref.after_pos = starts[by_start]
        ref.after_first = np.minimum.accumulate(firsts[by_start][::-1])[::-1]
    return ref


def known_blocks(refs: list[RefIndex]) -> np.ndarray:
    """Sorted unique compressed offsets at which the index says a BGZF block starts."""
    starts = [a >> np.uint64(16) for r in refs for a in (r.chunks.ravel(), r.linear)]
    if not starts:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate(starts)).astype(np.int64)


def write_bai(n_ref: int, tid: int, chunks: list[Chunk]) -> bytes:
    """A minimal BAI whose only content is ``chunks`` in the root bin of ``tid``.

    htslib then reads exactly those chunks for any query on ``tid`` and filters the
    records by position itself: a valid, pruned index for a local slice of a BAM.
    """
    out = [BAI_MAGIC, struct.pack("<i", n_ref)]
    for i in range(n_ref):
        if i == tid and chunks:
            out.append(struct.pack("<iIi", 1, 0, len(chunks)))
            out.extend(struct.pack("<QQ", c.beg, c.end) for c in chunks)
        else:
            out.append(struct.pack("<i", 0))
        out.append(struct.pack("<i", 0))  # no linear index
    return b"".join(out)
