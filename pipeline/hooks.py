"""What the workflow does when Snakemake has finished its jobs (its onsuccess and
onerror hooks).

Snakemake's scheduler (9.x) re-evaluates after each pass through a ``threading.Timer``
of its ``--max-jobs-per-timespan`` span (1 s by default), and those threads are not
daemons: after the last job the interpreter waits for the last of them before it
exits, a second or more of every run's wall (1.0-1.35 s measured on this workflow,
whatever its size). Once the jobs are done nothing is left to schedule, so the hooks
cancel those timers, and only those: a timer is Snakemake's when its function was
defined in the scheduler's module.
"""

from __future__ import annotations

import threading

SCHEDULER_MODULE = "snakemake.scheduling.job_scheduler"


def cancel_scheduler_timers() -> int:
    """Cancel the scheduler's pending re-evaluation timers; how many."""
    n = 0
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer) and getattr(thread.function, "__module__", None) == SCHEDULER_MODULE:
            thread.cancel()
            n += 1
    return n
