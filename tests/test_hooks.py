"""The workflow's onsuccess/onerror hooks cancel Snakemake's pending scheduler timers,
and only those (pipeline/hooks.py)."""

from __future__ import annotations

import inspect
import threading
import types

from pipeline.hooks import SCHEDULER_MODULE, cancel_scheduler_timers


def _function_of(module: str) -> types.FunctionType:
    """A function that, like Snakemake's timer lambda, was defined in ``module``."""
    code = compile("def release():\n    pass\n", "<test>", "exec")
    space: dict[str, object] = {"__name__": module}
    exec(code, space)
    fn = space["release"]
    assert isinstance(fn, types.FunctionType)
    return fn


def test_cancels_the_schedulers_timers_and_no_other() -> None:
    ran: list[str] = []
    scheduler = threading.Timer(30, _function_of(SCHEDULER_MODULE))
    other = threading.Timer(30, lambda: ran.append("other"))
    scheduler.start()
    other.start()
    try:
        assert cancel_scheduler_timers() == 1
        scheduler.join(timeout=5)
        assert not scheduler.is_alive()  # the interpreter no longer waits for it
        assert other.is_alive()
    finally:
        other.cancel()
        other.join(timeout=5)
    assert not ran


def test_snakemake_still_schedules_through_such_timers() -> None:
    """The hook relies on how Snakemake's scheduler re-evaluates: a threading.Timer whose
    function is defined in its module. An upgrade that changes this fails here."""
    from snakemake.scheduling import job_scheduler

    assert job_scheduler.__name__ == SCHEDULER_MODULE
    source = inspect.getsource(job_scheduler.JobScheduler._schedule_reevalutation)
    assert "threading.Timer(" in source and "lambda" in source
