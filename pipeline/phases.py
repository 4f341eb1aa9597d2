"""Where a run's time went: its wall clock cut into phases that add up to it.

Contract: :func:`read_steps` reads the timing line each step writes to its log
(:func:`pipeline.cli.log_timing`: when its process started, when its ``main`` was
entered, i.e. after the interpreter's start and the imports, and when its work
ended); :func:`read_functions` reads when each function ran and its own phases
(``started``, ``seconds``, ``phases`` in the call manifests' stats). :func:`breakdown`
cuts the interval [t0, t1) (the run's launch and exit, or, without them, the first
step's start and the last step's end) into labelled pieces: at each instant the most
specific thing running wins (a function, else a step's work, else a step's start-up),
and what is left is Snakemake's own time (its start and DAG, its scheduling between
jobs, each step's process exit, its own exit). The pieces add up to the wall exactly,
so the run's *fixed cost*, the wall minus the time any function was running, is read
off the same table.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def process_start() -> float | None:
    """When this process was created (epoch seconds, to the kernel's clock tick), from
    /proc; None where there is no /proc.

    The process' age is the time since boot (``/proc/uptime``, to 10 ms) less its start
    in clock ticks since boot; the start is now less that age. (The boot time of
    ``/proc/stat``, ``btime``, is in whole seconds: added to the ticks, it put every
    process up to a second early, which the run's breakdown counted as start-up.)
    """
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        now = time.time()
        return now - max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


TIMING = re.compile(r" svc\.timing: timing (\{.*\})\s*$")


@dataclass(frozen=True)
class Step:
    name: str  # the step's log name (e.g. ``plan_sampleA``)
    process_start: float  # epoch seconds
    entered: float  # main() entered: interpreter and imports done
    ended: float  # work done (the process' exit follows)


@dataclass(frozen=True)
class FunctionRun:
    label: str
    started: float
    seconds: float
    phases: dict[str, float]


@dataclass
class Breakdown:
    t0: float
    t1: float
    pieces: dict[str, float] = field(default_factory=dict)  # label -> seconds of the wall
    function_phases: dict[str, float] = field(default_factory=dict)  # summed over functions
    functions: int = 0
    function_seconds: float = 0.0  # summed over functions

    @property
    def wall(self) -> float:
        return self.t1 - self.t0

    @property
    def function_wall(self) -> float:
        """Seconds of the wall during which at least one function ran."""
        return self.pieces.get(FUNCTIONS, 0.0)

    @property
    def fixed(self) -> float:
        """The run's wall minus the time any function was running."""
        return self.wall - self.function_wall

    def rows(self) -> list[tuple[str, float]]:
        """(label, seconds), largest first; they add up to :attr:`wall`."""
        return sorted(self.pieces.items(), key=lambda kv: -kv[1])

    def table(self) -> str:
        lines = [f"{'phase':58s} {'seconds':>8s} {'share':>6s}"]
        for label, secs in self.rows():
            lines.append(f"{label:58s} {secs:8.2f} {100 * secs / max(self.wall, 1e-9):5.1f}%")
        lines.append(f"{'wall':58s} {self.wall:8.2f}")
        lines.append(f"{'fixed cost (wall - time any function ran)':58s} {self.fixed:8.2f}")
        if self.functions:
            inside = ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.function_phases.items(), key=lambda kv: -kv[1]))
            lines.append(f"inside the {self.functions} functions ({self.function_seconds:.2f} s summed): {inside}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"wall": round(self.wall, 3), "fixed": round(self.fixed, 3),
                "pieces": {k: round(v, 3) for k, v in self.rows()},
                "function_phases": {k: round(v, 3) for k, v in self.function_phases.items()},
                "functions": self.functions, "function_seconds": round(self.function_seconds, 3)}


FUNCTIONS = "functions running (Lithops map)"
SNAKEMAKE = "Snakemake: start, DAG, scheduling, process exits, exit"


