"""Read a CRAM's index (``.crai``) and header, and plan by its containers.

Contract: :func:`parse_crai` takes the bytes of a ``.crai`` (gzip-compressed text,
one line per slice and reference: reference id, 1-based alignment start, span,
container offset, slice offset, slice size) and returns its :class:`CraiEntry` rows.
:class:`CramIndex` answers what planning asks of a BAM index
(:class:`functions.core.bai.BamIndex`): which byte runs hold the reads overlapping a
span, and the bytes of reads per window for balancing. A CRAM cannot be read from the
middle of a container, so the runs are whole containers, given as
:class:`~functions.core.bai.Chunk` of virtual offsets whose in-block part is 0 (the
container's first byte, and the next container's): the plan's byte ranges are then
exactly the containers. :func:`cram_header` reads the SAM header from a CRAM's first
bytes (the file definition and the header container) without htslib or a temporary file.

Only CRAM 3.x is read (what samtools has written since 1.3, 2016): :func:`cram_version`
says which version a file's first bytes are, :data:`EOF_CONTAINER` is the end-of-file
container a complete CRAM 3 ends with.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import mmap
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from functions.core.bai import Chunk, IndexFormatError
from functions.core.bamheader import BamHeader

CRAM_MAGIC = b"CRAM"
# The file definition: the magic, major and minor version, a 20-byte file id.
FILE_DEFINITION = 26
# The end-of-file container of CRAM 3.0 and 3.1 (the CRAM specification, section 9).
EOF_CONTAINER = bytes.fromhex("0f000000ffffffff0fe0454f4600000000010005bdd94f0001000606010001000100ee63014b")
# What the header and slice parsers read from: bytes, or a mapped file.
Data = bytes | bytearray | mmap.mmap
# Planning windows: the median slice's span rounded up to a power of two, within these.
MIN_SHIFT, MAX_SHIFT = 8, 14


def is_cram(path: str) -> bool:
    """Is ``path`` (a file, a key, an ``s3://`` URL) named as a CRAM?"""
    return path.lower().endswith(".cram")


def cram_version(head: bytes) -> tuple[int, int] | None:
    """(major, minor) from a CRAM's first bytes; None when they are not a CRAM's."""
    if len(head) < 6 or head[:4] != CRAM_MAGIC:
        return None
    return head[4], head[5]


@dataclass(frozen=True)
class CraiEntry:
    """One line of a ``.crai``: a slice's reads on one reference (0-based [start, end))."""

    tid: int  # -1: unmapped reads
    start: int
    end: int
    container: int  # byte offset of the container in the CRAM
    slice_offset: int  # of the slice, from the end of the container's header
    slice_size: int

    def line(self, container: int | None = None) -> str:
        """The entry as a ``.crai`` line, its container at ``container`` if given."""
        at = self.container if container is None else container
        start = self.start + 1 if self.tid >= 0 else 0
        span = self.end - self.start if self.tid >= 0 else 0
        return f"{self.tid}\t{start}\t{span}\t{at}\t{self.slice_offset}\t{self.slice_size}\n"


def parse_crai(data: bytes) -> list[CraiEntry]:
    """The entries of a ``.crai`` (gzip-compressed or not), in file order; an
    :class:`IndexFormatError` when it is not one."""
    try:
        text = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        out = []
        for line in text.decode("ascii").splitlines():
            if not line.strip():
                continue
            tid, start, span, container, s_off, s_size = (int(x) for x in line.split("\t"))
            begin = max(0, start - 1)
            out.append(CraiEntry(tid, begin, begin + max(span, 1 if tid >= 0 else 0), container, s_off, s_size))
    except (OSError, EOFError, UnicodeDecodeError, ValueError, zlib.error) as exc:
        raise IndexFormatError(f"not a CRAM index (.crai): {exc}") from exc
    return out


@dataclass
class CramRef:
    """One reference's entries (sorted by start), for :class:`CramIndex`."""

    entries: list[CraiEntry] = field(default_factory=list)
    linear: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # none: a CRAM has no linear index

    @property
    def has_reads(self) -> bool:
        return bool(self.entries)


class CramIndex:
    """A ``.crai`` as planning reads it (the interface of :class:`~functions.core.bai.BamIndex`).

    ``n_ref``: the contigs of the CRAM's header; ``data_end``: where the last container
    ends (the file's size less its EOF container).
    """

    fmt = "CRAI"

    def __init__(self, entries: list[CraiEntry], n_ref: int, data_end: int) -> None:
        if not entries:
            raise IndexFormatError("the CRAM index lists no container")
        if any(e.tid >= n_ref or e.tid < -1 for e in entries):
            raise IndexFormatError(f"the CRAM index names reference ids beyond the header's {n_ref} contigs")
        offsets = sorted({e.container for e in entries})
        if offsets[-1] >= data_end:
            raise IndexFormatError("the CRAM index lists a container past the end of the CRAM")
        self.entries = entries
        self.data_end = data_end
        self._next = dict(zip(offsets, [*offsets[1:], data_end], strict=True))
        # The bytes of each entry: its container's, shared by the slices' sizes.
        share: dict[int, int] = {}
        for e in entries:
            share[e.container] = share.get(e.container, 0) + max(1, e.slice_size)
        self._bytes = {id(e): (self.container_end(e.container) - e.container) * max(1, e.slice_size)
                       / share[e.container] for e in entries}
        self.refs = [CramRef() for _ in range(n_ref)]
        for e in entries:
            if e.tid >= 0:
                self.refs[e.tid].entries.append(e)
        for ref in self.refs:
            ref.entries.sort(key=lambda e: (e.start, e.container))
        spans = [e.end - e.start for e in entries if e.tid >= 0]
        median = float(np.median(spans)) if spans else float(1 << MAX_SHIFT)
        self.min_shift = min(MAX_SHIFT, max(MIN_SHIFT, math.ceil(math.log2(max(1.0, median)))))
        self.depth = 0
        self.n_containers = len(offsets)

    @property
    def window(self) -> int:
        return 1 << self.min_shift

    @property
    def first_record(self) -> int | None:
        """Where the first container starts, the header's end (a virtual offset of
        in-block part 0); None without aligned reads."""
        if not any(e.tid >= 0 for e in self.entries):
            return None
        return min(e.container for e in self.entries) << 16

    def container_end(self, container: int) -> int:
        """The byte just past the container starting at ``container``."""
        return self._next[container]

    def block_end_bound(self, coff: int, data_end: int) -> int:
        raise IndexFormatError("a CRAM is read by whole containers, not BGZF blocks")

    def query(self, tid: int, beg: int, end: int) -> list[Chunk]:
        """The containers holding reads of ``tid`` overlapping [beg, end), as chunks
        (runs of adjacent containers joined), in file order."""
        runs: list[list[int]] = []
        for c in sorted({e.container for e in self.refs[tid].entries if e.start < end and e.end > beg}):
            stop = self.container_end(c)
            if runs and runs[-1][1] == c:
                runs[-1][1] = stop
            else:
                runs.append([c, stop])
        return [Chunk(a << 16, b << 16) for a, b in runs]

    def window_bytes(self, tid: int, length: int) -> np.ndarray:
        """Estimated bytes of reads per window: each entry's bytes spread evenly over
        the windows its span covers."""
        n_win = max(1, (length + self.window - 1) >> self.min_shift)
        out = np.zeros(n_win, dtype=np.float64)
        for e in self.refs[tid].entries:
            first = min(n_win - 1, e.start >> self.min_shift)
            last = min(n_win - 1, max(e.start, e.end - 1) >> self.min_shift)
            out[first: last + 1] += self._bytes[id(e)] / (last - first + 1)
        return out

    def entries_in(self, ranges: list[tuple[int, int]]) -> list[CraiEntry]:
        """The entries of the containers lying in the byte ranges ``[start, end)``."""
        return [e for e in self.entries if any(a <= e.container < b for a, b in ranges)]


# -- slice headers ------------------------------------------------------------------
@dataclass(frozen=True)
class SliceHeader:
    """What a slice's header says of the reference: its reference id (-2: several),
    1-based alignment start and span, and the MD5 of those reference bases (all zero:
    none given)."""

    tid: int
    start: int
    span: int
    md5: bytes


def slice_header(data: Data, container: int, slice_offset: int) -> SliceHeader:
    """The header of the slice ``slice_offset`` bytes after the header of the container
    starting at ``container`` in ``data`` (a CRAM 3's bytes, or a copy holding the
    container at that offset)."""
    try:
        at = container + 4
        for _ in range(4):
            _, at = _itf8(data, at)
        for _ in range(2):
            _, at = _ltf8(data, at)
        _, at = _itf8(data, at)
        landmarks, at = _itf8(data, at)
        for _ in range(landmarks):
            _, at = _itf8(data, at)
        at += 4 + slice_offset  # the CRC32, then the slice's own block
        method, at = data[at], at + 2
        if method != 0:
            raise CramFormatError(f"a slice header compressed with method {method}")
        for _ in range(3):  # content id, size, size uncompressed
            _, at = _itf8(data, at)
        tid, at = _itf8(data, at)
        start, at = _itf8(data, at)
        span, at = _itf8(data, at)
        _, at = _itf8(data, at)  # records
        _, at = _ltf8(data, at)  # record counter
        _, at = _itf8(data, at)  # blocks
        ids, at = _itf8(data, at)
        for _ in range(ids):
            _, at = _itf8(data, at)
        _, at = _itf8(data, at)  # the embedded reference's block
        md5 = bytes(data[at: at + 16])
        if len(md5) != 16:
            raise CramFormatError("the bytes stop inside a slice header")
    except IndexError as exc:
        raise CramFormatError("the bytes stop inside a slice header") from exc
    return SliceHeader(tid, start, span, md5)


# -- the header ------------------------------------------------------------------
class CramFormatError(IndexFormatError):
    """The bytes are not the start of a CRAM 3 file, or stop inside its header."""


def _itf8(data: Data, at: int) -> tuple[int, int]:
    """An ITF8 integer at ``at``: (value, the offset after it)."""
    b0 = data[at]
    if b0 < 0x80:
        return b0, at + 1
    if b0 < 0xC0:
        return ((b0 & 0x3F) << 8) | data[at + 1], at + 2
    if b0 < 0xE0:
        return ((b0 & 0x1F) << 16) | (data[at + 1] << 8) | data[at + 2], at + 3
    if b0 < 0xF0:
        return ((b0 & 0x0F) << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3], at + 4
    v = ((b0 & 0x0F) << 28) | (data[at + 1] << 20) | (data[at + 2] << 12) | (data[at + 3] << 4) | (data[at + 4] & 0x0F)
    return (v - (1 << 32) if v & 0x80000000 else v), at + 5


def _ltf8(data: Data, at: int) -> tuple[int, int]:
    """An LTF8 integer at ``at``: (value, the offset after it)."""
    b0 = data[at]
    n = 0
    while n < 8 and b0 & (0x80 >> n):
        n += 1
    if n == 8:
        return int.from_bytes(data[at + 1: at + 9], "big"), at + 9
    v = b0 & (0xFF >> (n + 1))
    for i in range(n):
        v = (v << 8) | data[at + 1 + i]
    return v, at + 1 + n


_DECOMPRESS = {0: lambda b: b, 1: gzip.decompress, 2: bz2.decompress, 3: lzma.decompress}


def cram_header(head: bytes) -> BamHeader:
    """The SAM header of a CRAM 3 from its first bytes (at least up to the end of the
    header container's first block); a :class:`CramFormatError` when they are not."""
    version = cram_version(head)
    if version is None:
        raise CramFormatError("not a CRAM file (bad magic)")
    if version[0] != 3:
        raise CramFormatError(f"CRAM version {version[0]}.{version[1]} is not read (only 3.x)")
    try:
        at = FILE_DEFINITION + 4  # the container's length
        for _ in range(4):  # reference id, start, span, records
            _, at = _itf8(head, at)
        for _ in range(2):  # record counter, bases
            _, at = _ltf8(head, at)
        _, at = _itf8(head, at)  # blocks
        landmarks, at = _itf8(head, at)
        for _ in range(landmarks):
            _, at = _itf8(head, at)
        at += 4  # CRC32
        method, at = head[at], at + 2  # and the content type
        _, at = _itf8(head, at)  # content id
        size, at = _itf8(head, at)
        _, at = _itf8(head, at)  # its size uncompressed
        if at + size > len(head):
            raise CramFormatError("the CRAM's first bytes stop inside its header")
        decompress = _DECOMPRESS.get(method)
        if decompress is None:
            raise CramFormatError(f"the CRAM header block is compressed with method {method}, which is not read")
        raw = decompress(bytes(head[at: at + size]))
        (n,) = struct.unpack_from("<i", raw, 0)
        text = raw[4: 4 + n].decode("utf-8", errors="replace").rstrip("\0")
    except (IndexError, struct.error, OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
        if isinstance(exc, CramFormatError):
            raise
        raise CramFormatError(f"the CRAM header cannot be read ({exc})") from exc
    contigs = []
    for line in text.splitlines():
        if line.startswith("@SQ\t"):
            tags = dict(f.split(":", 1) for f in line.split("\t")[1:] if ":" in f)
            contigs.append((tags.get("SN", ""), int(tags.get("LN", "0"))))
    return BamHeader(text, tuple(contigs), 0)
