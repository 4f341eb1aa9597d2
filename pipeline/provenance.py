"""What a run ran on: the versions of the workflow and its tools, on the machine that
drives the run (``svc --version``) and in the functions (each function's stats carry
:func:`functions.worker.worker_versions`: in the cloud, its runtime image's).
:func:`versions_tsv` is ``results/versions.tsv``: one row per component and where it
ran, so that a runtime image built from another version shows as two rows."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from typing import Any

from functions.worker import worker_versions

LOCAL = "local steps"
FUNCTIONS = "functions"


def versions() -> dict[str, str]:
    """The versions on this machine: the workflow, Python and the engines' libraries
    (as a function reports them), then the executor, the workflow manager and the rest."""
    out = worker_versions()
    for dist in ("lithops", "snakemake", "boto3", "biopython", "mappy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def versions_tsv(local: Mapping[str, str], function_stats: Iterable[Mapping[str, Any]]) -> str:
    """``component<TAB>version<TAB>where``: the local steps' versions, then every
    version the functions of this run reported (functions that ran before the stats
    carried versions, and reused results, add nothing)."""
    rows = [(k, v, LOCAL) for k, v in local.items()]
    seen: dict[str, set[str]] = {}
    for stats in function_stats:
        for k, v in (stats.get("versions") or {}).items():
            seen.setdefault(str(k), set()).add(str(v))
    rows += [(k, v, FUNCTIONS) for k in seen for v in sorted(seen[k])]
    return "component\tversion\twhere\n" + "".join(f"{k}\t{v}\t{w}\n" for k, v, w in rows)


# What decides a call: the workflow's code and the engines' libraries (not, say,
# Python's patch release in a runtime image).
CALLS_DEPEND_ON = ("serverless-variant-calling", "pysam", "htslib", "bcftools")


def version_mismatches(tsv: str) -> list[str]:
    """The components the calls depend on (:data:`CALLS_DEPEND_ON`) whose functions ran
    another version than the local steps (a runtime image built from another release,
    say), as warnings."""
    local: dict[str, str] = {}
    out = []
    for line in tsv.splitlines()[1:]:
        k, v, where = line.split("\t")
        if where == LOCAL:
            local[k] = v
        elif k in CALLS_DEPEND_ON and k in local and v != local[k]:
            out.append(f"the functions ran {k} {v}, the local steps {local[k]}: rebuild the functions' runtime "
                       f"from this release (docs/cloud.md), or the results mix two versions")
    return out
