# Merge each sample's (or the cohort's) fragments (checked first) into one indexed VCF and its
# stats; with the lowfreq engine, also the sample's consensus genome.


rule merge:
    input:
        calls=f"{WORK}/calls/{{callset}}.json",
        reference=f"{WORK}/staged/reference.json",  # its contigs' MD5s go into the VCF header
    output:
        vcf="results/{callset}.vcf.gz",
        tbi="results/{callset}.vcf.gz.tbi",
        stats="results/{callset}.stats.txt",
        **({"consensus": "results/{callset}.consensus.fa"} if CONSENSUS else {}),
    log:
        f"{WORK}/logs/merge_{{callset}}.log",
    resources:
        mem_mb=1000,  # one fragment at a time: 58 MB peak at 5 million records (bench/bench_merge.py)
        runtime=30,
    params:
        settings=get_step_settings("merge"),
        python=PY,
        consensus=lambda wildcards, output: f"--consensus {output.consensus}" if CONSENSUS else "",
    shell:
        "{params.python} -m pipeline.cli merge --settings {params.settings:q} --calls {input.calls}"
        " --reference-manifest {input.reference}"
        " --out {output.vcf} --stats {output.stats} {params.consensus} --log {log}"
