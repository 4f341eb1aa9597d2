"""BED lines, read the same way for every BED the workflow takes (primer schemes,
target regions): blank, ``#``, ``track`` and ``browser`` lines skipped, tab-separated
columns, integer start and end, and one error line naming the file, the line and the fix."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from functions.core.errors import SvcError


def bed_rows(lines: Iterable[str], min_cols: int, source: str, columns: str, fix: str,
             error: type[SvcError]) -> Iterator[tuple[int, list[str], int, int]]:
    """(line number, columns, start, end) of each data line; ``error`` (one line: the
    ``source``, the line, what is wrong, then ``fix``) for a line with fewer than
    ``min_cols`` columns (``columns`` names them) or a start or end that is not a whole number."""
    for i, line in enumerate(lines, 1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) < min_cols:
            raise error(f"{source} line {i}: {len(cols)} tab-separated columns, need at least {min_cols} "
                        f"({columns}); {fix}")
        try:
            start, end = int(cols[1]), int(cols[2])
        except ValueError:
            raise error(f"{source} line {i}: start and end ({cols[1]!r}, {cols[2]!r}) are not whole numbers; "
                        f"{fix}") from None
        yield i, cols, start, end
