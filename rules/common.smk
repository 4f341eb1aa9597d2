# Shared set-up: validate the config and sample sheet once, and small get_* helpers.
import os
import re
import sys

from functions.core.atomic import OutputError, check_writable
from functions.engines import keeps_depth
from pipeline.config import ConfigError, load_settings, step_settings
from pipeline.hooks import cancel_scheduler_timers

try:
    SETTINGS = load_settings(config)
except ConfigError as exc:
    sys.exit(f"error: {exc}")

SAMPLES = [s.name for s in SETTINGS.samples]
FASTQ_SAMPLES = [s.name for s in SETTINGS.samples if s.aligned]
# Joint mode calls every sample together into results/{COHORT}.vcf.gz; else None.
COHORT = SETTINGS.cohort
# What a VCF is made for: each sample, or the cohort.
CALLSETS = [COHORT] if COHORT else SAMPLES
# The amplicon scheme's primer BED (calling.primers), or None.
PRIMERS = SETTINGS.calling.get("primers")
# Consensus genomes (results/<sample>.consensus.fa): with the lowfreq engine.
CONSENSUS = SETTINGS.consensus_wanted
# The viral view of the report and results/minority_variants.tsv: with an engine that
# keeps a depth track (lowfreq).
VIRAL_REPORT = keeps_depth(SETTINGS.calling["engine"])
# Cluster scatter mode (executor.runner: snakemake): the calls run as SCATTER_JOBS jobs.
SCATTER_JOBS = SETTINGS.executor["jobs"] if SETTINGS.executor["runner"] == "snakemake" else 0
WORK = "work"
PY = sys.executable
# The step logs' detail (config logs.debug): set in every step's environment by the
# shell prefix, not in its command, so that changing it reruns nothing.
if SETTINGS.raw.get("logs", {}).get("debug"):
    shell.prefix("set -euo pipefail; export SVC_DEBUG_LOGS=1; ")  # the first part is the default prefix
# Every folder the workflow writes must take a new file before anything runs: a
# read-only or inaccessible results/ stops the run here, in one line, not after the calls.
try:
    for folder in ("results", WORK):
        check_writable(folder)
except OutputError as exc:
    sys.exit(f"error: {exc}")
# Cores of a step that fans out through Lithops: localhost runs its workers in that job.
_backend = SETTINGS.lithops.get("lithops", {}).get("backend", "localhost")
FANOUT_THREADS = SETTINGS.lithops.get("localhost", {}).get("worker_processes", 2) if _backend == "localhost" else 1


wildcard_constraints:
    sample="|".join(re.escape(s) for s in SAMPLES),
    callset="|".join(re.escape(s) for s in CALLSETS),
    job=r"\d+",


def get_bam(wildcards):
    """The local BAM to stage; none for a BAM already in object storage (s3://)."""
    sample = SETTINGS.sample(wildcards.sample)
    return [] if sample.remote else sample.bam


def get_fastqs(wildcards):
    """The sample's two FASTQs (a sample given as FASTQs)."""
    return list(SETTINGS.sample(wildcards.sample).fastq)


def get_reference():
    """The local reference to stage; none for one already in object storage."""
    return [] if SETTINGS.reference_is_remote else SETTINGS.reference


def get_storage_checked():
    """The check_storage marker, for a remote store only: a local folder needs no check
    (and the run saves one job before staging)."""
    backend = SETTINGS.lithops.get("lithops", {}).get("storage")  # Lithops defaults to aws_s3
    return [] if backend == "localhost" else f"{WORK}/storage.checked"


def get_target_beds():
    """calling.targets and calling.exclude BEDs (local files): inputs of the steps that
    read them (planning, calling), so that a changed BED plans and calls again."""
    return [SETTINGS.calling[k] for k in ("targets", "exclude") if SETTINGS.calling.get(k)]


def get_plans():
    """Each sample's region plan: its own, or in joint mode the one all samples share."""
    return expand(f"{WORK}/plans/{'joint/' if COHORT else ''}{{sample}}.tsv", sample=SAMPLES)


def get_final_outputs():
    return (
        expand(
            ["results/{callset}.vcf.gz", "results/{callset}.vcf.gz.tbi", "results/{callset}.stats.txt"],
            callset=CALLSETS,
        )
        + expand("results/{sample}.align.txt", sample=FASTQ_SAMPLES)
        + expand("results/{callset}.consensus.fa", callset=CALLSETS if CONSENSUS else [])
        + ["results/report.html", "results/run_metrics_mqc.tsv", "results/versions.tsv"]
        + (["results/minority_variants.tsv"] if VIRAL_REPORT else [])
    )


def get_index_mem_mb():
    """Memory to build the minimap2 index: about 3.2 bytes per base (measured), and room."""
    ref = SETTINGS.reference
    size = os.path.getsize(ref) if os.path.exists(ref) else 0
    return 1000 + 4 * size // 1_000_000


def get_bam_fingerprint(wildcards):
    """The content fingerprint the sample's local BAM will be staged with (MD5 of its size,
    ends and index; pipeline.stage.bam_fingerprint): as a param of stage_sample, a BAM
    replaced by another, even of the same size and mtime, is staged (and called) again.
    Empty for a BAM in object storage (its ETag names it) or one the workflow aligns."""
    from pipeline.stage import bam_fingerprint

    sample = SETTINGS.sample(wildcards.sample)
    if sample.remote or sample.aligned or not os.path.exists(sample.bam):
        return ""
    return bam_fingerprint(sample.name, sample.bam, sample.bai, f"{WORK}/staged")


# Each rule's settings param: the JSON of only what its step uses (quoted with :q in the
# shell lines), so that a changed key reruns exactly the steps that read it (Snakemake's
# params trigger), e.g. a report price only the report. Validated above, once.
def get_step_settings(step):
    """The settings of `step` (a pipeline.cli subcommand; pipeline.config.STEP_SECTIONS)."""
    return step_settings(SETTINGS, step).to_json()


def get_stage_sample_settings(wildcards):
    """stage-sample's settings, with the job's sample row (its BAM path or URL): a changed
    path re-stages the sample."""
    return step_settings(SETTINGS, "stage-sample", wildcards.sample).to_json()


def get_stage_fastq_settings(wildcards):
    """stage-fastq's settings, with the job's sample row (its two FASTQs)."""
    return step_settings(SETTINGS, "stage-fastq", wildcards.sample).to_json()


def get_scattered_arg(wildcards, input):
    """The call step's --scattered argument: the scatter jobs' stats (cluster scatter mode)."""
    return f"--scattered {' '.join(input.scattered)}" if input.scattered else ""


def get_aligned_arg(wildcards, input):
    """The report's --aligned argument: the FASTQ samples' alignment manifests."""
    return f"--aligned {' '.join(input.aligned)}" if input.aligned else ""


def get_viral_report_args(wildcards, input, output):
    """The report's --consensus and --minority arguments (lowfreq engine)."""
    args = []
    if CONSENSUS:
        args.append(f"--consensus {' '.join(input.consensus)}")
    if VIRAL_REPORT:
        args.append(f"--minority {output.minority}")
    return " ".join(args)
