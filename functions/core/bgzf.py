"""BGZF (blocked gzip) facts and the few operations on raw blocks we need.

Contract: :func:`deflate_block` writes one block, :func:`deflate_blocks` as many as data
needs; :func:`inflate` decompresses a byte string made of whole BGZF blocks
(:func:`block_at` and :func:`inflate_block` walk them one by one, for readers that
stop at an index's virtual offsets);
:data:`EOF_BLOCK` is the 28-byte empty block that ends every BGZF file (SAM
specification, section 4.1.2).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from functions.core.errors import SvcError

EOF_BLOCK = bytes.fromhex(
    "1f8b08040000000000ff0600424302001b0003000000000000000000"
)


BGZF_HEADER = 18  # gzip header with the BC extra field, which holds the block size


class BgzfError(SvcError, ValueError):
    """Bytes that should be BGZF blocks are not."""


MAX_BLOCK_DATA = 0xFF00  # bytes of data per block, as htslib writes them


def deflate_block(data: bytes, level: int = 6) -> bytes:
    """One BGZF block holding ``data`` (at most :data:`MAX_BLOCK_DATA` bytes)."""
    if len(data) > MAX_BLOCK_DATA:
        raise ValueError(f"a BGZF block holds at most {MAX_BLOCK_DATA} bytes, not {len(data)}")
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    size = BGZF_HEADER + len(body) + 8
    return (b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00" + (size - 1).to_bytes(2, "little")
            + body + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little"))


def deflate_blocks(data: bytes, level: int = 6) -> Iterator[tuple[bytes, int]]:
    """``data`` as whole BGZF blocks, in order, each with the bytes of ``data`` it holds."""
    for at in range(0, len(data), MAX_BLOCK_DATA):
        part = data[at : at + MAX_BLOCK_DATA]
        yield deflate_block(part, level), len(part)


def block_size(header: bytes) -> int:
    """Total size of the BGZF block whose first 18 bytes are ``header``."""
    if len(header) < BGZF_HEADER or header[:4] != b"\x1f\x8b\x08\x04" or header[12:14] != b"BC":
        raise BgzfError("no BGZF block header where the index points")
    return int.from_bytes(header[16:18], "little") + 1


def block_at(data: bytes | memoryview, at: int) -> int | None:
    """Size of the whole BGZF block starting at ``data[at]``; None when ``data`` ends inside it.

    Raises :class:`BgzfError` when no BGZF block starts there.
    """
    if len(data) - at < BGZF_HEADER:
        return None
    size = block_size(bytes(data[at : at + BGZF_HEADER]))
    return size if at + size <= len(data) else None


def inflate_block(data: bytes | memoryview, at: int, size: int) -> bytes:
    """The decompressed content of the BGZF block of ``size`` bytes at ``data[at]``."""
    return zlib.decompress(data[at + BGZF_HEADER : at + size - 8], wbits=-15)


def inflate(data: bytes, allow_partial: bool = False) -> bytes:
    """Decompress consecutive BGZF blocks (the one block reader, with :func:`block_at`
    and :func:`inflate_block`, of everything that reads BGZF by hand).

    With ``allow_partial`` a trailing incomplete block is ignored (useful when the
    bytes were fetched with a bound past the last block needed).
    """
    out = []
    pos = 0
    while pos < len(data):
        try:
            size = block_at(data, pos)
        except BgzfError:
            if allow_partial:
                break
            raise BgzfError(f"no BGZF block at byte {pos}") from None
        if size is None:
            if allow_partial:
                break
            if len(data) - pos < BGZF_HEADER and data[pos : pos + 4] != b"\x1f\x8b\x08\x04"[: len(data) - pos]:
                raise BgzfError(f"no BGZF block at byte {pos}")
            raise BgzfError(f"BGZF block at byte {pos} is truncated")
        out.append(inflate_block(data, pos, size))
        pos += size
    return b"".join(out)
