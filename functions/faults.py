"""Injected failures, for testing how the pipeline copes with them (config section ``faults``).

Contract: a runner whose tasks carry ``faults`` maps :func:`run_with_faults` instead of
the function itself (a test device stays out of the production worker path); it calls
:func:`inject` with the task's ``faults`` settings (:class:`FaultSettings`) before the
function does any work. It numbers this attempt at the
task — one marker object per attempt in the store, under
``<prefix>/faults/<sample>/<fragment key>/``, so a retried call, which Lithops runs
with the very same input, gets the next number — and draws a number in [0, 1) from
the seed, the sample, the region (for an alignment function, its chunk) and the
attempt number alone: the same settings
fail the same attempts on every run, whatever the backend or the order the calls run
in. When the draw is below ``probability`` the same draw picks one of the modes:

* ``raise`` — the function raises :class:`InjectedFault`;
* ``kill`` — the function kills its own process with SIGKILL, as the out-of-memory
  killer would (in a Lithops worker only: in the pipeline's own process, with the
  serial runner, it raises instead);
* ``delay`` — the function sleeps ``delay_seconds`` and then goes on (a straggler,
  or a time-out when that is longer than ``executor.timeout``).

It returns what it did, for the fragment's stats. Nothing here changes a result: a
call that survives its fault computes exactly what it would have without it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from functions.core.storage import ObjectStore

MODES = ("raise", "kill", "delay")


class InjectedFault(RuntimeError):
    """A failure injected on purpose (config ``faults``)."""


@dataclass(frozen=True)
class FaultSettings:
    probability: float = 0.0
    modes: tuple[str, ...] = MODES
    delay_seconds: float = 3.0
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FaultSettings:
        d = dict(d or {})
        if "modes" in d:
            d["modes"] = tuple(d["modes"])
        return cls(**d)

    def as_dict(self) -> dict[str, Any]:
        return {"probability": self.probability, "modes": list(self.modes),
                "delay_seconds": self.delay_seconds, "seed": self.seed}


def draw(settings: FaultSettings, sample: str, region: str, attempt: int) -> str | None:
    """The fault of this attempt at (sample, region), or None: a pure function of its arguments."""
    digest = hashlib.sha256(f"{settings.seed}\0{sample}\0{region}\0{attempt}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u >= settings.probability:
        return None
    return settings.modes[int.from_bytes(digest[8:16], "big") % len(settings.modes)]


def next_attempt(store: ObjectStore, sample: str, key: str) -> int:
    """Number this attempt (1, 2, ...) by leaving a marker object for it in the store."""
    prefix = store.key("faults", sample, key) + "/"
    attempt = len(store.list(prefix)) + 1
    store.put(f"{prefix}{attempt:04d}", b"")
    return attempt


def in_lithops_worker() -> bool:
    return os.environ.get("LITHOPS_WORKER") == "True"


def inject(settings: FaultSettings, store: ObjectStore, task: dict[str, Any]) -> dict[str, Any]:
    """Do this attempt's fault, if it draws one; returns ``{"attempt": n, "fault": mode or None}``."""
    sample = task["sample"]
    region = task["region"]["name"] if "region" in task else task["label"]  # an alignment task: its chunk
    attempt = next_attempt(store, sample, task["key"])
    fault = draw(settings, sample, region, attempt)
    if fault == "raise":
        raise InjectedFault(f"injected failure (attempt {attempt})")
    if fault == "kill":
        if not in_lithops_worker():
            raise InjectedFault(f"injected kill, raised instead outside a Lithops worker (attempt {attempt})")
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "delay":
        time.sleep(settings.delay_seconds)
    return {"attempt": attempt, "fault": fault}


def run_with_faults(task: dict[str, Any], storage: Any = None) -> dict[str, Any]:
    """The function named by the task's ``fault_target`` (``module:function``), after this
    attempt's injected fault (:func:`inject`): what a runner maps instead of the function
    itself when the tasks carry ``faults``, so the function never knows of them. The
    returned stats also say which attempt this was and what was injected into it."""
    module, _, name = task["fault_target"].partition(":")
    func = getattr(importlib.import_module(module), name)
    t0, started = time.monotonic(), time.time()
    store = ObjectStore.from_description(task["store"], storage)
    injected = inject(FaultSettings.from_dict(task["faults"]), store, task)
    stats = func(task, storage)
    # The attempt's time includes its injected delay: a straggler is slow as a whole.
    return {**stats, **injected, "started": round(started, 3), "seconds": round(time.monotonic() - t0, 3)}
