"""Parse a coordinate-sorted index (``.csi``) into the :class:`~functions.core.bai.BamIndex`
planning uses.

Contract: :func:`parse_csi` turns the bytes of a CSI file (BGZF-compressed, as htslib
writes it, or already inflated) into a :class:`BamIndex` with the CSI's ``min_shift``
and ``depth``, so that :meth:`BamIndex.query`, :meth:`BamIndex.window_bytes` and
:meth:`BamIndex.block_end_bound` answer at the CSI's resolution (``2**min_shift`` bp
windows: 512 bp for ``samtools index -c -m 9``, against a BAI's 16 kb). The BAM itself
is never read.

The format is the SAM specification's CSIv1 (section 5.3): magic ``CSI\\1``,
``min_shift``, ``depth``, ``l_aux`` and the aux bytes, ``n_ref``, then per reference
its bins, each with its number, ``loffset`` and chunks of virtual offsets, the
pseudo-bin (``((1 << 3 * (depth + 1)) - 1) // 7 + 1``) holding the reference's first
and end offsets and its mapped and unmapped read counts; and, optionally, the number
of reads without coordinates. A CSI has no linear index: a bin's ``loffset`` is the
linear index's value at the bin's first window (htslib: the offset of the first record
overlapping that window, or of an earlier window when none does), so the linear index
is rebuilt from the bins, every window taking the largest ``loffset`` known at or
before it; each such value is a lower bound on the offset of every record overlapping
the window, which is all :meth:`BamIndex.query` needs of it.
"""

from __future__ import annotations

import struct

import numpy as np

from functions.core.bai import BamIndex, IndexFormatError, RefIndex, build_ref, known_blocks, level_first, meta_bin
from functions.core.bgzf import BgzfError, inflate

CSI_MAGIC = b"CSI\x01"
GZIP_MAGIC = b"\x1f\x8b"
MAX_SPAN_SHIFT = 62  # min_shift + 3 * depth beyond this overflows htslib's 64-bit positions


def parse_csi(data: bytes) -> BamIndex:
    """Parse the bytes of a ``.csi`` file (compressed or not); an :class:`IndexFormatError`
    if they are not a valid CSI."""
    if data[:2] == GZIP_MAGIC:
        try:
            data = inflate(data)
        except BgzfError as exc:
            raise IndexFormatError(f"truncated or corrupt CSI: {exc}") from exc
    if data[:4] != CSI_MAGIC:
        raise IndexFormatError("not a CSI file (bad magic)")
    try:
        return _parse(data)
    except (struct.error, ValueError) as exc:
        raise IndexFormatError(f"truncated or corrupt CSI: {exc}") from exc


def _parse(data: bytes) -> BamIndex:
    unpack = struct.unpack_from
    min_shift, depth, l_aux = unpack("<iii", data, 4)
    if min_shift < 1 or depth < 0 or min_shift + 3 * depth > MAX_SPAN_SHIFT or l_aux < 0:
        raise ValueError(f"min_shift {min_shift}, depth {depth}, l_aux {l_aux} out of range")
    pos = 16 + l_aux
    (n_ref,) = unpack("<i", data, pos)
    if n_ref < 0:
        raise ValueError(f"negative number of references ({n_ref})")
    pos += 4
    raw = np.frombuffer(data, dtype=np.uint8)
    pseudo, n_bins = meta_bin(depth), level_first(depth + 1)
    firsts = np.array([level_first(lv) for lv in range(depth + 2)], dtype=np.int64)
    refs: list[RefIndex] = []
    for _ in range(n_ref):
        (n_bin,) = unpack("<i", data, pos)
        pos += 4
        ids, counts, at, loffs = [], [], [], []
        meta = None
        for _ in range(n_bin):
            b, loff, n_chunk = unpack("<IQi", data, pos)
            if n_chunk < 0:
                raise ValueError(f"bin {b} has {n_chunk} chunks")
            if b == pseudo:
                meta = unpack("<QQQQ", data, pos + 16) if n_chunk >= 2 else None
            elif b < n_bins:
                ids.append(b)
                counts.append(n_chunk)
                at.append(pos + 16)
                loffs.append(loff)
            else:
                raise ValueError(f"bin {b} beyond the {n_bins} bins of depth {depth}")
            pos += 16 + 16 * n_chunk
        linear = _linear(np.array(ids, dtype=np.int64), np.array(loffs, dtype=np.uint64), firsts, depth)
        refs.append(build_ref(raw, ids, counts, at, linear, meta, min_shift, depth))
    if pos > len(data):
        raise ValueError("index ends early")
    n_no_coor = None
    if pos + 8 <= len(data):
        (n_no_coor,) = unpack("<Q", data, pos)
    return BamIndex(refs=refs, n_no_coor=n_no_coor, known_blocks=known_blocks(refs),
                    min_shift=min_shift, depth=depth, fmt="CSI")


def _linear(ids: np.ndarray, loffs: np.ndarray, firsts: np.ndarray, depth: int) -> np.ndarray:
    """A linear index (smallest virtual offset per window, 0 where none is known) rebuilt
    from the bins' ``loffset``: each window takes the largest one known at or before it."""
    if not len(ids):
        return np.zeros(0, dtype=np.uint64)
    level = np.searchsorted(firsts, ids, side="right") - 1
    window = (ids - firsts[level]) << (3 * (depth - level))  # the bin's first window
    linear = np.zeros(int(window.max()) + 1, dtype=np.uint64)
    np.maximum.at(linear, window, loffs)
    return np.maximum.accumulate(linear)
