"""Fan the calling out: one function per (sample, region), skipping finished work.

Contract: :func:`call_samples` takes what the calls are made from
(:class:`CallInputs`), builds one task per region of every sample's plan, keys each
fragment by what produced it (:func:`fragment_key`: the BAM and reference
fingerprints, the region, the engine and its parameters, the code version), reuses
fragments already in the store that are intact (their stats object is readable and
names the same key, and the fragment has the size and md5 the stats record), runs the
rest in one map through the given runner, and writes one JSON manifest per sample
listing its fragments in plan order, each with ``reused`` and, for those computed,
``attempts`` (1 + the retries it took). A result that names another fragment key than
its task's is refused (:class:`CallError`): stats are never filed under the wrong
region. It returns a :class:`CallSummary`.

Joint calling (``cohort``): one task per region of a joint plan carries every
sample's BAM slice; its fragments and the one manifest are filed under the cohort's
name. Cluster scatter mode: :func:`call_share` is one of ``jobs`` Snakemake jobs,
each calling its :func:`share` of the same tasks with the serial runner and writing
their stats; :func:`call_samples` with ``scattered`` then runs nothing and writes
the manifests from the fragments the jobs left (the same fragments, the same merge).

Injected faults (config ``faults``, for tests) travel in the tasks; they are not
part of the fragment key, since they never change a result.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pipeline
from functions.bcftools_engine import bcftools_version
from functions.call_region import call_region
from functions.core.cram import is_cram
from functions.core.errors import SvcError
from functions.core.fai import parse_fai
from functions.core.primers import PrimerScheme
from functions.core.storage import ObjectStore
from functions.core.targets import Intervals, overlapping
from functions.core.tasks import BamSlice, RegionTask, Span
from functions.engines import EngineParams
from pipeline.executor import LithopsRunner, SerialRunner, task_label
from pipeline.fanout import check_staged, run_todo, split_done
from pipeline.manifests import CallResults, FunctionStats, ScatterShare, StagedReference, StagedSample, StoredFile
from pipeline.plan import REGION_OVERHEAD_BYTES, Region, SamplePlan

logger = logging.getLogger(__name__)


class CallError(SvcError, RuntimeError):
    """The calls cannot start; the message names the problem and the fix."""


@dataclass
class CallSummary:
    samples: int
    regions: int
    computed: int
    reused: int
    get_bytes: int
    gets: int
    bam_bytes: int
    seconds: float
    retries: int = 0
    retried_regions: int = 0
    functions: int | None = None  # the functions run, when light regions were packed (else one per region)
    bam_read: int = 0  # of get_bytes, those of the BAMs (the rest: the reference)
    inputs: str = "BAM"  # what the samples are: "BAM", "CRAM", or "BAM and CRAM"

    def line(self) -> str:
        ratio = self.bam_read / self.bam_bytes if self.bam_bytes else 0.0
        retried = f"{self.retries} retries ({self.retried_regions} regions); " if self.retries else ""
        ran = (f"{self.computed} functions run" if self.functions in (None, self.computed)
               else f"{self.computed} regions called in {self.functions} functions")
        return (
            f"called {self.samples} sample(s) in {self.regions} regions: "
            f"{ran}, {self.reused} fragments reused; {retried}"
            f"read {self.get_bytes / 1e6:.2f} MB in {self.gets} GETs "
            f"({self.inputs} {ratio:.2f} x {'its size' if ' and ' not in self.inputs else 'their sizes'}, "
            f"and the reference) in {self.seconds:.1f} s"
        )


def code_version() -> str:
    return f"serverless-variant-calling {pipeline.__version__}; {bcftools_version()}"


def fragment_key(bam_fp: str, ref_fp: str, chrom: str, start: int, end: int,
                 engine: str, params: dict[str, Any]) -> str:
    blob = json.dumps(
        {"bam": bam_fp, "ref": ref_fp, "region": [chrom, start, end], "engine": engine,
         "params": params, "code": code_version()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _check_contig(plan: SamplePlan, r: Region, fai: dict[str, Any], ref_manifest: StagedReference) -> Any:
    """The reference's ``.fai`` entry of the region's contig, which must match the BAM's."""
    entry = fai.get(r.chrom)
    bam_length = dict(plan.contigs)[r.chrom]
    if entry is None or entry.length != bam_length:
        found = "is not in" if entry is None else f"has length {entry.length} in"
        raise CallError(
            f"contig {r.chrom!r} ({bam_length} bp in sample {plan.sample}'s BAM) {found} the "
            f"reference {ref_manifest.fasta.path}; use the reference the reads were aligned to"
        )
    return entry


