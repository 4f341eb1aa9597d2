"""Command-line entry of each workflow step; the one place errors become messages.

Contract: ``python -m pipeline.cli STEP --settings JSON ...`` runs one step (the
Snakemake rules call these). The settings are the step's own (JSON of a
:class:`pipeline.config.StepSettings`: only the sections the step uses, validated
when the workflow loaded), checked here for shape only; a whole workflow config is
accepted too, validated in full and cut down to the step's (to run a step by hand).
Every error meant for the user derives from :class:`functions.core.errors.SvcError`
(bad config, bad input, storage, failed functions, damaged fragments; a full disk or
an unwritable folder becomes one too) and is printed as one line ``error: ...``
naming the problem and the fix, with exit status 1; ``--debug`` adds the traceback.
Anything else is a bug: its traceback is printed, then a line asking for a report,
with exit status 2. Logs go to ``--log`` (full detail) and to stderr (progress and
summary).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from functions.core.atomic import folder_error
from functions.core.cram import is_cram
from functions.core.errors import SvcError
from functions.core.storage import ObjectStore
from pipeline.config import ConfigError, StepSettings, read_step_settings
from pipeline.executor import FanOutError, make_runner
from pipeline.phases import process_start

if TYPE_CHECKING:
    from pipeline.plan import PlanSettings

logger = logging.getLogger("pipeline")


def rerun_hint(exc: FanOutError, unit: str, verb: str, log: str | None) -> str:
    """A failed fan-out's message, with what is kept and how to finish the rest."""
    where = f" (each {unit}'s error is in {log})" if log else ""
    return (f"{exc}; the {unit}s that finished are kept: run `snakemake --cores 2` again "
            f"to {verb} only the failed ones{where}")


def open_store(settings: StepSettings) -> ObjectStore:
    st = settings.storage
    store = ObjectStore(settings.lithops, st.get("bucket"), st.get("prefix", "svc"))
    store.check()
    return store


def cmd_check_storage(settings: StepSettings, args: argparse.Namespace) -> None:
    store = open_store(settings)
    logger.info("object storage ready: %r", store)
    with open(args.out, "w") as fh:
        fh.write(f"{store!r}\n")


def cmd_stage_reference(settings: StepSettings, args: argparse.Namespace) -> None:
    from pipeline.stage import stage_reference

    stage_reference(open_store(settings), settings.reference, args.out)


def cmd_stage_sample(settings: StepSettings, args: argparse.Namespace) -> None:
    from pipeline.stage import stage_sample

    s = settings.sample(args.sample)
    stage_sample(open_store(settings), s.name, s.bam, s.bai, args.out)


def cmd_index_reference(settings: StepSettings, args: argparse.Namespace) -> None:
    from pipeline.align import stage_index

    stage_index(open_store(settings), settings.reference, args.workdir, args.out)


def cmd_stage_fastq(settings: StepSettings, args: argparse.Namespace) -> None:
    from pipeline.align import stage_fastq

    s = settings.sample(args.sample)
    if s.fastq is None:
        raise ConfigError(f"sample {s.name} has a BAM, not FASTQs: there is nothing to align")
    stage_fastq(open_store(settings), s.name, s.fastq[0], s.fastq[1], settings.align["chunk_pairs"],
                args.workdir, args.out, progress=settings.executor.get("progress", True))


def cmd_align(settings: StepSettings, args: argparse.Namespace) -> None:
    from pipeline.align import AlignError, AlignParams, ReadGroup, align_samples
    from pipeline.manifests import StagedFastq, StagedIndex, StagedReference

    fastqs = [StagedFastq.read(p) for p in args.staged]
    groups = {fq.sample: ReadGroup.of(settings.sample(fq.sample)) for fq in fastqs}
    a = settings.align
    params = AlignParams(chunk_pairs=a["chunk_pairs"], max_insert=a["max_insert"],
                         mark_duplicates=a["mark_duplicates"])
    outs = dict(zip([fq.sample for fq in fastqs], args.out, strict=True))
    runner = make_runner(settings.executor, settings.lithops)
    store = open_store(settings)
    try:
        summary = align_samples(store, fastqs, StagedIndex.read(args.index), StagedReference.read(args.reference),
                                groups, params, runner, outs, faults=settings.faults)
    except FanOutError as exc:
        raise AlignError(rerun_hint(exc, "chunk", "align", args.log)) from exc
    logger.info(summary.line())


def cmd_merge_alignments(settings: StepSettings, args: argparse.Namespace) -> None:
    from pipeline.align import merge_parts

    merge_parts(open_store(settings), args.parts, args.out, args.stats, level=settings.align["compression_level"],
                mark_duplicates=settings.align["mark_duplicates"])


