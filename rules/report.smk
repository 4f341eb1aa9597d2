# The run report: results/report.html (one self-contained page: variants per sample,
# the fan-out timeline, function durations and stragglers, bytes read, estimated cloud
# cost) and results/run_metrics_mqc.tsv (run metrics for MultiQC, beside the VCFs'
# bcftools stats). `snakemake --report` embeds the page.


rule report:
    input:
        calls=expand(f"{WORK}/calls/{{callset}}.json", callset=CALLSETS),
        vcfs=expand("results/{callset}.vcf.gz", callset=CALLSETS),
        stats=expand("results/{callset}.stats.txt", callset=CALLSETS),
        plans=get_plans(),
        staged=expand(f"{WORK}/staged/{{sample}}.json", sample=SAMPLES),
        aligned=expand(f"{WORK}/aligned/{{sample}}.json", sample=FASTQ_SAMPLES),
    output:
        html=report("results/report.html", caption="../docs/report_caption.rst", category="Run report"),
        mqc="results/run_metrics_mqc.tsv",
    log:
        f"{WORK}/logs/report.log",
    resources:
        mem_mb=500,
        runtime=30,
    params:
        settings=get_step_settings("report"),
        python=PY,
        aligned=get_aligned_arg,
    shell:
        "{params.python} -m pipeline.cli report --settings {params.settings:q} --calls {input.calls}"
        " --vcfs {input.vcfs} --plans {input.plans} --staged {input.staged} {params.aligned}"
        f" --logs {WORK}/logs --out {{output.html}} --mqc {{output.mqc}} --log {{log}}"
