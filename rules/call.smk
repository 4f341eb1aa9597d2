# One fan-out over every (sample, region): functions write VCF fragments to the store.


rule call:
    input:
        plans=expand(f"{WORK}/plans/{{sample}}.tsv", sample=SAMPLES),
        staged=expand(f"{WORK}/staged/{{sample}}.json", sample=SAMPLES),
        reference=f"{WORK}/staged/reference.json",
    output:
        expand(f"{WORK}/calls/{{sample}}.json", sample=SAMPLES),
    log:
        f"{WORK}/logs/call.log",
    benchmark:
        f"{WORK}/benchmarks/call.tsv"
    params:
        settings=SETTINGS_JSON,
        python=PY,
    shell:
        "{params.python} -m pipeline.cli call --settings {params.settings:q} --plans {input.plans}"
        " --staged {input.staged} --reference {input.reference} --out {output} --log {log}"
