"""Keep the folders Lithops writes credentials into readable by their owner only.

Contract: :func:`make_lithops_dirs_private` is called wherever the pipeline opens
Lithops (a ``FunctionExecutor`` or a ``Storage``), before Lithops writes anything
there. Lithops writes the full storage config, secrets included, into files of mode
0644 under its temp folder (``lithops.constants.LITHOPS_TEMP_DIR``,
``$TMPDIR/lithops-$USER``: each job's ``*-job.json``, the cleaner's requests) and keeps
a cache under ``~/.lithops``. Each folder is created with mode 0700, or set to 0700 if
it exists with a looser mode, so other users cannot reach any file inside, whatever
its own mode. A folder (or a link to one) owned by another user is refused with
:class:`PrivateDirError`: that user could read what Lithops writes there. A home
folder that is missing or read-only is left alone (Lithops cannot write there either).
"""

from __future__ import annotations

import errno
import os
import stat

from functions.core.storage import StorageError

PRIVATE_MODE = 0o700


class PrivateDirError(StorageError):
    """A folder for Lithops' files that this user cannot keep private."""


def make_private_dir(path: str, create: bool = True) -> None:
    """Make ``path`` a folder of ours with mode 0700 (created if missing and ``create``)."""
    if create:
        try:
            os.mkdir(path, PRIVATE_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EROFS, errno.EACCES):
                raise
    try:
        link, st = os.lstat(path), os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise PrivateDirError(f"{path} is a link to nothing: remove it, or set TMPDIR to a folder of your "
                                  "own") from None
        return
    me = os.geteuid()
    for what in (link, st):
        if what.st_uid != me:
            raise PrivateDirError(
                f"{path} belongs to another user (uid {what.st_uid}), who could read the credentials Lithops "
                "writes there: remove it, or set TMPDIR (HOME for ~/.lithops) to a folder of your own"
            )
    if not stat.S_ISDIR(st.st_mode):
        raise PrivateDirError(f"{path} is not a folder, but Lithops keeps its files there: remove it, or set "
                              "TMPDIR to a folder of your own")
    if stat.S_IMODE(st.st_mode) & 0o077:  # group or others may enter
        os.chmod(path, PRIVATE_MODE)


def make_lithops_dirs_private() -> None:
    """Lithops' temp folder and ``~/.lithops``: ours, mode 0700 (see the module's contract)."""
    from lithops import constants  # computed from tempfile.gettempdir() when lithops is imported

    make_private_dir(constants.LITHOPS_TEMP_DIR)
    make_private_dir(constants.CONFIG_DIR)
