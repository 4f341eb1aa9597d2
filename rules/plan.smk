# Plan each sample's regions from its BAM index (read from the store), after checking
# its header against the reference: a wrong reference stops here, before any function.
# Joint mode plans all samples in one step, over regions they share.

if not COHORT:

    rule plan:
        input:
            staged=f"{WORK}/staged/{{sample}}.json",
            reference=f"{WORK}/staged/reference.json",
            beds=get_target_beds(),
        output:
            f"{WORK}/plans/{{sample}}.tsv",
        log:
            f"{WORK}/logs/plan_{{sample}}.log",
        resources:
            mem_mb=500,  # the BAI and the BAM header
            runtime=10,
        params:
            settings=get_step_settings("plan"),
            python=PY,
        shell:
            "{params.python} -m pipeline.cli plan --settings {params.settings:q} --sample {wildcards.sample}"
            " --staged {input.staged} --reference {input.reference} --out {output} --log {log}"

else:

    rule plan_joint:
        input:
            staged=expand(f"{WORK}/staged/{{sample}}.json", sample=SAMPLES),
            reference=f"{WORK}/staged/reference.json",
            beds=get_target_beds(),
        output:
            get_plans(),
        log:
            f"{WORK}/logs/plan_joint.log",
        resources:
            mem_mb=500,  # every sample's BAI and BAM header
            runtime=10,
        params:
            settings=get_step_settings("plan-joint"),
            python=PY,
        shell:
            "{params.python} -m pipeline.cli plan-joint --settings {params.settings:q} --staged {input.staged}"
            " --reference {input.reference} --out {output} --log {log}"