def plan_settings(settings: StepSettings) -> PlanSettings:
    from pipeline.plan import PlanSettings

    p = settings.plan
    return PlanSettings(
        n_regions=None if p.get("target_bytes") else p.get("n_regions"),
        target_bytes=p.get("target_bytes"),
        max_region_length=p["max_region_length"],
        min_region_bytes=p["min_region_bytes"],
        padding=p["padding"],
        targets=p.get("targets"),
    )


def cmd_plan(settings: StepSettings, args: argparse.Namespace) -> None:
    from pipeline.manifests import StagedReference, StagedSample
    from pipeline.plan import plan_from_store, write_plan

    t0 = time.monotonic()
    store = open_store(settings)
    reference = StagedReference.read(args.reference) if args.reference else None
    plan = plan_from_store(store, args.sample, StagedSample.read(args.staged), plan_settings(settings),
                           reference=reference)
    tmp = f"{args.out}.tmp"
    write_plan(plan, tmp, store.counts)
    os.replace(tmp, args.out)
    logger.info(
        "planned %s: %d regions, %.2f MB to fetch of a %.2f MB %s, in %.2f s; read %s",
        args.sample, len(plan.regions), plan.fetch_bytes / 1e6, plan.bam_size / 1e6,
        "CRAM" if is_cram(plan.bam_key) else "BAM",
        time.monotonic() - t0, store.counts.line(),
    )


def cmd_plan_joint(settings: StepSettings, args: argparse.Namespace) -> None:
    from pipeline.manifests import StagedReference, StagedSample
    from pipeline.plan import plan_input, plan_joint, write_plan

    t0 = time.monotonic()
    store = open_store(settings)
    reference = StagedReference.read(args.reference)
    manifests = [StagedSample.read(p) for p in args.staged]
    inputs = [plan_input(store, m.sample, m, reference) for m in manifests]
    plans = plan_joint(inputs, plan_settings(settings))
    for plan, out in zip(plans, args.out, strict=True):
        write_plan(plan, f"{out}.tmp", store.counts)
    for out in args.out:
        os.replace(f"{out}.tmp", out)
    logger.info(
        "planned %d samples together: %d regions, %.2f MB to fetch of %.2f MB of BAMs, in %.2f s; read %s",
        len(plans), len(plans[0].regions), sum(p.fetch_bytes for p in plans) / 1e6,
        sum(p.bam_size for p in plans) / 1e6, time.monotonic() - t0, store.counts.line(),
    )


def cmd_call(settings: StepSettings, args: argparse.Namespace) -> None:
    from functions.engines import make_params
    from pipeline.call import CallError, CallInputs, call_samples, call_share
    from pipeline.manifests import ScatterShare, StagedReference, StagedSample
    from pipeline.plan import read_plan

    calling = settings.calling
    params = make_params(calling["engine"], calling[calling["engine"]])
    plans = [read_plan(p) for p in args.plans]
    staged = {m.sample: m for m in (StagedSample.read(p) for p in args.staged)}
    cohort = settings.cohort
    store = open_store(settings)
    primers = None
    if calling.get("primers"):
        from functions.core.primers import read_primer_bed

        primers = read_primer_bed(calling["primers"])
    ref_manifest = StagedReference.read(args.reference)
    called = None
    if calling.get("targets") or calling.get("exclude"):
        from functions.core.targets import targets

        called = targets([(c.name, c.length) for c in ref_manifest.contigs], calling.get("targets"),
                         calling.get("exclude"), f"the reference {ref_manifest.fasta.path}")
    inputs = CallInputs(store, plans, staged, ref_manifest, params, settings.faults, cohort, primers, called)
    try:
        if args.scatter_job is not None:
            # Cluster scatter mode: this Snakemake job calls its share itself, region after region.
            serial = make_runner({**settings.executor, "runner": "serial"}, settings.lithops)
            summary = call_share(inputs, serial, args.scatter_job, settings.executor["jobs"], args.out[0])
        else:
            names = [cohort] if cohort else [p.sample for p in plans]
            outs = dict(zip(names, args.out, strict=True))
            scattered = None
            if args.scattered:  # the scatter jobs ran every region: nothing to run here
                scattered = {}
                for path in args.scattered:
                    scattered.update(ScatterShare.read(path).fragments)
            runner = None if scattered is not None else make_runner(settings.executor, settings.lithops)
            summary = call_samples(inputs, runner, outs, scattered=scattered)
    except FanOutError as exc:
        raise CallError(rerun_hint(exc, "region", "call", args.log)) from exc
    logger.info(summary.line())
    logger.info("the call step itself (checks, reused fragments' stats): %s", store.counts.line())


