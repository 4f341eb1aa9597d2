"""Run one function over many tasks: serially in-process, or through Lithops.

Contract: a runner's :meth:`run` takes a function of one ``task`` dict and a list of
tasks (a function that declares a ``storage`` parameter also gets an open
``lithops.Storage``: Lithops passes the worker's own, built from the worker's
config, so no credentials travel in the tasks; the serial runner passes the one it
was given), returns the results in task order, shows a progress bar while it waits, and
raises :class:`FanOutError` naming every task that still failed after its retries.
*What* runs (the function, the tasks) is kept apart from *how* it runs, so the same
tests go through both runners. Only :class:`LithopsRunner` knows about Lithops.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

logger = logging.getLogger(__name__)

Task = dict[str, Any]


class FanOutError(RuntimeError):
    """Some functions failed for good; ``failures`` maps task label to message."""

    def __init__(self, failures: dict[str, str], total: int) -> None:
        self.failures = failures
        first = "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        super().__init__(f"{len(failures)} of {total} functions failed: {first}{more}")


def task_label(task: Task) -> str:
    return f"{task.get('sample', '?')} {task.get('region', {}).get('name', '?')}"


def _bar(total: int, show: bool, what: str) -> tqdm:
    return tqdm(
        total=total, desc=what, unit="region", disable=not show or total == 0,
        file=sys.stderr, dynamic_ncols=True,
    )


class SerialRunner:
    """Calls the function in this process, one task after another (debugging, tests)."""

    def __init__(self, retries: int = 0, progress: bool = True, storage: Any = None) -> None:
        self.retries = retries
        self.progress = progress
        self.storage = storage

    def __repr__(self) -> str:
        return f"SerialRunner(retries={self.retries})"

    def run(self, func: Callable[[Task], Any], tasks: list[Task], what: str = "calling") -> list[Any]:
        results: list[Any] = []
        failures: dict[str, str] = {}
        extra = {"storage": self.storage} if "storage" in inspect.signature(func).parameters else {}
        with _bar(len(tasks), self.progress, what) as bar:
            for task in tasks:
                for attempt in range(self.retries + 1):
                    try:
                        results.append(func(task, **extra))
                        break
                    except Exception as exc:  # report, retry, then give up on this task
                        logger.debug("attempt %d of %s failed: %s", attempt + 1, task_label(task), exc)
                        if attempt == self.retries:
                            failures[task_label(task)] = str(exc)
                            results.append(None)
                bar.update(1)
        if failures:
            raise FanOutError(failures, len(tasks))
        return results


class LithopsRunner:
    """Maps the function over the tasks with a Lithops ``FunctionExecutor``.

    Failed calls are retried by Lithops' ``RetryingFunctionExecutor``.
    """

    def __init__(self, lithops_config: dict[str, Any], retries: int = 2, progress: bool = True) -> None:
        self.lithops_config = lithops_config
        self.retries = retries
        self.progress = progress

    def __repr__(self) -> str:
        lt = self.lithops_config.get("lithops", {})
        return f"LithopsRunner(backend={lt.get('backend')!r}, storage={lt.get('storage')!r}, retries={self.retries})"

    def run(self, func: Callable[[Task], Any], tasks: list[Task], what: str = "calling") -> list[Any]:
        if not tasks:
            return []
        import lithops
        from lithops.retries import RetryingFunctionExecutor
        from lithops.wait import ANY_COMPLETED

        cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in self.lithops_config.items()}
        with lithops.FunctionExecutor(config=cfg) as fexec:
            rexec = RetryingFunctionExecutor(fexec)
            futures = rexec.map(func, [{"task": t} for t in tasks], retries=self.retries)
            pending = list(futures)
            with _bar(len(tasks), self.progress, what) as bar:
                while pending:
                    done, pending = rexec.wait(
                        pending, throw_except=False, return_when=ANY_COMPLETED,
                        show_progressbar=False, wait_dur_sec=0.2,
                    )
                    bar.update(len(done))
            results: list[Any] = []
            failures: dict[str, str] = {}
            for task, fut in zip(tasks, futures, strict=True):
                if fut.error:
                    exc = fut._exception[1] if fut._exception else None
                    failures[task_label(task)] = str(exc) if exc else "function failed"
                    results.append(None)
                else:
                    results.append(fut.result(throw_except=False))
        if failures:
            raise FanOutError(failures, len(tasks))
        return results


def make_runner(executor: dict[str, Any], lithops_config: dict[str, Any]) -> SerialRunner | LithopsRunner:
    if executor.get("runner", "lithops") == "serial":
        from pipeline.storage import open_lithops_storage

        storage = open_lithops_storage(lithops_config)
        return SerialRunner(executor.get("retries", 0), executor.get("progress", True), storage)
    return LithopsRunner(lithops_config, executor.get("retries", 2), executor.get("progress", True))
