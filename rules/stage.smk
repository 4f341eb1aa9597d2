# Stage inputs into object storage; later steps read them from the store only.


# With a remote store one job checks it first, so a wrong key, bucket or endpoint
# gives one line (see get_storage_checked).
rule check_storage:
    localrule: True
    output:
        temp(f"{WORK}/storage.checked"),
    log:
        f"{WORK}/logs/check_storage.log",
    resources:
        mem_mb=500,
        runtime=5,
    params:
        settings=get_step_settings("check-storage"),
        python=PY,
    shell:
        "{params.python} -m pipeline.cli check-storage --settings {params.settings:q} --out {output} --log {log}"


rule stage_reference:
    input:
        get_reference(),
        get_storage_checked(),
    output:
        f"{WORK}/staged/reference.json",
    log:
        f"{WORK}/logs/stage_reference.log",
    resources:
        mem_mb=1000,  # streams the FASTA; the .fai and contig digests
        runtime=60,
    params:
        settings=get_step_settings("stage-reference"),
        python=PY,
    shell:
        "{params.python} -m pipeline.cli stage-reference --settings {params.settings:q} --out {output} --log {log}"


rule stage_sample:
    input:
        bam=get_bam,
        checked=get_storage_checked(),
    output:
        f"{WORK}/staged/{{sample}}.json",
    log:
        f"{WORK}/logs/stage_{{sample}}.log",
    resources:
        mem_mb=1000,  # streams the BAM in parts
        runtime=120,
    params:
        fingerprint=get_bam_fingerprint,  # a changed BAM is staged again, whatever its mtime
        settings=get_stage_sample_settings,
        python=PY,
    shell:
        "{params.python} -m pipeline.cli stage-sample --settings {params.settings:q} --sample {wildcards.sample}"
        " --out {output} --log {log}"
