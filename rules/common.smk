# Shared set-up: validate the config and sample sheet once, and small get_* helpers.
import json
import sys

from pipeline.config import ConfigError, load_settings

try:
    SETTINGS = load_settings(config)
except ConfigError as exc:
    sys.exit(f"error: {exc}")

SAMPLES = [s.name for s in SETTINGS.samples]
WORK = "work"
PY = sys.executable
# The validated config travels to each step as JSON (quoted with :q in the shell lines).
SETTINGS_JSON = json.dumps(SETTINGS.raw, sort_keys=True)


wildcard_constraints:
    sample="|".join(SAMPLES),


def get_bam(wildcards):
    return SETTINGS.sample(wildcards.sample).bam


def get_bai(wildcards):
    return SETTINGS.sample(wildcards.sample).bai


def get_final_outputs():
    return expand(
        ["results/{sample}.vcf.gz", "results/{sample}.vcf.gz.tbi", "results/{sample}.stats.txt"],
        sample=SAMPLES,
    )
