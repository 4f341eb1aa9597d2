"""CRAM files by their bytes: what they are, and what their headers say.

Contract: light (no numpy, no htslib), so the workflow and every step can tell a CRAM
from a BAM cheaply. :func:`is_cram` says whether a path is named as one;
:func:`cram_version` reads the version from a file's first bytes, and
:data:`EOF_CONTAINER` is the end-of-file container a complete CRAM 3 ends with.
:func:`cram_header` reads the SAM header from a CRAM's first bytes (the file
definition and the header container), and :func:`slice_header` what a slice's header
says of its reference (its span and that span's MD5), both without htslib or a
temporary file. Only CRAM 3.x is read (what samtools has written since 1.3, 2016).
The index (``.crai``) is read by :mod:`functions.core.crai`.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import mmap
import struct
import zlib
from dataclasses import dataclass

from functions.core.bamheader import BamHeader
from functions.core.errors import SvcError

CRAM_MAGIC = b"CRAM"
# The file definition: the magic, major and minor version, a 20-byte file id.
FILE_DEFINITION = 26
# The end-of-file container of CRAM 3.0 and 3.1 (the CRAM specification, section 9).
EOF_CONTAINER = bytes.fromhex("0f000000ffffffff0fe0454f4600000000010005bdd94f0001000606010001000100ee63014b")
# What the header and slice parsers read from: bytes, or a mapped file.
Data = bytes | bytearray | mmap.mmap


def is_cram(path: str) -> bool:
    """Is ``path`` (a file, a key, an ``s3://`` URL) named as a CRAM?"""
    return path.lower().endswith(".cram")


def cram_version(head: bytes) -> tuple[int, int] | None:
    """(major, minor) from a CRAM's first bytes; None when they are not a CRAM's."""
    if len(head) < 6 or head[:4] != CRAM_MAGIC:
        return None
    return head[4], head[5]


class CramFormatError(SvcError, ValueError):
    """The bytes are not the start of a CRAM 3 file, or stop inside its header."""


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
