"""Amplicon primer schemes (ARTIC-style BED) and the trimming they imply.

Contract: :func:`parse_primer_bed` reads a primer BED (columns chrom, start, end,
name, pool[, strand]; 0-based half-open; names ending ``_LEFT`` or ``_RIGHT``, with an
optional ``_alt`` suffix for alternative primers) into a :class:`PrimerScheme`, or
raises :class:`PrimerError` with one line naming the file, the line and the fix. A
scheme checks itself (:meth:`PrimerScheme.check`): every ``_LEFT`` primer has a
``_RIGHT`` one of the same amplicon and lies left of it.

Trimming follows ``ivar trim`` (with ``-e``: reads that start in no primer are kept):
a read whose 5' end lies inside a primer does not count the bases of that primer;
reads too short after trimming are dropped by the caller's minimum aligned length.
:meth:`PrimerScheme.trim_bounds` gives, for reads' alignment spans, the part that
counts: ``[max(start, end of every primer holding start), min(end, start of every
primer holding end - 1))`` for forward and reverse reads respectively. Like every
other input of a region's evidence it depends on the read alone, so a region's
calls still equal a whole-genome run's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from functions.core.bed import bed_rows
from functions.core.errors import SvcError

_NAME = re.compile(r"^(?P<amplicon>.+)_(?P<side>LEFT|RIGHT)(?:_alt\w*|_ALT\w*)?$")


class PrimerError(SvcError, ValueError):
    """A primer BED cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Primer:
    chrom: str
    start: int  # 0-based, half-open
    end: int
    name: str
    amplicon: str
    side: str  # LEFT or RIGHT
    pool: str