def read_steps(log_dir: str | Path) -> list[Step]:
    """The steps whose logs in ``log_dir`` hold a timing line, by process start."""
    out = []
    for log in Path(log_dir).glob("*.log"):
        for line in reversed(log.read_text(errors="replace").splitlines()):
            m = TIMING.search(line)
            if m:
                d = json.loads(m.group(1))
                start = d.get("process_start") or d["entered"]
                out.append(Step(log.stem, float(start), float(d["entered"]), float(d["ended"])))
                break
    return sorted(out, key=lambda s: s.process_start)


def function_runs(stats: Iterable[Mapping[str, Any]]) -> list[FunctionRun]:
    """The functions among ``stats`` (fragments' or alignment parts') that ran in this
    run (reused results ran before)."""
    return [FunctionRun(str(f.get("name", f.get("region", f.get("chunk", "?")))), float(f["started"]),
                        float(f["seconds"]), dict(f.get("phases") or {}))
            for f in stats if not f.get("reused") and "started" in f]


def read_functions(manifests: Iterable[str | Path]) -> list[FunctionRun]:
    """:func:`function_runs` of every fragment the call manifests record."""
    return [run for path in manifests for run in function_runs(json.loads(Path(path).read_text()).get("fragments", []))]


# The workflow's steps, as their logs begin (``plan_<sample>``, ``call_scatter_<job>``, ...).
STEP_KINDS = ("check_storage", "stage_reference", "stage_fastq", "stage", "index_reference", "align",
              "merge_alignments", "plan_joint", "plan", "call_scatter", "call", "merge", "report")


def step_kind(log_name: str) -> str:
    """The step a log belongs to, without its sample or job (``merge_mixture`` -> ``merge``)."""
    return max((k for k in STEP_KINDS if log_name == k or log_name.startswith(k + "_")), key=len, default=log_name)


def breakdown(steps: Sequence[Step], functions: Sequence[FunctionRun], t0: float | None = None,
              t1: float | None = None) -> Breakdown:
    """The wall [t0, t1) cut into pieces (see the module's contract)."""
    if t0 is None:
        t0 = min([s.process_start for s in steps] + [f.started for f in functions])
    if t1 is None:
        t1 = max([s.ended for s in steps] + [f.started + f.seconds for f in functions])
    # (start, end, priority, label): the highest priority running at an instant owns it
    spans: list[tuple[float, float, int, str]] = []
    for s in steps:
        kind = step_kind(s.name)
        spans.append((s.process_start, s.entered, 1, f"step start-up (interpreter, imports): {kind}"))
        spans.append((s.entered, s.ended, 2, f"step work: {kind}"))
    for f in functions:
        spans.append((f.started, f.started + f.seconds, 3, FUNCTIONS))
    # One sweep over the spans' ends (a run may have a million functions): the spans
    # live between two consecutive times are those started at or before the first and
    # not ended by it; among them, the (priority, label) that sorts last owns the stretch.
    events = sorted((t, delta, (p, label)) for a, b, p, label in spans if a < b for t, delta in ((a, 1), (b, -1)))
    live: Counter[tuple[int, str]] = Counter()
    pieces: dict[str, float] = defaultdict(float)
    at, i = t0, 0
    while at < t1:
        while i < len(events) and events[i][0] <= at:
            live[events[i][2]] += events[i][1]
            i += 1
        nxt = min(events[i][0], t1) if i < len(events) else t1
        owner = max((key for key, n in live.items() if n > 0), default=None)
        pieces[owner[1] if owner else SNAKEMAKE] += nxt - at
        at = nxt
    out = Breakdown(t0, t1, dict(pieces))
    for f in functions:
        out.functions += 1
        out.function_seconds += f.seconds
        for k, v in f.phases.items():
            out.function_phases[k] = out.function_phases.get(k, 0.0) + v
    return out


def run_breakdown(workdir: str | Path, t0: float | None = None, t1: float | None = None) -> Breakdown:
    """The breakdown of the run whose work folder is ``workdir`` (``work/`` of a run)."""
    wd = Path(workdir)
    return breakdown(read_steps(wd / "logs"), read_functions(sorted((wd / "calls").glob("*.json"))), t0, t1)
