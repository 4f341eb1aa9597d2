"""Lithops localhost's job runner, with the functions' modules imported first.

Lithops localhost (version 1) starts one runner process per map, which forks a
worker per ``worker_processes``, which forks a process per call; the call then
unpickles its function, and importing the function's modules (pysam, numpy, the
engines) took 0.08 s of every call on this machine: 8 s of a 200-region run on two
workers. Started through this module (``pipeline.executor.preloading_runtime``, the
``localhost.runtime`` the call step gives Lithops), the runner imports them once, and
every process it forks has them.

Usage, as Lithops runs its runtime: ``python -m functions.preload <runner.py> <args>``.
"""

from __future__ import annotations

import importlib
import runpy
import sys

# The modules of the functions the pipeline maps (pipeline.call, pipeline.align).
PRELOAD = ("functions.call_region", "functions.align")


def main() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the call that needs it reports the error itself
            pass
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