@dataclass(frozen=True)
class PrimerScheme:
    """The primers of a scheme, in file order; ``source`` names the file in errors."""

    primers: tuple[Primer, ...]
    source: str = "primer BED"

    def contigs(self) -> set[str]:
        return {p.chrom for p in self.primers}

    def on(self, chrom: str, lo: int, hi: int) -> PrimerScheme:
        """The primers of ``chrom`` that overlap [lo, hi) (what a region's task carries)."""
        return PrimerScheme(tuple(p for p in self.primers if p.chrom == chrom and p.start < hi and p.end > lo),
                            self.source)

    def check(self, contig_lengths: dict[str, int] | None = None) -> None:
        """Every amplicon has both sides, LEFT before RIGHT; with ``contig_lengths``, every
        primer lies on a contig of the reference, inside it."""
        sides: dict[str, dict[str, list[Primer]]] = {}
        for p in self.primers:
            sides.setdefault(p.amplicon, {}).setdefault(p.side, []).append(p)
            if contig_lengths is not None:
                if p.chrom not in contig_lengths:
                    shown = ", ".join(sorted(contig_lengths)[:3]) + (", ..." if len(contig_lengths) > 3 else "")
                    raise PrimerError(f"{self.source}: primer {p.name} is on contig {p.chrom!r}, which is not in "
                                      f"the reference (its contigs: {shown}); use the scheme made for this "
                                      "reference, or rename its contigs")
                if p.end > contig_lengths[p.chrom]:
                    raise PrimerError(f"{self.source}: primer {p.name} ends at {p.end}, beyond the end of "
                                      f"{p.chrom} ({contig_lengths[p.chrom]} bp); use the scheme made for this "
                                      "reference")
        for amplicon, by_side in sides.items():
            missing = {"LEFT", "RIGHT"} - set(by_side)
            if missing:
                have = next(iter(by_side.values()))[0].name
                raise PrimerError(f"{self.source}: amplicon {amplicon} has no _{missing.pop()} primer (only "
                                  f"{have}); every amplicon needs a _LEFT and a _RIGHT primer")
            left = min(p.start for p in by_side["LEFT"])
            right = max(p.end for p in by_side["RIGHT"])
            if left >= right:
                raise PrimerError(f"{self.source}: amplicon {amplicon}'s LEFT primer starts at {left}, not before "
                                  f"its RIGHT primer's end ({right}); check the scheme's coordinates")

    def trim_bounds(self, chrom: str, start: np.ndarray, end: np.ndarray,
                    reverse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The counted part [lo, hi) of reads aligned over [start, end) of ``chrom``: a
        forward read starting inside primers from the furthest of their ends, a reverse
        read ending inside primers up to the nearest of their starts."""
        steps = self._steps.get(chrom)
        if steps is None:
            return start.copy(), end.copy()
        breaks, furthest_end, nearest_start = steps
        i = np.searchsorted(breaks, start, side="right") - 1
        f_end = np.where(i >= 0, furthest_end[np.maximum(i, 0)], -1)
        lo = np.where(~reverse & (f_end >= 0), np.maximum(start, f_end), start)
        j = np.searchsorted(breaks, end - 1, side="right") - 1
        n_start = np.where(j >= 0, nearest_start[np.maximum(j, 0)], -1)
        hi = np.where(reverse & (n_start >= 0), np.minimum(end, n_start), end)
        return lo, hi

    @cached_property
    def _steps(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per contig, the primers as step functions: between consecutive primer edges
        ``breaks``, the furthest end and the nearest start of the primers covering that
        stretch (-1 where none does)."""
        out = {}
        for chrom in self.contigs():
            starts = np.array([p.start for p in self.primers if p.chrom == chrom], dtype=np.int64)
            ends = np.array([p.end for p in self.primers if p.chrom == chrom], dtype=np.int64)
            breaks = np.unique(np.concatenate([starts, ends]))
            furthest = np.full(len(breaks), -1, dtype=np.int64)
            nearest = np.full(len(breaks), -1, dtype=np.int64)
            for a in range(0, len(breaks), 1024):  # bounded memory: 1024 stretches at a time
                b = breaks[a : a + 1024, None]
                cover = (starts[None, :] <= b) & (ends[None, :] > b)
                any_ = cover.any(axis=1)
                furthest[a : a + 1024] = np.where(any_, np.where(cover, ends[None, :], -1).max(axis=1), -1)
                nearest[a : a + 1024] = np.where(any_, np.where(cover, starts[None, :], np.iinfo(np.int64).max)
                                                 .min(axis=1), -1)
            out[chrom] = (breaks, furthest, nearest)
        return out

    def to_rows(self) -> list[list[object]]:
        """The scheme as it travels in a task: one row per primer."""
        return [[p.chrom, p.start, p.end, p.name, p.pool] for p in self.primers]

    @classmethod
    def from_rows(cls, rows: list[list[object]], source: str = "primer BED") -> PrimerScheme:
        return cls(tuple(_primer(str(r[0]), int(str(r[1])), int(str(r[2])), str(r[3]), str(r[4]), source, i + 1)
                         for i, r in enumerate(rows)), source)


def _primer(chrom: str, start: int, end: int, name: str, pool: str, source: str, line: int) -> Primer:
    m = _NAME.match(name)
    if not m:
        raise PrimerError(f"{source} line {line}: primer name {name!r} does not end in _LEFT or _RIGHT "
                          "(optionally followed by _alt...); name primers as ARTIC schemes do, e.g. "
                          "nCoV-2019_1_LEFT")
    if start < 0 or end <= start:
        raise PrimerError(f"{source} line {line}: primer {name} ends ({end}) before it starts ({start}); "
                          "columns 2 and 3 must be the 0-based start and the end")
    return Primer(chrom, start, end, name, m.group("amplicon"), m.group("side"), pool)


def parse_primer_bed(text: str, source: str = "primer BED") -> PrimerScheme:
    """Parse an ARTIC-style primer BED (see the module's contract)."""
    primers = []
    for i, cols, start, end in bed_rows(text.splitlines(), 5, source, "chrom, start, end, name, pool",
                                        "give an ARTIC-style primer BED", PrimerError):
        primers.append(_primer(cols[0], start, end, cols[3], cols[4], source, i))
    if not primers:
        raise PrimerError(f"{source}: no primers in it; give the scheme's primer BED")
    scheme = PrimerScheme(tuple(primers), source)
    scheme.check()
    return scheme


def read_primer_bed(path: str) -> PrimerScheme:
    """:func:`parse_primer_bed` of a file."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise PrimerError(f"primer BED {path} not found; fix 'calling.primers' in the config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PrimerError(f"primer BED {path} cannot be read ({exc}); fix 'calling.primers' in the "
                          "config") from None
    return parse_primer_bed(text, f"primer BED {path}")
