# The calls: one function per (sample, region), or per region for all samples in joint
# mode; they write VCF fragments to the store. With executor.runner lithops (or serial)
# one step runs them all in one fan-out. With runner snakemake (cluster scatter mode)
# SCATTER_JOBS Snakemake jobs (SLURM jobs under profiles/slurm) each call their share of
# the regions with the same function, and the call step only checks the fragments and
# writes the manifests the merge reads.

CALL_INPUTS = dict(
    plans=get_plans(),
    staged=expand(f"{WORK}/staged/{{sample}}.json", sample=SAMPLES),
    reference=f"{WORK}/staged/reference.json",
    # The amplicon scheme, read by the call step (its primers enter the fragment keys).
    primers=[PRIMERS] if PRIMERS else [],
    beds=get_target_beds(),
)

if SCATTER_JOBS:

    rule call_scatter:
        input:
            **CALL_INPUTS,
        output:
            f"{WORK}/scatter/{{job}}.json",
        log:
            f"{WORK}/logs/call_scatter_{{job}}.log",
        benchmark:
            f"{WORK}/benchmarks/call_scatter_{{job}}.tsv"
        resources:
            mem_mb=1000,  # one region's BAM slices and bcftools at a time
            runtime=120,
        params:
            settings=get_step_settings("call"),
            python=PY,
        shell:
            "{params.python} -m pipeline.cli call --settings {params.settings:q} --plans {input.plans}"
            " --staged {input.staged} --reference {input.reference} --scatter-job {wildcards.job}"
            " --out {output} --log {log}"


rule call:
    localrule: bool(SCATTER_JOBS)  # in scatter mode only gathers the jobs' results
    input:
        **CALL_INPUTS,
        scattered=expand(f"{WORK}/scatter/{{job}}.json", job=range(SCATTER_JOBS)),
    output:
        expand(f"{WORK}/calls/{{callset}}.json", callset=CALLSETS),
    log:
        f"{WORK}/logs/call.log",
    benchmark:
        f"{WORK}/benchmarks/call.tsv"
    threads: 1 if SCATTER_JOBS else FANOUT_THREADS
    resources:
        mem_mb=500 if SCATTER_JOBS else 1000 + 1000 * FANOUT_THREADS,
        runtime=120,
    params:
        settings=get_step_settings("call"),
        python=PY,
        scattered=get_scattered_arg,
    shell:
        "{params.python} -m pipeline.cli call --settings {params.settings:q} --plans {input.plans}"
        " --staged {input.staged} --reference {input.reference} {params.scattered}"
        " --out {output} --log {log}"
