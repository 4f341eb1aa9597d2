"""Read the header of a BAM file from its first bytes.

Contract: :func:`parse_header` takes the decompressed start of a BAM (at least the
whole header) and returns a :class:`BamHeader` with the contig names and lengths in
header order and the SAM header text.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from functions.core.errors import SvcError


class BamHeaderError(SvcError, ValueError):
    """The bytes are not the start of a BAM file, or stop inside its header."""


@dataclass(frozen=True)
class BamHeader:
    text: str
    contigs: tuple[tuple[str, int], ...]
    size: int  # bytes of uncompressed header, records start right after

    def sq_tag(self, name: str, tag: str) -> str | None:
        """Value of ``tag`` (e.g. ``M5``) on the @SQ line of ``name``, if any."""
        for line in self.text.splitlines():
            if not line.startswith("@SQ"):
                continue
            fields = dict(f.split(":", 1) for f in line.split("\t")[1:] if ":" in f)
            if fields.get("SN") == name:
                return fields.get(tag)
        return None

    @property
    def sort_order(self) -> str | None:
        for line in self.text.splitlines():
            if line.startswith("@HD"):
                for f in line.split("\t")[1:]:
                    if f.startswith("SO:"):
                        return f[3:]
        return None


def parse_header(raw: bytes) -> BamHeader:
    if raw[:4] != b"BAM\x01":
        raise BamHeaderError("not a BAM file (bad magic)")
    try:
        (l_text,) = struct.unpack_from("<i", raw, 4)
        pos = 8 + l_text
        text = raw[8:pos].split(b"\0", 1)[0].decode()
        (n_ref,) = struct.unpack_from("<i", raw, pos)
        pos += 4
        contigs = []
        for _ in range(n_ref):
            (l_name,) = struct.unpack_from("<i", raw, pos)
            name = raw[pos + 4 : pos + 4 + l_name - 1].decode()
            (l_ref,) = struct.unpack_from("<i", raw, pos + 4 + l_name)
            if pos + 8 + l_name > len(raw):
                raise struct.error("header cut short")
            contigs.append((name, l_ref))
            pos += 8 + l_name
    except (struct.error, UnicodeDecodeError) as exc:
        raise BamHeaderError(f"BAM header is truncated or corrupt: {exc}") from exc
    return BamHeader(text=text, contigs=tuple(contigs), size=pos)
