"""The one base of every error a user is meant to read.

Contract: an :class:`SvcError` carries a message that names the problem (the file,
sample, region or key involved) and how to fix it. The command-line edge
(:mod:`pipeline.cli`) prints any of them as one ``error: ...`` line; any other
exception is a bug, shown with its traceback and a request to report it.
"""

from __future__ import annotations


class SvcError(Exception):
    """An error whose message is meant for the user: what is wrong, and the fix."""
