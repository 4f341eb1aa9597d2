"""BGZF (blocked gzip) facts and the few operations on raw blocks we need.

Contract: :func:`inflate` decompresses a byte string made of whole BGZF blocks;
:data:`EOF_BLOCK` is the 28-byte empty block that ends every BGZF file (SAM
specification, section 4.1.2).
"""

from __future__ import annotations

import zlib

from functions.core.errors import SvcError

EOF_BLOCK = bytes.fromhex(
    "1f8b08040000000000ff0600424302001b0003000000000000000000"
)


BGZF_HEADER = 18  # gzip header with the BC extra field, which holds the block size


class BgzfError(SvcError, ValueError):
    """Bytes that should be BGZF blocks are not."""


def block_size(header: bytes) -> int:
    """Total size of the BGZF block whose first 18 bytes are ``header``."""
    if len(header) < BGZF_HEADER or header[:4] != b"\x1f\x8b\x08\x04" or header[12:14] != b"BC":
        raise BgzfError("no BGZF block header where the index points")
    return int.from_bytes(header[16:18], "little") + 1


def inflate(data: bytes, allow_partial: bool = False) -> bytes:
    """Decompress consecutive BGZF blocks.

    With ``allow_partial`` a trailing incomplete block is ignored (useful when the
    bytes were fetched with a bound past the last block needed).
    """
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 18 or data[pos : pos + 4] != b"\x1f\x8b\x08\x04":
            if allow_partial:
                break
            raise BgzfError(f"no BGZF block at byte {pos}")
        bsize = int.from_bytes(data[pos + 16 : pos + 18], "little") + 1
        if pos + bsize > len(data):
            if allow_partial:
                break
            raise BgzfError(f"BGZF block at byte {pos} is truncated")
        out.append(zlib.decompress(data[pos + 18 : pos + bsize - 8], wbits=-15))
        pos += bsize
    return b"".join(out)
