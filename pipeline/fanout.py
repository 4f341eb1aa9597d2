"""The resumable fan-out both the call and the align steps use.

Contract: tasks are plain dicts (``functions.core.tasks``' ``to_dict``) each naming its
``key`` (what produced its result) and ``out_key`` (where the result ``<out_key><suffix>``
and its stats ``<out_key>.json`` go). :func:`split_done` lists what is in the store
already and splits the tasks into the intact results to reuse (their stats, marked
``reused``) and the tasks to run; :func:`run_todo` runs those in one map through a
runner and returns their stats by ``out_key`` (with ``attempts``, ``submitted`` and the
failed tries), naming failures in the order of all the tasks and refusing a result
filed under another task's key. :func:`check_staged` checks, before a fan-out, that the
staged inputs are still in the store. Tasks that carry ``faults`` (tests only) are run
through :func:`functions.faults.run_with_faults`, which wraps the function from here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from functions.core.errors import SvcError
from functions.core.storage import ObjectMissingError, ObjectStore
from functions.faults import run_with_faults
from pipeline.executor import FanOutError, LithopsRunner, SerialRunner, task_label
from pipeline.manifests import Staged

logger = logging.getLogger(__name__)


class StagedInputError(SvcError, RuntimeError):
    """A staged input is gone from the store, or changed there."""


def check_staged(store: ObjectStore, manifests: Sequence[Staged],
                 rerun: str = "stage_sample stage_reference") -> None:
    """Every staged object is still in the store with the size it was staged with
    (else the fix names the rules to ``rerun``)."""
    for manifest in manifests:
        for obj in manifest.stored_files():
            try:
                size = store.head(obj.key, obj.bucket).size
            except ObjectMissingError:
                size = None
            if size != obj.size:
                raise StagedInputError(
                    f"staged input {obj.key} ({obj.path}) is "
                    f"{'missing from' if size is None else 'changed in'} the object store; "
                    f"stage it again with `snakemake --cores 2 --forcerun {rerun}`"
                )


def existing_result(store: ObjectStore, task: dict[str, Any], present: set[str],
                      suffix: str = ".vcf.gz") -> dict[str, Any] | None:
    """The stats of a finished, intact fragment (``<out_key><suffix>``) for this task, or None."""
    vcf, meta = task["out_key"] + suffix, task["out_key"] + ".json"
    if vcf not in present or meta not in present:
        return None
    try:
        stats = dict(json.loads(store.get(meta)))
    except (ValueError, TypeError):  # cut short: the function was killed while writing it
        logger.debug("stats %s unreadable: recomputing its fragment", meta)
        return None
    if stats.get("key") != task["key"] or not result_intact(store, vcf, stats):
        return None
    return stats


def result_intact(store: ObjectStore, key: str, stats: dict[str, Any]) -> bool:
    """Has the fragment the size and md5 its stats record? (A GET, unless the ETag is the md5.)"""
    info = store.head(key)
    if info.size != stats.get("size"):
        logger.info("fragment %s has another size than when it was written: recomputing it", key)
        return False
    if info.etag and info.etag.strip('"') == stats.get("md5"):
        return True  # S3 and the like: a single-part object's ETag is its md5
    if hashlib.md5(store.get(key)).hexdigest() != stats.get("md5"):
        logger.info("fragment %s has another md5 than when it was written: recomputing it", key)
        return False
    return True


def split_done(store: ObjectStore, tasks: list[dict[str, Any]], prefixes: list[str],
               suffix: str = ".vcf.gz") -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The stats of the tasks whose intact result (``<out_key><suffix>``) is in the store
    already, by ``out_key`` (marked ``reused``), and the tasks still to run. ``prefixes``:
    where the results are listed (one listing each)."""
    present: set[str] = set()
    for prefix in prefixes:
        present.update(store.list(prefix))
    done: dict[str, dict[str, Any]] = {}
    todo = []
    for t in tasks:
        stats = existing_result(store, t, present, suffix)
        if stats is None:
            todo.append(t)
        else:
            done[t["out_key"]] = {**stats, "reused": True}
    return done, todo


def run_todo(runner: SerialRunner | LithopsRunner, func: Any, todo: list[dict[str, Any]],
             tasks: list[dict[str, Any]], what: str, unit: str,
             error: type[Exception]) -> dict[str, dict[str, Any]]:
    """Run ``func`` over ``todo`` in one map; the stats by ``out_key``, each with ``attempts``,
    ``submitted`` (epoch seconds: when the map was started) and, for a task that needed
    retries, ``failed_attempts`` (the runner's record of them; see :mod:`pipeline.executor`).

    A failure names the failed tasks in the order of ``tasks``; a result that names
    another key than its task's is refused with ``error``: stats are never filed under
    the wrong task.
    """
    if any("faults" in t for t in todo):
        # A test device: the runner maps a wrapper that injects the fault, then calls the function.
        logger.warning("injecting faults into the functions (config 'faults', for tests): %s",
                       next(t["faults"] for t in todo if "faults" in t))
        target = f"{func.__module__}:{func.__name__}"
        todo = [{**t, "fault_target": target} if "faults" in t else t for t in todo]
        func = run_with_faults
    submitted = round(time.time(), 3)
    try:
        results = runner.run(func, todo, what=what, unit=unit)
    except FanOutError as exc:
        raise exc.reordered([task_label(t) for t in tasks]) from exc
    done = {}
    for t, stats, attempts, failed in zip(todo, results, runner.attempts, runner.failed_attempts, strict=True):
        if stats.get("key") != t["key"]:
            raise error(
                f"the result for {task_label(t)} is that of another task (it names key {stats.get('key')}): "
                "the executor mixed up its calls; run the step again"
            )
        done[t["out_key"]] = {**stats, "reused": False, "attempts": attempts, "submitted": submitted,
                              **({"failed_attempts": failed} if failed else {})}
    return done