def cmd_merge(settings: StepSettings, args: argparse.Namespace) -> None:
    from pipeline.merge import FragmentError, merge_sample

    rerun = "call_scatter" if settings.executor["runner"] == "snakemake" else "call"
    md5s = None
    if args.reference_manifest:
        from pipeline.manifests import StagedReference

        md5s = {c.name: c.md5 for c in StagedReference.read(args.reference_manifest).contigs if c.md5}
    try:
        merge_sample(open_store(settings), args.calls, settings.reference, args.out, args.stats, rerun=rerun,
                     contig_md5=md5s)
    except FragmentError:
        # The manifest names a fragment the store no longer holds intact: without it the
        # next run calls again (reusing every intact fragment) instead of failing here again.
        os.remove(args.calls)
        logger.debug("removed %s: the next run recomputes what is missing", args.calls)
        raise
    if args.consensus:
        from pipeline.consensus import ConsensusSettings, write_consensus
        from pipeline.manifests import CallResults

        calls = CallResults.read(args.calls)
        c = settings.consensus
        if c is None:
            raise KeyError("the merge step was asked for a consensus but given no consensus settings")
        write_consensus(calls.sample, settings.reference, args.out, calls.fragments, ConsensusSettings.from_dict(c),
                        args.consensus)
        logger.info("consensus of %s -> %s", calls.sample, args.consensus)


