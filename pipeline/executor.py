"""Run one function over many tasks: serially in-process, or through Lithops.

Contract: a runner's :meth:`run` takes a function of one ``task`` dict and a list of
tasks (a function that declares a ``storage`` parameter also gets an open
``lithops.Storage``: Lithops passes the worker's own, built from the worker's
config, so no credentials travel in the tasks; the serial runner passes the one it
was given), returns the results in task order, shows a progress bar while it waits, and
raises :class:`FanOutError` naming every task that still failed after its retries.
After a run, ``attempts`` holds how many times each task was tried, in task order, and
``failed_attempts`` what is known of each task's failed tries (``started``, epoch
seconds, and ``seconds``, as far as the runner saw them; and the ``error``): the run
report draws them.

A ``timeout`` (seconds per call) is enforced by Lithops itself: the worker kills a
call that runs longer and reports a ``TimeoutError``, and the client gives up on a
call whose worker never reports (a lost worker) ``timeout`` + 5 s after it started;
both count as failures and are retried. Lithops cannot see a call whose worker was
lost before starting it, so :class:`LithopsRunner` also gives up on every call still
pending when nothing at all has happened for ``timeout`` + :attr:`~LithopsRunner.stall_grace`
seconds: a run never waits for ever. The serial runner enforces the timeout with
``SIGALRM`` (main thread only; a call busy inside C code is interrupted when it returns).
Each run starts a Lithops session of its own, never one inherited through the
environment (see :func:`_leave_inherited_lithops_session`). Before Lithops writes
anything, its folders are made private (:mod:`functions.core.private_dirs`); with the
localhost backend a watchdog kills the run's job runners and workers if this process
dies mid-run (:mod:`pipeline.watchdog`).
*What* runs (the function, the tasks) is kept apart from *how* it runs, so the same
tests go through both runners. Only :class:`LithopsRunner` knows about Lithops.
"""

from __future__ import annotations

import inspect
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from functions.core.errors import SvcError

logger = logging.getLogger(__name__)

Task = dict[str, Any]


# Regions named in a FanOutError's message; the others are counted (all are in ``failures``).
NAMED_FAILURES = 20


class FanOutError(SvcError, RuntimeError):
    """Some functions failed for good; ``failures`` maps task label to message."""

    def __init__(self, failures: dict[str, str], total: int, retries: int = 0) -> None:
        self.failures = failures
        self.total = total
        self.retries = retries
        labels = list(failures)
        named = ", ".join(labels[:NAMED_FAILURES])
        more = f" and {len(labels) - NAMED_FAILURES} more" if len(labels) > NAMED_FAILURES else ""
        tried = f" (each tried {retries + 1} times)" if retries else ""
        first_label, first = next(iter(failures.items()))
        super().__init__(
            f"{len(failures)} of {total} functions failed{tried}: {named}{more}; "
            f"first error, {first_label}: {first}"
        )

    def reordered(self, labels: list[str]) -> FanOutError:
        """The same failures, named in the order of ``labels`` (the plan's, say)."""
        rank = {label: i for i, label in enumerate(labels)}
        ordered = dict(sorted(self.failures.items(), key=lambda kv: rank.get(kv[0], len(rank))))
        return FanOutError(ordered, self.total, self.retries)


class CallTimeout(TimeoutError):
    """A call ran longer than the runner's timeout (serial runner)."""


def task_label(task: Task) -> str:
    """How errors and logs name a task: its ``label``, else its sample and region."""
    if "label" in task:
        return str(task["label"])
    return f"{task.get('sample', '?')} {task.get('region', {}).get('name', '?')}"


