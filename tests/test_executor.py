"""Runners: results in task order, retries, and failures reported by region —
the same checks through the serial runner and through Lithops."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import LITHOPS_LOCAL

from pipeline.executor import FanOutError, LithopsRunner, SerialRunner


def square_or_fail(task: dict) -> int:
    if task["region"]["name"].startswith("bad"):
        raise ValueError(f"cannot read {task['region']['name']}")
    return task["x"] ** 2


def flaky(task: dict) -> int:
    """Fails on the first attempt of each task (marker file), succeeds after."""
    marker = task["marker"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("transient")
    return task["x"]


RUNNERS = {
    "serial": lambda retries: SerialRunner(retries=retries, progress=False),
    "lithops": lambda retries: LithopsRunner(LITHOPS_LOCAL, retries=retries, progress=False),
}


def tasks(names: list[str]) -> list[dict]:
    return [{"sample": "s", "region": {"name": n}, "x": i} for i, n in enumerate(names)]


@pytest.mark.parametrize("kind", RUNNERS)
def test_results_come_back_in_task_order(kind: str) -> None:
    assert RUNNERS[kind](0).run(square_or_fail, tasks([f"r{i}" for i in range(7)])) == [i * i for i in range(7)]


@pytest.mark.parametrize("kind", RUNNERS)
def test_failures_name_every_failed_region(kind: str) -> None:
    with pytest.raises(FanOutError) as err:
        RUNNERS[kind](1).run(square_or_fail, tasks(["ok1", "bad:1-10", "ok2", "bad:20-30"]))
    assert set(err.value.failures) == {"s bad:1-10", "s bad:20-30"}
    assert "2 of 4 functions failed" in str(err.value)
    assert "cannot read bad:1-10" in str(err.value)


@pytest.mark.parametrize("kind", RUNNERS)
def test_a_failed_call_is_retried(kind: str, tmp_path) -> None:
    ts = [{"sample": "s", "region": {"name": f"r{i}"}, "x": i, "marker": str(tmp_path / f"m{i}")} for i in range(3)]
    t0 = time.time()
    runner = RUNNERS[kind](1)
    assert runner.run(flaky, ts) == [0, 1, 2]
    # Each task's failed try is recorded (for the run report): when it ran, and why it failed.
    assert runner.attempts == [2, 2, 2]
    for (failed,) in runner.failed_attempts:
        assert t0 - 1 <= failed["started"] <= time.time() + 0.001 and 0 <= failed["seconds"] < 30  # ms-rounded
        assert failed["error"] == "RuntimeError: transient"
    for t in ts:
        os.remove(t["marker"])
    with pytest.raises(FanOutError, match="transient"):
        RUNNERS[kind](0).run(flaky, ts)


def sleepy(task: dict) -> int:
    time.sleep(task["sleep"])
    return task["x"]


def lose_worker_once(task: dict) -> int:
    """The first attempt kills the Lithops worker process running it (and itself): a lost worker."""
    marker = task["marker"]
    if task["lose"] and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    return task["x"]


def test_serial_runner_stops_a_call_at_its_time_limit() -> None:
    ts = [{"sample": "s", "region": {"name": f"r{i}"}, "x": i, "sleep": s} for i, s in enumerate([0, 30, 0])]
    t0 = time.monotonic()
    with pytest.raises(FanOutError) as err:
        SerialRunner(retries=1, progress=False, timeout=0.3).run(sleepy, ts)
    assert time.monotonic() - t0 < 5
    assert err.value.failures == {"s r1": "CallTimeout: the function exceeded its time limit of 0.3 s"}


def test_lithops_runner_never_waits_for_ever_on_lost_workers(tmp_path) -> None:
    # Both workers of the job are lost with the first two calls: Lithops gives up on
    # those two at their time limit (+5 s) and retries them; nobody ever runs the
    # third, which the runner gives up on when nothing has happened for the time
    # limit + stall_grace (which must exceed Lithops' own 5 s, or the runner would
    # give up on the first two before Lithops could retry them).
    ts = [{"sample": "s", "region": {"name": f"r{i}"}, "x": i, "lose": i < 2, "marker": str(tmp_path / f"m{i}")}
          for i in range(3)]
    runner = LithopsRunner(LITHOPS_LOCAL, retries=1, progress=False, timeout=1)
    runner.stall_grace = 6
    t0 = time.monotonic()
    with pytest.raises(FanOutError) as err:
        runner.run(lose_worker_once, ts)
    assert time.monotonic() - t0 < 30
    lost = "no answer from its function for 7 s: its worker was lost, or never started it"
    assert err.value.failures == {"s r2": lost}
    assert runner.attempts == [2, 2, 1]


def test_progress_to_a_file_is_whole_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal (a log file, a SLURM job's output): a line every few seconds and
    one at the end, no carriage return; on a terminal, tqdm's bar."""
    import io

    from pipeline import executor

    out = io.StringIO()
    clock = iter([0.0, 1.0, 11.0, 12.0, 30.0, 31.0])
    with executor.LineProgress(4, "calling", "region", every=10.0, out=out, clock=lambda: next(clock)) as bar:
        for _ in range(4):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == ["calling: 2 of 4 regions done (50 %), 11 s", "calling: 4 of 4 regions done (100 %), 31 s"]
    out = io.StringIO()
    clock = iter([0.0, 12.0, 13.0])
    with executor.LineProgress(None, "chunking A's FASTQs", " pairs", out=out, clock=lambda: next(clock)) as bar:
        bar.update(50_000 - bar.n)
    assert out.getvalue().splitlines() == ["chunking A's FASTQs: 50,000 pairs, 12 s",
                                           "chunking A's FASTQs: 50,000 pairs, 13 s"]
    monkeypatch.setattr(executor.sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(executor.progress_bar(5, True, "calling", "region"), executor.LineProgress)
    assert isinstance(executor.progress_bar(None, True, "chunking", "pairs"), executor.LineProgress)
    monkeypatch.setattr(executor.sys.stderr, "isatty", lambda: True, raising=False)
    assert not isinstance(executor.progress_bar(5, True, "calling", "region"), executor.LineProgress)


def preloaded(task: dict) -> bool:
    """Whether the calling function's modules were imported before this call began."""
    import sys

    return "functions.call_region" in sys.modules and "pysam" in sys.modules


def test_localhost_calls_start_with_the_functions_modules_imported() -> None:
    """The call step's localhost runtime (functions/preload.py) imports the functions'
    modules once in Lithops' runner, so the calls it forks do not import them each; a
    runtime the config names is used as it is (and its calls import for themselves)."""
    import sys

    runner = LithopsRunner(LITHOPS_LOCAL, retries=0, progress=False)
    assert runner.run(preloaded, tasks(["a", "b", "c"])) == [True, True, True]
    own = {**LITHOPS_LOCAL, "localhost": {**LITHOPS_LOCAL["localhost"], "runtime": sys.executable}}
    assert LithopsRunner(own, retries=0, progress=False).run(preloaded, tasks(["a", "b"])) == [False, False]


def test_no_preloading_with_an_s3_store() -> None:
    """With an S3 store a forked call shares its worker's S3 connections: the calls keep
    their own imports (which used to keep them off the worker's requests)."""
    from pipeline.executor import preloads

    assert preloads(LITHOPS_LOCAL)
    assert not preloads({**LITHOPS_LOCAL, "lithops": {**LITHOPS_LOCAL["lithops"], "storage": "ceph"}})
    assert not preloads({**LITHOPS_LOCAL, "localhost": {"runtime": "/usr/bin/python3"}})