def _slice(plan: SamplePlan, r: Region, bam: StoredFile) -> BamSlice:
    """What a function fetches of one BAM for region ``r``."""
    return BamSlice(bam.ref, bam.size, plan.n_ref,
                    (plan.header.start, plan.header.end), r.tid, tuple((c.beg, c.end) for c in r.chunks),
                    tuple((b.start, b.end, b.tail) for b in r.ranges), r.scan, is_cram(bam.key))


def _task(store: ObjectStore, name: str, plans: list[SamplePlan], manifests: list[StagedSample],
          i: int, ref_manifest: StagedReference, fai: dict[str, Any], params: EngineParams,
          faults: dict[str, Any] | None, primers: PrimerScheme | None = None,
          called: Intervals | None = None) -> dict[str, Any]:
    """The task of region ``i`` of ``plans`` (one sample's, or every sample's of a joint call);
    with ``primers``, the scheme's primers on the region's contig travel in it (and its key),
    and with ``called`` (calling.targets minus calling.exclude) the intervals within the region."""
    r = plans[0].regions[i]
    entry = _check_contig(plans[0], r, fai, ref_manifest)
    for plan in plans[1:]:
        _check_contig(plan, plan.regions[i], fai, ref_manifest)
    rows = None if primers is None else tuple(tuple(p) for p in primers.on(r.chrom, 0, entry.length).to_rows())
    inside = None if called is None else tuple(overlapping(called.get(r.chrom, []), r.start, r.end))
    key = fragment_key("+".join(m.bam.fingerprint for m in manifests),
                       ref_manifest.fasta.fingerprint, r.chrom, r.start, r.end, params.ENGINE,
                       {**params.as_dict(), "context": [r.context_start, r.context_end],
                        **({"primers": rows} if rows is not None else {}),
                        **({"targets": [list(t) for t in inside]} if inside is not None else {})})
    return RegionTask(
        sample=name,
        store=store.describe(),
        bams=tuple(_slice(plan, plan.regions[i], m.bam) for plan, m in zip(plans, manifests, strict=True)),
        reference=ref_manifest.fasta.ref,
        fai=entry,
        index=r.index,
        region=Span(r.chrom, r.start, r.end),
        context=Span(r.chrom, r.context_start, r.context_end),
        est_bytes=sum(plan.regions[i].est_bytes for plan in plans),
        engine=params.ENGINE,
        params=params.as_dict(),
        key=key,
        out_key=store.key("fragments", name, f"{r.index:05d}-{key}"),
        faults=faults if faults and faults.get("probability") else None,
        primers=rows,
        targets=inside,
    ).to_dict()


def make_tasks(
    store: ObjectStore,
    plan: SamplePlan,
    sample_manifest: StagedSample,
    ref_manifest: StagedReference,
    fai: dict[str, Any],
    params: EngineParams,
    faults: dict[str, Any] | None = None,
    primers: PrimerScheme | None = None,
    called: Intervals | None = None,
) -> list[dict[str, Any]]:
    """One task per region of one sample's plan."""
    return [_task(store, plan.sample, [plan], [sample_manifest], i, ref_manifest, fai, params, faults, primers,
                  called) for i in range(len(plan.regions))]


def make_joint_tasks(
    store: ObjectStore,
    cohort: str,
    plans: list[SamplePlan],
    manifests: list[StagedSample],
    ref_manifest: StagedReference,
    fai: dict[str, Any],
    params: EngineParams,
    faults: dict[str, Any] | None = None,
    called: Intervals | None = None,
) -> list[dict[str, Any]]:
    """One task per region of a joint plan (:func:`pipeline.plan.plan_joint`): every
    sample's BAM slice, called together into the fragments of ``cohort``."""
    spans = {tuple((r.chrom, r.start, r.end) for r in p.regions) for p in plans}
    if len(spans) != 1:
        raise CallError(f"the plans of cohort {cohort} do not share their regions: "
                        "they were not made together; delete work/plans and rerun")
    return [_task(store, cohort, plans, manifests, i, ref_manifest, fai, params, faults, called=called)
            for i in range(len(plans[0].regions))]


