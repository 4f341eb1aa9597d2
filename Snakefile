# serverless-variant-calling: (FASTQ -> aligned chunks ->) BAM -> per-region calls in serverless functions -> one VCF.
# The rules are thin; the work is in pipeline/ and functions/. See README.md.

configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/stage.smk"
include: "rules/align.smk"
include: "rules/plan.smk"
include: "rules/call.smk"
include: "rules/merge.smk"
include: "rules/report.smk"


# On a cluster (profiles/slurm), rules marked localrule run where snakemake runs, not
# as jobs: all, check_storage, report, and call in cluster scatter mode. (Marked on
# each rule rather than in a localrules list, so that they stay local, without
# warnings, when the workflow is used as a module under other rule names.)
rule all:
    localrule: True
    input:
        get_final_outputs(),


# Snakemake's scheduler leaves a timer of up to 1 s pending after the last job, which
# the interpreter waits for before it exits: cancelled once every job is done
# (pipeline/hooks.py).
onsuccess:
    cancel_scheduler_timers()


onerror:
    cancel_scheduler_timers()
