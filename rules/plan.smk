# Plan each sample's regions from its BAM index (read from the store), after checking
# its header against the reference: a wrong reference stops here, before any function.


rule plan:
    input:
        staged=f"{WORK}/staged/{{sample}}.json",
        reference=f"{WORK}/staged/reference.json",
    output:
        f"{WORK}/plans/{{sample}}.tsv",
    log:
        f"{WORK}/logs/plan_{{sample}}.log",
    params:
        settings=SETTINGS_JSON,
        python=PY,
    shell:
        "{params.python} -m pipeline.cli plan --settings {params.settings:q} --sample {wildcards.sample}"
        " --staged {input.staged} --reference {input.reference} --out {output} --log {log}"
