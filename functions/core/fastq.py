"""Reading one FASTQ chunk in a function: the BGZF bytes of R1 and R2 in, read pairs out.

Contract: :func:`read_chunk` takes exactly the bytes of one chunk's ranges in the
BGZF copies that staging wrote (:mod:`pipeline.fastq`), checks that they hold whole
FASTQ records, the same number in both files, named alike, and returns the pairs.
Every problem is a :class:`FastqError` naming the chunk and the fix.
"""

from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor

from functions.core.bgzf import BgzfError, inflate
from functions.core.errors import SvcError

FIX_MATES = "give R1 and R2 of one library, in the order the sequencer wrote them"


class FastqError(SvcError, ValueError):
    """A FASTQ input cannot be used; the message is ONE line naming the file, the problem and the fix."""


def _names(heads: list[str], label: str, where: str) -> list[str]:
    """Names from header lines: no '@', nothing from the first space or tab, no trailing /1 or /2."""
    try:
        names = [h[1:].split(None, 1)[0] for h in heads]
    except IndexError:
        raise FastqError(f"{where}: a read of {label} has no name: "
                         "fetch the chunk's exact byte range from the FASTQ index") from None
    joined = "\n".join(names) + "\n"
    if "/1\n" in joined or "/2\n" in joined:  # rarely worth a second pass
        names = [n[:-2] if len(n) > 2 and n[-2] == "/" and n[-1] in "12" else n for n in names]
    return names


def _chunk_lines(data: bytes, label: str, where: str) -> list[str]:
    """The lines of one file's chunk, after its last line end an empty string."""
    try:
        text = inflate(data).decode("ascii")
    except (BgzfError, zlib.error, UnicodeDecodeError) as e:
        raise FastqError(f"{where}: the {label} bytes are not the BGZF copy of a FASTQ ({e}): "
                         "fetch the chunk's exact byte range from the FASTQ index") from None
    lines = text.split("\n")
    if lines[-1] or (len(lines) - 1) % 4:
        raise FastqError(f"{where}: the {label} bytes do not hold whole FASTQ records: "
                         "fetch the chunk's exact byte range from the FASTQ index")
    return lines


def read_chunk(data_1: bytes, data_2: bytes, where: str) -> list[tuple[str, str, str, str, str]]:
    """Inflate one chunk's BGZF bytes of each file and return its pairs as
    (name, seq1, qual1, seq2, qual2), in file order; `where` names the chunk in errors.

    ``data_1`` and ``data_2`` are exactly the bytes of a :class:`FastqChunk`'s ``r1`` and
    ``r2`` ranges in the copies. The name is the mates' common name (no comment, no /1 or /2).
    """
    with ThreadPoolExecutor(max_workers=2) as pool:  # zlib releases the GIL: R1 and R2 inflate side by side
        lines = list(pool.map(_chunk_lines, (data_1, data_2), ("R1", "R2"), (where, where)))
    l1, l2 = lines
    if len(l1) != len(l2):
        raise FastqError(f"{where}: R1 holds {len(l1) // 4:,} reads but R2 {len(l2) // 4:,}: "
                         "fetch both files' ranges of the same chunk from the FASTQ index")
    heads_1, heads_2 = l1[0:-1:4], l2[0:-1:4]
    names = _names(heads_1, "R1", where)
    if heads_2 != heads_1:
        names_2 = _names(heads_2, "R2", where)
        if names_2 != names:
            k = next(i for i, (a, b) in enumerate(zip(names, names_2, strict=True)) if a != b)
            raise FastqError(f"{where}: pair {k + 1:,} is named {names[k]!r} in R1 but {names_2[k]!r} in R2: "
                             f"the files are not in the same order or are not mates; {FIX_MATES}")
    return list(zip(names, l1[1::4], l1[3::4], l2[1::4], l2[3::4], strict=True))
