"""Runners: results in task order, retries, and failures reported by region —
the same checks through the serial runner and through Lithops."""

from __future__ import annotations

import os

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
    assert RUNNERS[kind](1).run(flaky, ts) == [0, 1, 2]
    for t in ts:
        os.remove(t["marker"])
    with pytest.raises(FanOutError, match="transient"):
        RUNNERS[kind](0).run(flaky, ts)
