"""Where a run's time went (pipeline/phases.py): the breakdown's rules on a made-up
run, checked by hand; a real run's breakdown is checked in tests/test_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.phases import (
    FUNCTIONS,
    SNAKEMAKE,
    Breakdown,
    FunctionRun,
    Step,
    breakdown,
    process_start,
    step_kind,
)


def test_each_instant_goes_to_the_most_specific_thing_running() -> None:
    steps = [Step("stage_sampleA", 0.0, 1.0, 3.0), Step("plan_sampleA", 2.5, 2.8, 3.5), Step("call", 5.0, 5.5, 9.0)]
    functions = [FunctionRun("r1", 6.0, 1.0, {"engine": 0.8, "fetch_bam": 0.1}),
                 FunctionRun("r2", 6.5, 1.5, {"engine": 1.2})]
    b = breakdown(steps, functions, t0=-1.0, t1=10.0)
    assert b.wall == 11.0
    assert sum(b.pieces.values()) == pytest.approx(b.wall)
    assert b.pieces[SNAKEMAKE] == pytest.approx(1.0 + 1.5 + 1.0)  # before, between 3.5 and 5, after 9
    assert b.pieces["step start-up (interpreter, imports): stage"] == pytest.approx(1.0)
    # plan's start-up (2.5-2.8) overlaps stage's work: work is more specific
    assert b.pieces["step work: stage"] == pytest.approx(2.0)
    assert "step start-up (interpreter, imports): plan" not in b.pieces
    assert b.pieces["step work: plan"] == pytest.approx(0.5)
    assert b.pieces["step start-up (interpreter, imports): call"] == pytest.approx(0.5)
    assert b.pieces[FUNCTIONS] == pytest.approx(2.0)  # 6.0 to 8.0, two overlapping functions
    assert b.pieces["step work: call"] == pytest.approx(3.5 - 2.0)
    assert b.fixed == pytest.approx(9.0)
    assert b.function_phases == {"engine": 2.0, "fetch_bam": 0.1} and b.function_seconds == 2.5
    assert "fixed cost" in b.table() and b.as_dict()["fixed"] == 9.0


def test_without_launch_and_exit_the_breakdown_spans_the_steps() -> None:
    b = breakdown([Step("report", 1.0, 1.5, 2.0)], [])
    assert (b.t0, b.t1) == (1.0, 2.0) and isinstance(b, Breakdown) and b.fixed == 1.0


def test_this_process_knows_when_it_started() -> None:
    import time

    started = process_start()
    assert started is not None and time.time() - 3600 < started <= time.time()


def test_a_new_process_knows_when_it_started_to_a_tenth_of_a_second() -> None:
    """A process' start lies just before the first line it runs: the interpreter's own
    start-up (about 20 ms) and the clock tick apart. (The boot time in whole seconds
    put it up to a second early.)"""
    import subprocess
    import sys

    code = ("import time; first = time.time()\n"
            "from pipeline.phases import process_start\n"
            "print(first - process_start())")
    for _ in range(3):
        res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).resolve().parent.parent)
        assert res.returncode == 0, res.stderr
        assert -0.02 <= float(res.stdout) < 0.1, res.stdout


@pytest.mark.parametrize("log, kind", [("merge_mixture", "merge"), ("stage_reference", "stage_reference"),
                                       ("stage_sampleA", "stage"), ("call_scatter_3", "call_scatter"),
                                       ("call", "call"), ("plan_joint", "plan_joint"), ("odd", "odd")])
def test_a_log_names_its_step(log: str, kind: str) -> None:
    assert step_kind(log) == kind


def _by_midpoints(steps: list[Step], functions: list[FunctionRun], t0: float, t1: float) -> dict[str, float]:
    """The rule as stated, slowly: every stretch between two span ends goes to the most
    specific span live at its midpoint."""
    spans = [(s.process_start, s.entered, 1, f"step start-up (interpreter, imports): {step_kind(s.name)}")
             for s in steps] + [(s.entered, s.ended, 2, f"step work: {step_kind(s.name)}") for s in steps]
    spans += [(f.started, f.started + f.seconds, 3, FUNCTIONS) for f in functions]
    cuts = sorted({t0, t1, *(x for a, b, _, _ in spans for x in (a, b) if t0 < x < t1)})
    out: dict[str, float] = {}
    for a, b in zip(cuts, cuts[1:], strict=False):
        live = [(p, label) for s, e, p, label in spans if s <= (a + b) / 2 < e]
        label = max(live)[1] if live else SNAKEMAKE
        out[label] = out.get(label, 0.0) + b - a
    return out


def test_the_sweep_gives_what_the_rule_says() -> None:
    """Random runs (overlapping steps, functions, zero-length and out-of-window spans):
    the one-pass sweep gives each label the seconds the midpoint rule does."""
    import random

    rng = random.Random(3)
    kinds = ["stage_sampleA", "plan_sampleA", "call", "merge_sampleA", "report"]
    for _ in range(200):
        steps = []
        for _ in range(rng.randint(0, 6)):
            a = rng.uniform(-2, 20)
            b = a + rng.choice([0.0, rng.uniform(0, 2)])
            steps.append(Step(rng.choice(kinds), a, b, b + rng.choice([0.0, rng.uniform(0, 8)])))
        functions = [FunctionRun("r", rng.uniform(0, 20), rng.choice([0.0, rng.uniform(0, 5)]), {})
                     for _ in range(rng.randint(0, 30))]
        t0, t1 = rng.uniform(-1, 5), rng.uniform(15, 25)
        got = breakdown(steps, functions, t0, t1)
        want = _by_midpoints(steps, functions, t0, t1)
        assert {k for k, v in got.pieces.items() if v > 1e-12} == {k for k, v in want.items() if v > 1e-12}
        for label, secs in want.items():
            assert got.pieces.get(label, 0.0) == pytest.approx(secs, abs=1e-9), label
        assert sum(got.pieces.values()) == pytest.approx(t1 - t0)
