# The run report: results/report.html (one self-contained page: variants per sample,
# the fan-out timeline, function durations and stragglers, bytes read, estimated cloud
# cost; with the lowfreq engine also depth along the genome, coverage, amplicon
# dropouts and the minority-variant heatmap) and results/run_metrics_mqc.tsv (run
# metrics for MultiQC, beside the VCFs' bcftools stats); with the lowfreq engine,
# results/minority_variants.tsv (every allele called in any sample, per sample).
# `snakemake --report` embeds the page.


rule report:
    localrule: True
    input:
        calls=expand(f"{WORK}/calls/{{callset}}.json", callset=CALLSETS),
        vcfs=expand("results/{callset}.vcf.gz", callset=CALLSETS),
        stats=expand("results/{callset}.stats.txt", callset=CALLSETS),
        plans=get_plans(),
        staged=expand(f"{WORK}/staged/{{sample}}.json", sample=SAMPLES),
        aligned=expand(f"{WORK}/aligned/{{sample}}.json", sample=FASTQ_SAMPLES),
        consensus=expand("results/{callset}.consensus.fa", callset=CALLSETS if CONSENSUS else []),
        # The amplicon scheme, whose amplicons the report names when they drop out.
        primers=[PRIMERS] if PRIMERS and VIRAL_REPORT else [],
    output:
        html=report("results/report.html", caption="../docs/report_caption.rst", category="Run report"),
        mqc="results/run_metrics_mqc.tsv",
        versions="results/versions.tsv",
        **({"minority": "results/minority_variants.tsv"} if VIRAL_REPORT else {}),
    log:
        f"{WORK}/logs/report.log",
    resources:
        mem_mb=500,
        runtime=30,
    params:
        settings=get_step_settings("report"),
        python=PY,
        aligned=get_aligned_arg,
        viral=get_viral_report_args,
    shell:
        "{params.python} -m pipeline.cli report --settings {params.settings:q} --calls {input.calls}"
        " --vcfs {input.vcfs} --plans {input.plans} --staged {input.staged} {params.aligned} {params.viral}"
        f" --logs {WORK}/logs --out {{output.html}} --mqc {{output.mqc}} --versions {{output.versions}} --log {{log}}"
