"""The skeleton every function shares: one task in, one result object and its stats out.

Contract: :func:`run_task` opens the store the task describes over the worker's
``storage`` (Lithops passes it; no credentials travel in tasks), makes a private
temporary folder, runs the function's ``body`` in it, and then, written once for
every kind of function: reads the result file the body names, adds the common stats
(sample, md5 and size of the result, GETs and bytes read, when it started by the
worker's clock and how long it took, the local disk its files took, its peak resident memory, the
task's key) to the body's own, PUTs
``<out_key><suffix>`` and then ``<out_key>.json`` (each PUT atomic), removes the
folder and returns the stats. Any failure is re-raised as ``error`` naming the task
(``label``); an error of that class already is passed on as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from functions.core.errors import SvcError
from functions.core.storage import ObjectStore

#: What a function's body does: given the open store and its temporary folder, make
#: the result file; return its path and the body's own stats.
Body = Callable[[ObjectStore, str], tuple[str, dict[str, Any]]]


def _allocated(folder: str) -> int:
    """Bytes of disk the files under ``folder`` take (blocks, so a sparse slice counts
    only what was written)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _reset_peak_rss() -> bool:
    """Start the process' peak-RSS count (``VmHWM``) afresh (Linux >= 4.0): a worker runs
    many tasks, and each task's figure must be its own."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int | None:
    """The process' peak resident memory in bytes (``VmHWM``: since it started or since
    :func:`_reset_peak_rss`; unlike ``ru_maxrss``, not raised by the process it was
    exec'd from), None where /proc has no such figure."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


_VERSIONS: dict[str, str] = {}


def worker_versions() -> dict[str, str]:
    """What a function runs on (the worker's, which in the cloud is its runtime image's
    and may differ from the machine that drives the run): every function's stats
    carry it, and results/versions.tsv lists it beside the local steps'."""
    if not _VERSIONS:
        import platform

        import numpy
        import pysam
        from pysam.version import __htslib_version__

        from functions.core.version import __version__

        _VERSIONS.update({"serverless-variant-calling": __version__, "python": platform.python_version(),
                          "pysam": pysam.__version__, "htslib": __htslib_version__,
                          "bcftools": pysam.__samtools_version__, "numpy": numpy.__version__})
    return dict(_VERSIONS)


class Phases:
    """Seconds a function spends in each of its phases, lap by lap (a phase met twice
    adds up): its stats' ``phases``, which the run's time breakdown reads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 4)
        self._last = now


def run_task(label: str, store_description: dict[str, Any], storage: Any, sample: str, key: str, out_key: str,
             suffix: str, body: Body, error: type[SvcError], prefix: str = "svc-task-") -> dict[str, Any]:
    """Run ``body`` as the function of one task (see the module's contract); its stats."""
    t0, started = time.monotonic(), time.time()
    counting_rss = _reset_peak_rss()
    try:
        store = ObjectStore.from_description(store_description, storage)
        tmp = tempfile.mkdtemp(prefix=prefix)
        try:
            setup = time.monotonic() - t0
            path, own = body(store, tmp)
            disk = _allocated(tmp)
            with open(path, "rb") as fh:
                data = fh.read()
            t_put = time.monotonic()
            store.put(out_key + suffix, data)
            phases = {"setup": round(setup, 4), **own.pop("phases", {}), "put": round(time.monotonic() - t_put, 4)}
            stats = {
                "sample": sample,
                **own,
                "phases": phases,  # seconds by phase (the stats' own PUT, last, not counted)
                "versions": worker_versions(),
                "md5": hashlib.md5(data).hexdigest(),
                "size": len(data),
                "gets": store.counts.gets,
                "get_bytes": store.counts.get_bytes,
                "started": round(started, 3),  # epoch seconds, the worker's clock
                "seconds": round(time.monotonic() - t0, 3),
                "disk_bytes": disk,  # local disk the body left in use (sparse files: their blocks)
                # the worker process' peak RSS during this task (engines run in it); None where unknown
                "peak_rss_bytes": peak_rss() if counting_rss else None,
                "key": key,
            }
            store.put(out_key + ".json", json.dumps(stats, sort_keys=True).encode())
            return stats
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except error:
        raise
    except Exception as exc:
        raise error(f"{label}: {type(exc).__name__}: {exc}") from exc