def cmd_report(settings: StepSettings, args: argparse.Namespace) -> None:
    from pipeline.provenance import version_mismatches
    from pipeline.report import build_report, load_run

    summary = settings.summary  # engine and mode, runner, Lithops backend and storage: all the report names
    run = load_run(summary, {"lithops": summary["lithops"]}, args.calls, args.vcfs, args.plans, args.staged,
                   args.aligned or [], args.logs, viral=settings.viral_report, consensus=args.consensus or [])
    build_report(run, settings.report["cost"], args.out, args.mqc, args.minority, args.versions)
    for warning in version_mismatches(run.versions):
        logger.warning("warning: %s", warning)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline.cli", description=__doc__)
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="step", required=True)

    def step(name: str, func: Callable[[StepSettings, argparse.Namespace], None]) -> argparse.ArgumentParser:
        p = sub.add_parser(name)
        p.add_argument("--settings", required=True, help="the step's settings as JSON (or the whole workflow config)")
        p.add_argument("--log", help="log file")
        p.set_defaults(func=func)
        return p

    step("check-storage", cmd_check_storage).add_argument("--out", required=True)
    step("stage-reference", cmd_stage_reference).add_argument("--out", required=True)
    p = step("stage-sample", cmd_stage_sample)
    p.add_argument("--sample", required=True)
    p.add_argument("--out", required=True)
    p = step("index-reference", cmd_index_reference)
    p.add_argument("--workdir", required=True, help="where the index is built")
    p.add_argument("--out", required=True)
    p = step("stage-fastq", cmd_stage_fastq)
    p.add_argument("--sample", required=True)
    p.add_argument("--workdir", required=True, help="where the chunked copies are written")
    p.add_argument("--out", required=True)
    p = step("align", cmd_align)
    p.add_argument("--staged", nargs="+", required=True, help="staged FASTQ manifests")
    p.add_argument("--index", required=True, help="the staged minimap2 index's manifest")
    p.add_argument("--reference", required=True)
    p.add_argument("--out", nargs="+", required=True)
    p = step("merge-alignments", cmd_merge_alignments)
    p.add_argument("--parts", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)
    p = step("plan", cmd_plan)
    p.add_argument("--sample", required=True)
    p.add_argument("--staged", required=True)
    p.add_argument("--reference", help="the staged reference's manifest: its contigs are checked against the BAM")
    p.add_argument("--out", required=True)
    p = step("plan-joint", cmd_plan_joint)
    p.add_argument("--staged", nargs="+", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--out", nargs="+", required=True, help="one plan per sample, in the order of --staged")
    p = step("call", cmd_call)
    p.add_argument("--plans", nargs="+", required=True)
    p.add_argument("--staged", nargs="+", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--out", nargs="+", required=True)
    p.add_argument("--scatter-job", type=int,
                   help="cluster scatter mode: call only this job's share (0-based, of executor.jobs); "
                        "--out is the job's stats JSON")
    p.add_argument("--scattered", nargs="+", help="cluster scatter mode: the scatter jobs' stats; run nothing")
    p = step("merge", cmd_merge)
    p.add_argument("--calls", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--consensus", help="write the sample's consensus FASTA here (lowfreq engine)")
    p.add_argument("--reference-manifest", help="the staged reference's manifest: its contigs' MD5s go into the "
                   "VCF header (##contig md5=)")
    p = step("report", cmd_report)
    p.add_argument("--calls", nargs="+", required=True, help="the call manifests, one per VCF")
    p.add_argument("--vcfs", nargs="+", required=True, help="the merged VCFs, in the order of --calls")
    p.add_argument("--plans", nargs="+", required=True)
    p.add_argument("--staged", nargs="+", required=True, help="the staged samples' manifests")
    p.add_argument("--aligned", nargs="*", help="the alignment manifests of FASTQ samples")
    p.add_argument("--logs", help="the folder of the step logs")
    p.add_argument("--out", required=True, help="the HTML report")
    p.add_argument("--mqc", required=True, help="the MultiQC custom-content table (*_mqc.tsv)")
    p.add_argument("--consensus", nargs="*", help="the consensus FASTAs (<sample>.consensus.fa; lowfreq engine)")
    p.add_argument("--minority", help="write the minority-variant table here (lowfreq engine)")
    p.add_argument("--versions", help="write what the run ran on here (results/versions.tsv)")
    return ap


def quiet_record(record: logging.LogRecord) -> bool:
    """False for the log lines a person does not need from a run that went well: Lithops'
    wait loop ("Waiting for 0% of 16 function activations", five times a second) and
    anything below INFO."""
    return record.levelno >= logging.INFO and not (record.name == "lithops.wait" and record.levelno < logging.WARNING)


def setup_logging(log: str | None, debug: bool) -> None:
    """The console gets progress and the summary; the step log (``log``) every INFO line
    of ours and Lithops' (:func:`quiet_record`), or, with ``--debug`` or config
    ``logs.debug`` (``SVC_DEBUG_LOGS=1``), every DEBUG line too."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if debug else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    # Lithops warns of every failed call without naming its region; the runner logs each
    # retry with its region and reason in the log file, and the summary counts them.
    console.addFilter(
        lambda r: r.name.startswith("pipeline") or (r.levelno >= logging.WARNING and r.name != "lithops.future")
    )
    root.addHandler(console)
    if log:
        os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
        fh = logging.FileHandler(log, mode="w")
        fh.setLevel(logging.DEBUG)
        if not (debug or os.environ.get("SVC_DEBUG_LOGS") == "1"):
            fh.addFilter(quiet_record)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)


TIMING = logging.getLogger("svc.timing")  # the step log only (the console shows pipeline.* lines)


def log_timing(step: str, entered: float) -> None:
    """One line for :mod:`pipeline.phases`: when the step's process started (interpreter
    and imports until ``entered``), and when its work ended."""
    TIMING.info("timing %s", json.dumps({"step": step, "process_start": process_start(), "entered": entered,
                                          "ended": time.time()}))


def main(argv: Sequence[str] | None = None) -> int:
    entered = time.time()
    args = build_parser().parse_args(argv)
    setup_logging(args.log, args.debug)
    try:
        settings = read_step_settings(args.settings, args.step, getattr(args, "sample", None))
        args.func(settings, args)
        log_timing(args.step, entered)
    except Exception as exc:
        if isinstance(exc, OSError) and not isinstance(exc, SvcError) and isinstance(exc.filename, str):
            # A full disk or an unwritable folder, met wherever a step writes: one line.
            exc = folder_error(exc, exc.filename)
        if not isinstance(exc, SvcError):
            # Not a problem of the input or the setup: a bug. Show it whole.
            logger.exception("failed")
            _say(f"error: {args.step} failed unexpectedly ({type(exc).__name__}: {exc}); this is a bug of the "
                 f"pipeline: please report it with the traceback above and {args.log or 'the step log'}")
            return 2
        if args.debug:
            logger.exception("failed")
        _say("error: " + " ".join(str(exc).split()))
        logging.getLogger(__name__).debug("failed", exc_info=True)
        return 1
    return 0


def svc(argv: Sequence[str] | None = None) -> int:
    """The ``svc`` console command: ``svc --version`` prints the versions of the workflow
    and of what it runs on, one per line; the workflow itself runs through Snakemake."""
    ap = argparse.ArgumentParser(
        prog="svc", description="serverless-variant-calling: the workflow runs with `snakemake -s <its Snakefile> "
        "--cores 2` (README 'Quick start', 'Your own data'); its steps are `python -m pipeline.cli STEP`.")
    ap.add_argument("--version", action="store_true", help="print the versions of the workflow and its tools")
    args = ap.parse_args(argv)
    if not args.version:
        ap.print_help()
        return 0
    from pipeline.provenance import versions

    for name, version in versions().items():
        print(f"{name}\t{version}")
    return 0


def _say(line: str) -> None:
    """One line to stderr in one write: Snakemake runs steps side by side on one stderr,
    and a line written in two parts (print writes its end of line apart) can be cut
    by another step's output."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
