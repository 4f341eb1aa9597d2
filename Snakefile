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


# On a cluster (profiles/slurm) these run where snakemake runs, not as jobs.
localrules:
    all,
    check_storage,
    report,


rule all:
    input:
        get_final_outputs(),
