# Stage inputs into object storage; later steps read them from the store only.


rule stage_reference:
    input:
        SETTINGS.reference,
    output:
        f"{WORK}/staged/reference.json",
    log:
        f"{WORK}/logs/stage_reference.log",
    params:
        settings=SETTINGS_JSON,
        python=PY,
    shell:
        "{params.python} -m pipeline.cli stage-reference --settings {params.settings:q} --out {output} --log {log}"


rule stage_sample:
    input:
        bam=get_bam,
    output:
        f"{WORK}/staged/{{sample}}.json",
    log:
        f"{WORK}/logs/stage_{{sample}}.log",
    params:
        settings=SETTINGS_JSON,
        python=PY,
    shell:
        "{params.python} -m pipeline.cli stage-sample --settings {params.settings:q} --sample {wildcards.sample}"
        " --out {output} --log {log}"
