"""Capture what C code (htslib, bcftools, samtools inside pysam) writes to stderr.

Contract: :func:`stderr_into` sends file descriptor 2 into a binary file for the
duration of a ``with`` block and restores it after, so a failed tool's own words
can be put into one error line instead of leaking onto the console.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def stderr_into(sink: IO[bytes]) -> Iterator[None]:
    """Send what C code writes to file descriptor 2 into ``sink`` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
