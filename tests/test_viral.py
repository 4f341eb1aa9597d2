"""The lowfreq engine on the repository's own viral mixture (test_data/viral.py):
a 30 kb genome at 5000x, minor haplotypes at 50/20/10/5/2/1 % carrying SNVs and
1-5 bp indels, Illumina-like errors plus strand-specific error hotspots and PCR
errors that must not be reported.

What must hold (the issue's words), measured on the VCF the real `snakemake`
command line writes with `calling.engine: lowfreq`:
* recall 100 % at >= 2 % AF and >= 90 % at 1 %, for SNVs and for indels;
* at most 1 false positive per 30 kb;
* AF within +-0.5 percentage points of the truth for calls at 1-5 %.
The truth's AF is the realised frequency: the share of the informative reads that
come from the haplotypes carrying the allele (sampling 5000 reads from a 5 %
haplotype moves its share by about 0.3 points; no caller can know that, so it is
not held against it). Exactness: the distributed VCF equals one whole-genome run of
the engine, also for a plan cut inside indels and on multi-allelic sites.

The mixture is generated once per session (about 40 s on 2 cores); set
SVC_TEST_MIXTURE to a directory holding one (python test_data/viral.py --outdir
DIR) to reuse it while developing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import assert_same, run_core, serial, whole_genome
from test_e2e import make_workdir, snakemake

from bench.evaluation import afeval
from bench.evaluation.vcfcompare import vcf_body
from functions.lowfreq import LowfreqParams

SAMPLE = "mixture"


@pytest.fixture(scope="module")
def mixture(viral_mixture: Path) -> Path:
    return viral_mixture


@pytest.fixture(scope="module")
def whole(mixture: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return whole_genome(SAMPLE, tmp_path_factory.mktemp("whole"), LowfreqParams(),
                        bam=mixture / "mixture.bam", reference=mixture / "virus.fa")


@pytest.fixture(scope="module")
def cli_run(mixture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = make_workdir(tmp_path_factory.mktemp("viral-e2e"), plan__n_regions=6, calling__engine="lowfreq",
                      reference=str(mixture / "virus.fa"))
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\n{SAMPLE}\t{mixture / 'mixture.bam'}\n")
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


def test_cli_run_equals_whole_genome_run(cli_run: Path, whole: str) -> None:
    vcf = cli_run / "results" / f"{SAMPLE}.vcf.gz"
    calls = json.loads((cli_run / "work" / "calls" / f"{SAMPLE}.json").read_text())
    assert calls["engine"] == "lowfreq" and len(calls["fragments"]) == 6
    assert_same(str(vcf), whole)
    # 5000x on 30 kb: planned from the fine CSI staging builds, at lowfreq's padding.
    plan = (cli_run / "work" / "plans" / f"{SAMPLE}.tsv").read_text()
    assert "#index=CSI" in plan
    bam = (cli_run / "work" / "staged" / f"{SAMPLE}.json")
    assert json.loads(bam.read_text())["csi"] is not None
    read = sum(f["bam_get_bytes"] for f in calls["fragments"])
    assert read <= 1.10 * Path(json.loads(bam.read_text())["bam"]["path"]).stat().st_size, read
    # The run report counts every allele of this VCF without genotypes, and its PASS sites.
    records = vcf_body(str(vcf))
    passed = sum(r.split("\t")[6] == "PASS" for r in records)
    page = (cli_run / "results" / "report.html").read_text()
    assert re.search(rf"<tr><td>{SAMPLE}</td><td>{len(records):,}</td>.*?<td>{passed:,}</td></tr>", page), page[:3000]


def test_a_cram_of_the_mixture_calls_the_same(mixture: Path, whole: str, tmp_path: Path) -> None:
    """The 5000x mixture as a CRAM (samtools' defaults: containers of 10,000 reads, about
    300 bp of this genome each), called with lowfreq through snakemake: planned by its
    containers, the VCF equals the whole-genome run on the BAM it was written from."""
    from test_cram import to_cram

    cram = to_cram(mixture / "mixture.bam", tmp_path / "mixture.cram", mixture / "virus.fa")
    wd = make_workdir(tmp_path / "wd", plan__n_regions=6, calling__engine="lowfreq",
                      reference=str(mixture / "virus.fa"))
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\n{SAMPLE}\t{cram}\n")
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same(str(wd / "results" / f"{SAMPLE}.vcf.gz"), whole)
    assert "#index=CRAI" in (wd / "work" / "plans" / f"{SAMPLE}.tsv").read_text()
    calls = json.loads((wd / "work" / "calls" / f"{SAMPLE}.json").read_text())
    assert sum(f["bam_get_bytes"] for f in calls["fragments"]) <= 1.2 * cram.stat().st_size


def test_accuracy_against_truth(cli_run: Path, mixture: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vcf = str(cli_run / "results" / f"{SAMPLE}.vcf.gz")
    truth = afeval.read_truth(str(mixture / "truth.vcf.gz"))
    calls = afeval.read_vcf_calls(vcf, str(mixture / "virus.fa"), pass_only=True)
    ev = afeval.evaluate(calls, truth, genome_length=30_000,
                         artefacts=afeval.read_artefacts(str(mixture / "artefacts.tsv")))
    low = {t.key: t for t in truth if 0.01 <= t.hf <= 0.05 + 1e-9}
    af_err = {k: e for k, e in ev.af_errors.items() if k in low}
    with capsys.disabled():
        print(f"\n[lowfreq accuracy, {len(truth)} true alleles]\n{ev.table()}")
        worst = max(af_err.items(), key=lambda kv: abs(kv[1]))
        print(f"AF error at 1-5 %: max |e| {abs(worst[1]):.2f} pp at {worst[0]} (n={len(af_err)})")
    for kind in ("snv", "indel"):
        for b in (0.5, 0.2, 0.1, 0.05, 0.02):
            assert ev.recall(kind, b) == 1.0, (kind, b, ev.false_negatives)
        assert ev.recall(kind, 0.01) >= 0.9, (kind, ev.false_negatives)
        assert ev.found[kind][0.01][1] >= 10, "enough 1 % alleles to measure"
    assert ev.fp_per_30kb <= 1.0, ev.false_positives
    assert len(af_err) == sum(1 for k in low if k in calls) and len(af_err) >= 30
    assert all(abs(e) <= 0.5 for e in af_err.values()), {k: e for k, e in af_err.items() if abs(e) > 0.5}


def test_artefacts_are_filtered_not_passed(cli_run: Path, mixture: Path) -> None:
    """The strand-specific hotspots that are reported at all carry FILTER strand_bias."""
    arte = afeval.read_artefacts(str(mixture / "artefacts.tsv"))
    all_calls = afeval.read_vcf_calls(str(cli_run / "results" / f"{SAMPLE}.vcf.gz"), str(mixture / "virus.fa"),
                                      pass_only=False)
    passed = afeval.read_vcf_calls(str(cli_run / "results" / f"{SAMPLE}.vcf.gz"), str(mixture / "virus.fa"))
    reported = [k for k in arte if k in all_calls]
    assert len(reported) >= 10, "the hotspots are strong enough to reach QUAL: the filter is what stops them"
    assert not [k for k in reported if k in passed]


def test_cuts_inside_indels_and_on_multiallelic_sites(store, mixture: Path, whole: str, tmp_path: Path) -> None:
    truth = afeval.read_truth(str(mixture / "truth.vcf.gz"))
    by_pos: dict[int, list[afeval.TruthVariant]] = {}
    for t in truth:
        by_pos.setdefault(t.pos, []).append(t)
    cuts: list[int] = []
    for kind in ("deletion", "insertion", "multiallelic"):
        for pos, ts in sorted(by_pos.items()):
            t = ts[0]
            if kind == "multiallelic" and len(ts) > 1:
                cuts += [pos - 1, pos]
            elif kind == "deletion" and len(t.ref) > 2 and t.hf >= 0.2:
                cuts.append(pos + 1)  # between two deleted bases
            elif kind == "insertion" and len(t.alt) > 2 and t.hf >= 0.2:
                cuts.append(pos)  # right after the anchor
            else:
                continue
            break
    assert len(cuts) == 4
    vcf, plan, _ = run_core(store, SAMPLE, tmp_path, serial(store), cuts={"virus": sorted(cuts)},
                            params=LowfreqParams(), bam=mixture / "mixture.bam", reference=mixture / "virus.fa")
    assert {r.start for r in plan.regions} >= set(cuts)
    assert_same(vcf, whole)