@dataclass(frozen=True)
class CallInputs:
    """What a run's calls are made from: the store, the samples' plans (for a joint call,
    the cohort's, with the same regions) and staged manifests (by sample), the staged
    reference's manifest, the engine parameters, injected ``faults`` (tests only),
    for a joint call the ``cohort``'s name, and the amplicon scheme's ``primers`` (if
    any; checked against the reference's contigs before any task is made)."""

    store: ObjectStore
    plans: list[SamplePlan]
    sample_manifests: dict[str, StagedSample]
    ref_manifest: StagedReference
    params: EngineParams
    faults: dict[str, Any] | None = None
    cohort: str | None = None
    primers: PrimerScheme | None = None
    called: Intervals | None = None  # calling.targets minus calling.exclude (None: everything)

    def tasks(self) -> list[dict[str, Any]]:
        """Every task of the run, in plan order: one per (sample, region), or with a
        ``cohort`` one per region calling every sample together. Checks the staged
        inputs first."""
        store, plans, mans = self.store, self.plans, self.sample_manifests
        check_staged(store, [self.ref_manifest, *(mans[p.sample] for p in plans)])
        fai = parse_fai(store.get(self.ref_manifest.fai.key, self.ref_manifest.fai.bucket).decode())
        if self.cohort is not None:
            return make_joint_tasks(store, self.cohort, plans, [mans[p.sample] for p in plans],
                                    self.ref_manifest, fai, self.params, self.faults, self.called)
        if self.primers is not None:
            self.primers.check({name: e.length for name, e in fai.items()})
        tasks: list[dict[str, Any]] = []
        for plan in plans:
            tasks += make_tasks(store, plan, mans[plan.sample], self.ref_manifest, fai, self.params, self.faults,
                                self.primers, self.called)
        return tasks

    @property
    def functions(self) -> int:
        """The functions the plans were asked for (0: not known): each sample's, or, for a
        joint call, the one set of regions'."""
        if any(not p.functions for p in self.plans):
            return 0
        return self.plans[0].functions if self.cohort is not None else sum(p.functions for p in self.plans)

    def summary(self, stats: Any, regions: int, t0: float, functions: int | None = None) -> CallSummary:
        """The summary of ``regions`` regions whose fragments' stats are ``stats``, begun at
        ``t0``, run in ``functions`` functions (None: one per region computed)."""
        stats = list(stats)
        computed = [s for s in stats if not s["reused"]]
        return CallSummary(
            samples=len(self.plans), regions=regions, computed=len(computed),
            reused=len(stats) - len(computed),
            get_bytes=sum(s["get_bytes"] for s in computed), gets=sum(s["gets"] for s in computed),
            bam_read=sum(s.get("bam_get_bytes", 0) for s in computed),
            bam_bytes=sum(self.sample_manifests[p.sample].bam.size for p in self.plans),
            seconds=time.monotonic() - t0,
            retries=sum(s["attempts"] - 1 for s in computed),
            retried_regions=sum(s["attempts"] > 1 for s in computed),
            functions=functions,
            inputs=" and ".join(sorted({"CRAM" if is_cram(self.sample_manifests[p.sample].bam.key) else "BAM"
                                        for p in self.plans})) or "BAM",
        )


def _fragment_prefixes(store: ObjectStore, tasks: list[dict[str, Any]]) -> list[str]:
    return [store.key("fragments", name) + "/" for name in dict.fromkeys(t["sample"] for t in tasks)]


def share(tasks: list[dict[str, Any]], job: int, jobs: int) -> list[dict[str, Any]]:
    """The tasks of scatter job ``job`` of ``jobs``: heaviest first, each to the job
    with the least estimated bytes so far (so jobs finish about together). The same
    tasks give every job the same split, so jobs need not talk to each other."""
    if not 0 <= job < jobs:
        raise CallError(f"scatter job {job} is not one of 0..{jobs - 1}")
    load = [0] * jobs
    mine = []
    for t in sorted(tasks, key=lambda t: (-t["region"]["est_bytes"], t["out_key"])):
        j = min(range(jobs), key=lambda k: (load[k], k))
        load[j] += max(1, t["region"]["est_bytes"])
        if j == job:
            mine.append(t)
    return mine


