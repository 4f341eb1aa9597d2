"""Read a CRAM's index (``.crai``), and plan by its containers.

Contract: :func:`parse_crai` takes the bytes of a ``.crai`` (gzip-compressed text,
one line per slice and reference: reference id, 1-based alignment start, span,
container offset, slice offset, slice size) and returns its :class:`CraiEntry` rows.
:class:`CramIndex` answers what planning asks of a BAM index
(:class:`functions.core.bai.BamIndex`): which byte runs hold the reads overlapping a
span, and the bytes of reads per window for balancing. A CRAM cannot be read from the
middle of a container, so the runs are whole containers, given as
:class:`~functions.core.bai.Chunk` of virtual offsets whose in-block part is 0 (the
container's first byte, and the next container's): the plan's byte ranges are then
exactly the containers. The file itself (version, header, slices):
:mod:`functions.core.cram`.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from functions.core.bai import Chunk, IndexFormatError

# Planning windows: the median slice's span rounded up to a power of two, within these.
MIN_SHIFT, MAX_SHIFT = 8, 14


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
