# Plan each sample's regions from its BAM index (read from the store).


rule plan:
    input:
        f"{WORK}/staged/{{sample}}.json",
    output:
        f"{WORK}/plans/{{sample}}.tsv",
    log:
        f"{WORK}/logs/plan_{{sample}}.log",
    params:
        settings=SETTINGS_JSON,
        python=PY,
    shell:
        "{params.python} -m pipeline.cli plan --settings {params.settings:q} --sample {wildcards.sample}"
        " --staged {input} --out {output} --log {log}"