def pack_tasks(todo: list[dict[str, Any]], tasks: list[dict[str, Any]], functions: int) -> list[dict[str, Any]]:
    """The functions to run for ``todo`` (of the run's ``tasks``): regions packed, best fit
    in decreasing weight (bytes plus :data:`pipeline.plan.REGION_OVERHEAD_BYTES` per region), into
    functions of the least weight that fits all ``tasks`` into ``functions`` functions
    (what the plan was asked for; 0: not known), and never less than the heaviest
    region's. A region alone in its function runs as itself; light regions (a genome's
    small contigs, one region each at least) share a function, one after another, so the
    number of functions follows ``plan.n_regions`` however many contigs carry reads. A
    pack is ``{"tasks": [...], "key", "out_key", "label", "sample", "region"}`` (see
    :func:`functions.call_region.call_region`); tasks with injected faults (tests) are
    never packed."""
    if len(todo) < 2 or any("faults" in t for t in todo):
        return todo
    every = _heaviest_first(tasks)
    lo = every[0][0]
    if functions and len(tasks) > functions:
        hi = sum(w for w, _ in every)
        lo = max(lo, hi // functions)
        while lo < hi:  # the least capacity that packs every task into `functions` functions
            mid = (lo + hi) // 2
            if len(_best_fit(every, mid)) <= functions:
                hi = mid
            else:
                lo = mid + 1
    return [b[0] if len(b) == 1 else _pack(b) for b in _best_fit(_heaviest_first(todo), lo)]


def _heaviest_first(tasks: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(weight, task), heaviest first (stable: equal weights keep their order); a region
    weighs its bytes plus the cost of a region beside them."""
    weighted = [(int(t["region"]["est_bytes"]) + REGION_OVERHEAD_BYTES, t) for t in tasks]
    return sorted(weighted, key=lambda wt: wt[0], reverse=True)


def _best_fit(weighted: list[tuple[int, dict[str, Any]]], cap: int) -> list[list[dict[str, Any]]]:
    """Best-fit decreasing (``weighted`` heaviest first): each task into the fullest
    function it fits."""
    bins: list[list[dict[str, Any]]] = []
    room: list[tuple[int, int]] = []  # (room left, bin), sorted
    for w, t in weighted:
        at = bisect.bisect_left(room, (w, -1))
        if at == len(room):
            bins.append([t])
            bisect.insort(room, (cap - w, len(bins) - 1))
            continue
        left, b = room.pop(at)
        bins[b].append(t)
        bisect.insort(room, (left - w, b))
    return bins


def _pack(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = tasks[0], tasks[-1]
    key = hashlib.sha256("".join(t["key"] for t in tasks).encode()).hexdigest()[:20]
    samples = dict.fromkeys(t["sample"] for t in tasks)
    return {
        "tasks": tasks, "key": key, "out_key": f"pack-{key}", "sample": first["sample"],
        "label": f"{', '.join(samples)} {len(tasks)} regions packed ({task_label(first)} ... "
                 f"{last['region']['name']})",
        "region": {"est_bytes": sum(int(t["region"]["est_bytes"]) for t in tasks), "name": "packed"},
    }


def run_calls(runner: SerialRunner | LithopsRunner, todo: list[dict[str, Any]],
              tasks: list[dict[str, Any]], functions: int) -> tuple[dict[str, dict[str, Any]], int]:
    """Call ``todo`` (of ``tasks``, packed by :func:`pack_tasks` into about ``functions``
    for all ``tasks``) in one map; each region's stats by its ``out_key`` (a packed
    region's with its function's attempts), and the number of functions run."""
    items = pack_tasks(todo, tasks, functions)
    if len(items) < len(todo):
        logger.info("%d regions in %d functions: %d light regions packed together", len(todo), len(items),
                    sum(len(i.get("tasks", ())) for i in items))
    done = run_todo(runner, call_region, items, tasks, "calling regions", "region", CallError)
    for item in items:
        if "tasks" not in item:
            continue
        pack = done.pop(item["out_key"])
        results = pack.pop("results")
        if [r.get("key") for r in results] != [t["key"] for t in item["tasks"]]:
            raise CallError(f"the results for {item['label']} are not its regions': run the step again")
        for t, r in zip(item["tasks"], results, strict=True):
            done[t["out_key"]] = {**r, **{k: pack[k] for k in ("reused", "attempts", "submitted",
                                                                "failed_attempts") if k in pack}}
    return done, len(items)


def call_samples(
    inputs: CallInputs,
    runner: SerialRunner | LithopsRunner | None,
    out_manifests: dict[str, str | Path],
    scattered: Mapping[str, FunctionStats] | None = None,
) -> CallSummary:
    """Call every task not done yet in one map through ``runner`` and write the manifests
    (by sample, or by ``cohort`` for a joint call).

    With ``scattered`` (the stats by ``out_key`` that the scatter jobs of
    :func:`call_share` wrote; ``runner`` unused) nothing is run: every fragment must be
    in the store already, intact.
    """
    t0 = time.monotonic()
    store, plans, params, cohort = inputs.store, inputs.plans, inputs.params, inputs.cohort
    tasks = inputs.tasks()
    done, todo = split_done(store, tasks, _fragment_prefixes(store, tasks))
    fetch = sum(p.fetch_bytes for p in plans)
    logger.info(
        "plan: %d samples%s, %d regions, %.2f MB to fetch; %d fragments already done, %d functions to run with %r",
        len(plans), f" called jointly as {cohort}" if cohort else "", len(tasks), fetch / 1e6, len(done),
        len(todo), runner if scattered is None else "the scatter jobs",
    )
    functions: int | None = None
    if scattered is not None:
        if todo:
            raise CallError(
                f"{len(todo)} region(s) have no intact fragment after the scatter jobs ran "
                f"(first: {task_label(todo[0])}); `snakemake --cores 2 --forcerun call_scatter` recomputes "
                "them (and reuses the intact fragments)"
            )
        done.update({k: dict(v) for k, v in scattered.items() if k in done})
    else:
        for t in todo:
            logger.debug("region %s %s: %d ranges", t["sample"], t["region"]["name"],
                         sum(len(b["ranges"]) for b in t["bams"]))
        # Heaviest regions first: the last functions to finish are then the light ones.
        todo.sort(key=lambda t: -t["region"]["est_bytes"])
        assert runner is not None
        ran, functions = run_calls(runner, todo, tasks, inputs.functions)
        done.update(ran)
    for name, out in out_manifests.items():
        frags = tuple(FunctionStats(**done[t["out_key"]], out_key=t["out_key"])  # type: ignore[typeddict-item]
                      for t in tasks if t["sample"] == name)
        CallResults(
            sample=name, code=code_version(), engine=params.ENGINE, params=params.as_dict(),
            command=params.describe(), samples=tuple(p.sample for p in plans) if cohort else None,
            retries=sum(f.get("attempts", 1) - 1 for f in frags if not f["reused"]), fragments=frags,
            functions=functions if len(out_manifests) == 1 else None,
        ).write(out)
    return inputs.summary(done.values(), len(tasks), t0, functions)


def call_share(
    inputs: CallInputs,
    runner: SerialRunner | LithopsRunner,
    job: int,
    jobs: int,
    out: str | Path,
) -> CallSummary:
    """Scatter job ``job`` of ``jobs`` (a Snakemake job, e.g. on SLURM): call its
    :func:`share` of the tasks through ``runner`` (reusing intact fragments) and write
    their stats, with where the job ran, to ``out`` as JSON."""
    t0 = time.monotonic()
    store, tasks = inputs.store, inputs.tasks()
    mine = share(tasks, job, jobs)
    done, todo = split_done(store, mine, _fragment_prefixes(store, mine))
    host, slurm_job = socket.gethostname(), os.environ.get("SLURM_JOB_ID")
    logger.info("scatter job %d of %d on %s%s: %d of %d regions, %d already done", job + 1, jobs, host,
                f" (SLURM job {slurm_job})" if slurm_job else "", len(mine), len(tasks), len(done))
    ran, functions = run_calls(runner, todo, mine, round(inputs.functions * len(mine) / max(1, len(tasks))))
    done.update(ran)
    ScatterShare(job, jobs, host, slurm_job, round(time.monotonic() - t0, 3),
                 done).write(out)  # type: ignore[arg-type]
    return inputs.summary(done.values(), len(mine), t0, functions)

