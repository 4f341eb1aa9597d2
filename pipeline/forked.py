"""Run a C-bound pass (htslib through pysam) in a forked process beside the caller's own.

Contract: :func:`forked` starts ``fn(*args, **kwargs)`` in a child forked from this
process (so nothing is imported or pickled again but the result) and returns a function
that waits for it and returns its result, or raises :class:`ForkedError` with the
child's error. pysam holds the GIL while bcftools or tabix run, so threads cannot
overlap them; two processes can, on two cores. Used by the merge: its VCF's index and
its two ``bcftools stats`` passes are independent reads of one file.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

from functions.core.errors import SvcError


class ForkedError(SvcError, RuntimeError):
    """The forked pass failed (its message is the child's error)."""


def forked(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def run() -> None:
        try:
            send.send((True, fn(*args, **kwargs)))
        except BaseException as exc:  # noqa: BLE001 -- every failure goes back to the parent
            send.send((False, f"{type(exc).__name__}: {exc}"))

    child = ctx.Process(target=run, daemon=True)
    child.start()
    send.close()

    def wait() -> Any:
        try:
            ok, value = receive.recv()
        except EOFError:
            ok, value = False, "the process ended without an answer"
        finally:
            child.join()
            receive.close()
        if not ok:
            raise ForkedError(f"{getattr(fn, '__name__', fn)}: {value}")
        return value

    return wait
