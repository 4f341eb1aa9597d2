"""Results that appear whole or not at all, in folders checked before any work.

Contract: :func:`atomic_outputs` hands out temporary paths for a set of final output
files, each in the final file's folder under a hidden name that no result glob
matches (``results/.sampleA.vcf.gz.tmp-<pid>-<n>``: ``results/*.vcf.gz`` does not
match it). When the block ends normally the temporaries are renamed to their final
names; when it raises, they are removed and the error goes on, so a failed step
leaves no file that looks like a result. Temporaries left by a process killed
outright (SIGKILL cannot be caught) are removed the next time the same output is
written. A full disk, a read-only folder or a folder without write permission
becomes :class:`OutputError`, one line naming the folder and, for a full disk, the
bytes the step needed and the bytes free.

:func:`check_writable` proves that a folder (or, when it does not exist yet, the
nearest folder above it, where it will be created) accepts a new file, by creating
and removing one: permission bits, read-only mounts and access rules all answer,
even for root, whom ``os.access`` never refuses.
"""

from __future__ import annotations

import errno
import glob
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from functions.core.errors import SvcError

# Errors that say the folder, not the data, is the problem.
_FOLDER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_counter = itertools.count()


class OutputError(SvcError, OSError):
    """An output cannot be written where the config puts it; the message says why and what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


def temp_name(final: str) -> str:
    """The hidden temporary path of ``final``, in the same folder (so the rename is atomic)."""
    folder, name = os.path.split(os.path.abspath(final))
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}-{next(_counter)}")


def _stale_temps(final: str) -> list[str]:
    folder, name = os.path.split(os.path.abspath(final))
    return glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.tmp-*"))


def _nearest_existing(folder: str) -> str:
    folder = os.path.abspath(folder)
    while not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def check_writable(folder: str) -> None:
    """Raise :class:`OutputError` unless a file can be created in ``folder`` (or where it will be made)."""
    where = _nearest_existing(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".svc-write-check-", dir=where)
    except OSError as exc:
        shown = os.path.abspath(folder)
        via = "" if where == shown else f" (it would be created in {where})"
        raise OutputError(
            exc.errno, f"output folder {shown} is not writable{via}: {exc.strerror}; make it writable "
            "(or free the disk), or run the workflow from a folder where it can write"
        ) from exc
    os.close(fd)
    os.remove(probe)


def folder_error(exc: OSError, path: str, needed: int | None = None) -> OSError:
    """``exc`` as an :class:`OutputError` naming ``path``'s folder when the folder is the
    problem (full, read-only, no permission); else ``exc`` itself."""
    if isinstance(exc, OutputError) or exc.errno not in _FOLDER_ERRNOS:
        return exc
    folder = os.path.dirname(os.path.abspath(path))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(folder).free
        need = f"about {needed:,} bytes" if needed else "more space"
        return OutputError(
            exc.errno, f"no space left in {folder} while writing {os.path.basename(path)}: the step needs "
            f"{need} there and {free:,} bytes are free; free some space (or point the workflow at a larger "
            "disk) and run it again"
        )
    return OutputError(
        exc.errno, f"cannot write {os.path.basename(path)} in {folder}: {exc.strerror}; make the folder "
        "writable and run the workflow again"
    )


def check_space(path: str, needed: int) -> None:
    """Raise :class:`OutputError` now if the folder of ``path`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(_nearest_existing(os.path.dirname(os.path.abspath(path)))).free
    if free < needed:
        raise folder_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path, needed)


@contextmanager
def atomic_outputs(*finals: str, needed: int | None = None) -> Iterator[list[str]]:
    """Temporary paths for ``finals``; renamed to them (in the order given) if the block
    succeeds, removed if it raises. ``needed``: bytes the outputs will take, if known
    (checked against the free space first, and named in a full-disk error)."""
    for final in finals:
        for stale in _stale_temps(final):
            os.remove(stale)
    if needed:
        check_space(finals[-1], needed)
    temps = [temp_name(f) for f in finals]
    try:
        try:
            yield temps
        except OSError as exc:
            raise folder_error(exc, finals[-1], needed) from exc
        for tmp, final in zip(temps, finals, strict=True):
            try:
                os.replace(tmp, final)
            except OSError as exc:
                raise folder_error(exc, final, needed) from exc
    except BaseException:
        for tmp in temps:
            if os.path.lexists(tmp):
                os.remove(tmp)
        raise