def describe_error(exc: BaseException | None) -> str:
    """One line for a failed call: the exception's type and message."""
    if exc is None:
        return "the function failed without saying why"
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CallTimeout` in this thread after ``seconds`` (main thread, Unix; else no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CallTimeout(f"the function exceeded its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class LineProgress:
    """Progress for a stream that is not a terminal (a log file, a SLURM job's output):
    a whole line every ``every`` seconds and one at the end, never a carriage return.
    ``total`` None: a count without an end known in advance (FASTQ pairs read)."""

    def __init__(self, total: int | None, what: str, unit: str, every: float = 10.0, out: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        unit = unit.strip() or "item"
        self.total, self.what, self.every = total, what, every
        self.unit = unit if unit.endswith("s") else unit + "s"
        self.out = out if out is not None else sys.stderr
        self.n = 0  # as tqdm names it
        self.clock = clock
        self.t0 = self.last = clock()
        self.closed = False

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every and (self.total is None or self.n < self.total):
            self.last = now
            self._line(now)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(self.clock())

    def _line(self, now: float) -> None:
        if self.total is None:
            done = f"{self.n:,} {self.unit}"
        else:
            done = f"{self.n} of {self.total} {self.unit} done ({100 * self.n / max(self.total, 1):.0f} %)"
        self.out.write(f"{self.what}: {done}, {now - self.t0:.0f} s\n")
        self.out.flush()


def progress_bar(total: int | None, show: bool, what: str, unit: str) -> Any:
    """A progress bar on a terminal (tqdm), whole lines elsewhere (:class:`LineProgress`);
    nothing when not ``show`` or when ``total`` is 0."""
    if show and total != 0 and not sys.stderr.isatty():
        return LineProgress(total, what, unit)
    from tqdm import tqdm  # here: only the steps that fan out show a bar (tqdm's import takes 60 ms)

    return tqdm(
        total=total, desc=what, unit=unit, disable=not show or total == 0,
        file=sys.stderr, dynamic_ncols=True,
    )


class SerialRunner:
    """Calls the function in this process, one task after another (debugging, tests)."""

    def __init__(
        self, retries: int = 0, progress: bool = True, storage: Any = None, timeout: float | None = None
    ) -> None:
        self.retries = retries
        self.progress = progress
        self.storage = storage
        self.timeout = timeout
        self.attempts: list[int] = []
        self.failed_attempts: list[list[dict[str, Any]]] = []

    def __repr__(self) -> str:
        return f"SerialRunner(retries={self.retries}, timeout={self.timeout})"

    def run(self, func: Callable[[Task], Any], tasks: list[Task], what: str = "calling",
            unit: str = "region") -> list[Any]:
        results: list[Any] = []
        failures: dict[str, str] = {}
        self.attempts, self.failed_attempts = [], []
        extra = {"storage": self.storage} if "storage" in inspect.signature(func).parameters else {}
        with progress_bar(len(tasks), self.progress, what, unit) as bar:
            for task in tasks:
                failed: list[dict[str, Any]] = []
                for attempt in range(self.retries + 1):
                    started = time.time()
                    try:
                        with _time_limit(self.timeout):
                            results.append(func(task, **extra))
                        break
                    except Exception as exc:  # report, retry, then give up on this task
                        logger.debug("attempt %d of %s failed: %s", attempt + 1, task_label(task), exc)
                        failed.append(_attempt(started, time.time(), exc))
                        if attempt == self.retries:
                            failures[task_label(task)] = describe_error(exc)
                            results.append(None)
                self.attempts.append(attempt + 1)
                self.failed_attempts.append(failed)
                bar.update(1)
        if failures:
            raise FanOutError(failures, len(tasks), self.retries)
        return results


class LithopsRunner:
    """Maps the function over the tasks with a Lithops ``FunctionExecutor``.

    Failed calls are retried by Lithops' ``RetryingFunctionExecutor``; ``timeout``
    is passed to Lithops as each call's limit (None: the Lithops config's
    ``execution_timeout``).
    """

    #: Seconds of nothing happening, beyond the call time limit, after which the
    #: calls still pending are given up on (their worker was lost before it reported).
    stall_grace: float = 30.0
    #: Seconds between two looks at the calls' statuses.
    poll_seconds: float = 0.2

    def __init__(
        self, lithops_config: dict[str, Any], retries: int = 2, progress: bool = True, timeout: float | None = None
    ) -> None:
        self.lithops_config = lithops_config
        self.retries = retries
        self.progress = progress
        self.timeout = timeout
        self.attempts: list[int] = []
        self.failed_attempts: list[list[dict[str, Any]]] = []

    def __repr__(self) -> str:
        lt = self.lithops_config.get("lithops", {})
        return (f"LithopsRunner(backend={lt.get('backend')!r}, storage={lt.get('storage')!r}, "
                f"retries={self.retries}, timeout={self.timeout})")

    def call_limit(self, config: dict[str, Any]) -> float:
        """Seconds a call may run: ours, else the one Lithops applies (its loaded config)."""
        return float(self.timeout or config.get("lithops", {}).get("execution_timeout") or 1800)

    def run(self, func: Callable[[Task], Any], tasks: list[Task], what: str = "calling",
            unit: str = "region") -> list[Any]:
        self.attempts = []
        self.failed_attempts = [[] for _ in tasks]
        if not tasks:
            return []
        import lithops
        from lithops.retries import RetryingFunctionExecutor
        from lithops.wait import ALWAYS

        from functions.core.private_dirs import make_lithops_dirs_private
        from functions.core.storage import copy_lithops_config
        from pipeline.watchdog import Watchdog

        cfg = copy_lithops_config(self.lithops_config)
        _leave_inherited_lithops_session()
        make_lithops_dirs_private()
        if preloads(cfg):
            cfg["localhost"] = {**cfg.get("localhost", {}), "runtime": preloading_runtime()}
        timeout = None if self.timeout is None else max(1, round(self.timeout))
        # Lithops localhost runs its jobs in sessions of their own: if this process is
        # killed, the watchdog kills them (see pipeline.watchdog).
        localhost = cfg.get("lithops", {}).get("backend") == "localhost"
        with (_localhost_turn() if localhost else nullcontext(), Watchdog() if localhost else nullcontext(),
              lithops.FunctionExecutor(config=cfg) as fexec):
            stall = self.call_limit(fexec.config) + self.stall_grace
            rexec = RetryingFunctionExecutor(fexec)
            futures = rexec.map(func, [{"task": t} for t in tasks], retries=self.retries, timeout=timeout)
            pending = list(futures)
            calls = {id(f): f.response_future for f in futures}  # the call each task waits on now
            lost: set[int] = set()
            with progress_bar(len(tasks), self.progress, what, unit) as bar:
                last_event = time.monotonic()
                while pending:
                    # ALWAYS: look once and return, so that this loop keeps the time
                    # (Lithops' own wait timeout is a SIGALRM that abandons the job).
                    done, pending = rexec.wait(
                        pending, throw_except=False, return_when=ALWAYS, show_progressbar=False,
                    )
                    retried = self._note_retries(tasks, futures, calls, self.failed_attempts)
                    if done or retried:
                        last_event = time.monotonic()
                        bar.update(len(done))
                    elif time.monotonic() - last_event > stall:
                        lost = {id(f) for f in pending}
                        logger.warning(
                            "no call reported back for %.0f s: giving up on the %d still pending", stall, len(lost)
                        )
                        break
                    else:
                        time.sleep(self.poll_seconds)
            results: list[Any] = []
            failures: dict[str, str] = {}
            for task, fut in zip(tasks, futures, strict=True):
                if id(fut) in lost:
                    failures[task_label(task)] = (
                        f"no answer from its function for {stall:.0f} s: its worker was lost, or never started it"
                    )
                    self.attempts.append(fut.failure_count + 1)
                    results.append(None)
                elif fut.error:
                    failures[task_label(task)] = describe_error(fut._exception[1] if fut._exception else None)
                    self.attempts.append(fut.failure_count)
                    results.append(None)
                else:
                    self.attempts.append(fut.failure_count + 1)
                    results.append(fut.result(throw_except=False))
        for label, message in failures.items():
            logger.debug("%s failed for good: %s", label, message)
        if failures:
            raise FanOutError(failures, len(tasks), self.retries)
        return results

    @staticmethod
    def _note_retries(tasks: list[Task], futures: list[Any], calls: dict[int, Any],
                      failed: list[list[dict[str, Any]]]) -> int:
        """Log each failed call that Lithops has just resubmitted (with why it failed) and
        note it in ``failed`` (when its worker ran, as Lithops recorded it); how many."""
        n = 0
        for i, (task, fut) in enumerate(zip(tasks, futures, strict=True)):
            before = calls[id(fut)]
            if fut.response_future is not before:
                exc = before._exception[1] if before.error and before._exception else None
                logger.debug("%s: attempt %d failed, retrying: %s", task_label(task), fut.failure_count,
                             describe_error(exc))
                stats = before.stats or {}
                start = stats.get("worker_start_tstamp")
                if start is not None:
                    failed[i].append(_attempt(start, stats.get("worker_end_tstamp") or time.time(), exc))
                calls[id(fut)] = fut.response_future
                n += 1
        return n


@contextmanager
def _localhost_turn() -> Iterator[None]:
    """Hold this machine's turn to run Lithops localhost functions (a lock in Lithops'
    temporary folder, released however this process ends).

    Every localhost executor replaces Lithops' own copy of its package in that folder
    when it starts, while the job runners of another run (two runs sharing one
    ``$TMPDIR``, hence one local store) import from it: they failed with
    ``No module named 'lithops.monitoring'`` and their run waited on them for ever. One
    fan-out at a time per folder costs nothing on one machine, whose cores the first
    run's workers already use.
    """
    import fcntl

    from lithops.constants import LITHOPS_TEMP_DIR

    os.makedirs(LITHOPS_TEMP_DIR, exist_ok=True)
    path = os.path.join(LITHOPS_TEMP_DIR, ".svc-localhost-fanout.lock")
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another run's functions are running on this machine (they share %s): waiting for them "
                        "to finish", LITHOPS_TEMP_DIR)
            t0 = time.monotonic()
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            logger.info("waited %.1f s for the other run's functions", time.monotonic() - t0)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _attempt(started: float, ended: float, exc: BaseException | None) -> dict[str, Any]:
    """A failed try as the run report draws it."""
    return {"started": round(started, 3), "seconds": round(max(0.0, ended - started), 3),
            "error": describe_error(exc)}


# Lithops names each executor "<session>-<n>" and its calls' status and result objects
# after it, and hands its session on to child processes through these variables.
_LITHOPS_SESSION_VARS = ("__LITHOPS_SESSION_ID", "__LITHOPS_TOTAL_EXECUTORS")


def preloads(cfg: dict[str, Any]) -> bool:
    """Whether the calls run through :func:`preloading_runtime`: Lithops localhost
    compute with its local store, and no runtime the config names.

    Not with an S3 store (Ceph's gateway): the process Lithops forks for a call
    shares its worker's S3 connections, and the worker reports the call's start on
    them while the call begins its own GETs. A call that first spends 0.08 s on its
    imports rarely meets that report; one that starts at once did, in the harness:
    "invalid XML received" from the gateway, a GET stalled for 10 s, and the
    5 Mb run took 45-62 s instead of 25 s.
    """
    lt = cfg.get("lithops", {})
    return (lt.get("backend") == "localhost" and lt.get("storage") == "localhost"
            and not cfg.get("localhost", {}).get("runtime"))


def preloading_runtime() -> str:
    """An executable that runs Python as :mod:`functions.preload` does: Lithops
    localhost's runtime when the config names none (a Lithops runtime is one
    executable path, without arguments).

    A two-line shell script in Lithops' private temporary folder, named by its
    content, so that Lithops' cached metadata of the runtime stays valid across runs.
    """
    import hashlib

    from lithops import constants

    script = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m functions.preload \"$@\"\n"
    digest = hashlib.sha256(script.encode()).hexdigest()[:12]
    path = os.path.join(constants.LITHOPS_TEMP_DIR, f"svc-python-{digest}")
    if not os.access(path, os.X_OK):
        part = f"{path}.{os.getpid()}.part"
        with open(part, "w") as out:
            out.write(script)
        os.chmod(part, 0o700)
        os.replace(part, path)  # whole or absent, whoever else writes it at once
    return path


def _leave_inherited_lithops_session() -> None:
    """Do not join a Lithops session inherited from the process that started this one.

    Two runs started by one process that used Lithops (a notebook, a test session)
    would otherwise both name their executor "<session>-<n+1>": after a killed run,
    the next one found the dead run's call statuses and results in the store under
    its own executor's name and took them for its own (other regions' stats).
    Within one process Lithops keeps its session and counter, so ids stay unique.
    """
    for var in _LITHOPS_SESSION_VARS:
        os.environ.pop(var, None)


def make_runner(executor: dict[str, Any], lithops_config: dict[str, Any]) -> SerialRunner | LithopsRunner:
    """The serial runner for runner ``serial``, else Lithops (runner ``snakemake`` only
    changes how the calls are scattered: see ``pipeline.cli.cmd_call``)."""
    if executor.get("runner", "lithops") == "serial":
        from functions.core.storage import open_lithops_storage

        storage = open_lithops_storage(lithops_config)
        return SerialRunner(executor.get("retries", 0), executor.get("progress", True), storage,
                            executor.get("timeout"))
    return LithopsRunner(lithops_config, executor.get("retries", 2), executor.get("progress", True),
                         executor.get("timeout"))
