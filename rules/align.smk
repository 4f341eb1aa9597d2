# Samples given as FASTQ pairs: chunk them as they are staged, align each chunk in a
# function (minimap2 through mappy), merge the sorted parts into results/{sample}.bam.
# That BAM is then staged, planned and called like any other (rules/stage.smk).

if FASTQ_SAMPLES:

    rule index_reference:
        input:
            get_reference(),
            get_storage_checked(),
        output:
            f"{WORK}/index/minimap2.json",
        log:
            f"{WORK}/logs/index_reference.log",
        resources:
            mem_mb=get_index_mem_mb(),
            runtime=120,
        params:
            settings=get_step_settings("index-reference"),
            python=PY,
        shell:
            "{params.python} -m pipeline.cli index-reference --settings {params.settings:q}"
            f" --workdir {WORK}/index --out {{output}} --log {{log}}"

    rule stage_fastq:
        input:
            fastq=get_fastqs,
            checked=get_storage_checked(),
        output:
            f"{WORK}/staged/fastq/{{sample}}.json",
        log:
            f"{WORK}/logs/stage_fastq_{{sample}}.log",
        resources:
            mem_mb=1000,  # streams the reads
            runtime=120,
        params:
            settings=get_stage_fastq_settings,
            python=PY,
        shell:
            "{params.python} -m pipeline.cli stage-fastq --settings {params.settings:q} --sample {wildcards.sample}"
            f" --workdir {WORK}/fastq --out {{output}} --log {{log}}"

    # One fan-out over every chunk of every FASTQ sample.
    rule align:
        input:
            staged=expand(f"{WORK}/staged/fastq/{{sample}}.json", sample=FASTQ_SAMPLES),
            index=f"{WORK}/index/minimap2.json",
            reference=f"{WORK}/staged/reference.json",
        output:
            expand(f"{WORK}/aligned/{{sample}}.json", sample=FASTQ_SAMPLES),
        log:
            f"{WORK}/logs/align.log",
        benchmark:
            f"{WORK}/benchmarks/align.tsv"
        threads: FANOUT_THREADS
        resources:
            mem_mb=1000 + 1000 * FANOUT_THREADS,  # Lithops localhost: ~0.5 GB per worker at 50,000 pairs
            runtime=240,
        params:
            settings=get_step_settings("align"),
            python=PY,
        shell:
            "{params.python} -m pipeline.cli align --settings {params.settings:q} --staged {input.staged}"
            " --index {input.index} --reference {input.reference} --out {output} --log {log}"

    rule merge_alignments:
        input:
            f"{WORK}/aligned/{{sample}}.json",
        output:
            bam="results/{sample}.bam",
            bai="results/{sample}.bam.bai",
            stats="results/{sample}.align.txt",
        log:
            f"{WORK}/logs/merge_alignments_{{sample}}.log",
        resources:
            mem_mb=2000,  # samtools merge, streaming
            runtime=120,
        params:
            settings=get_step_settings("merge-alignments"),
            python=PY,
        shell:
            "{params.python} -m pipeline.cli merge-alignments --settings {params.settings:q} --parts {input}"
            " --out {output.bam} --stats {output.stats} --log {log}"
