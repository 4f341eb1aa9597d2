# Merge each sample's fragments (checked first) into one indexed VCF and its stats.


rule merge:
    input:
        f"{WORK}/calls/{{sample}}.json",
    output:
        vcf="results/{sample}.vcf.gz",
        tbi="results/{sample}.vcf.gz.tbi",
        stats="results/{sample}.stats.txt",
    log:
        f"{WORK}/logs/merge_{{sample}}.log",
    params:
        settings=SETTINGS_JSON,
        python=PY,
    shell:
        "{params.python} -m pipeline.cli merge --settings {params.settings:q} --calls {input}"
        " --out {output.vcf} --stats {output.stats} --log {log}"
