"""The FASTA index (``.fai``): one entry per contig, and the byte offset of a position.

Contract: :func:`parse_fai` reads the text of a ``.fai`` into :class:`FaiEntry` by
contig name; :meth:`FaiEntry.byte_offset` is where a 0-based position of that contig
lies in the (uncompressed) FASTA.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FaiEntry:
    """One line of a ``.fai`` index."""

    name: str
    length: int
    offset: int
    linebases: int
    linewidth: int

    def byte_offset(self, pos: int) -> int:
        """File offset of 0-based position ``pos`` of this contig."""
        return self.offset + pos // self.linebases * self.linewidth + pos % self.linebases


def parse_fai(text: str) -> dict[str, FaiEntry]:
    """The entries of a ``.fai``'s text, by contig name, in file order."""
    entries = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        f = line.split("\t")
        entries[f[0]] = FaiEntry(f[0], int(f[1]), int(f[2]), int(f[3]), int(f[4]))
    return entries
