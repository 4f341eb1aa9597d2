# Shared set-up: validate the config and sample sheet once, and small get_* helpers.
import json
import sys

from pipeline.config import ConfigError, load_settings

try:
    SETTINGS = load_settings(config)
except ConfigError as exc:
    sys.exit(f"error: {exc}")

SAMPLES = [s.name for s in SETTINGS.samples]
FASTQ_SAMPLES = [s.name for s in SETTINGS.samples if s.aligned]
WORK = "work"
PY = sys.executable
# The validated config travels to each step as JSON (quoted with :q in the shell lines).
SETTINGS_JSON = json.dumps(SETTINGS.raw, sort_keys=True)


wildcard_constraints:
    sample="|".join(SAMPLES),


def get_bam(wildcards):
    """The local BAM to stage; none for a BAM already in object storage (s3://)."""
    sample = SETTINGS.sample(wildcards.sample)
    return [] if sample.remote else sample.bam


def get_fastqs(wildcards):
    """The sample's two FASTQs (a sample given as FASTQs)."""
    return list(SETTINGS.sample(wildcards.sample).fastq)


def get_bam_source(wildcards):
    """Where the sample's BAM is (path or URL): a change re-stages the sample."""
    return SETTINGS.sample(wildcards.sample).bam


def get_reference():
    """The local reference to stage; none for one already in object storage."""
    return [] if SETTINGS.reference_is_remote else SETTINGS.reference


def get_storage_checked():
    """The check_storage marker, for a remote store only: a local folder needs no check
    (and the run saves one job before staging)."""
    backend = SETTINGS.lithops.get("lithops", {}).get("storage")  # Lithops defaults to aws_s3
    return [] if backend == "localhost" else f"{WORK}/storage.checked"


def get_final_outputs():
    return expand(
        ["results/{sample}.vcf.gz", "results/{sample}.vcf.gz.tbi", "results/{sample}.stats.txt"],
        sample=SAMPLES,
    ) + expand("results/{sample}.align.txt", sample=FASTQ_SAMPLES)
