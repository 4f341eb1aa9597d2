"""A tiled-amplicon run through the real ``snakemake`` command line (a small copy of
the viral lab's shape: test_data/amplicon.py, 8 kb at 2,000 pairs per amplicon, an
ARTIC-style scheme, alleles at 20, 5 and 2 %, some under primers).

What must hold:
Runs use config/amplicon.yaml's engine settings (end_skip 0).

* exactness with primers: the VCF and the consensus of plans of 1, 4 and 17 regions are
  identical, and the VCF equals one whole-genome run of the engine with the same scheme;
* the primers matter and are handled: with the scheme, every allele at >= 5 % is PASS
  (of those the reads carry at half their design or more), those under primers
  included, with no PASS call away from
  the generator's listed artefacts; without trimming, alleles under primers read lower
  (the primer bases pull them towards the reference);
* the stats count the trimmed reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from helpers import load_generator
from test_e2e import make_workdir, snakemake

from bench.evaluation import afeval
from bench.evaluation.vcfcompare import vcf_body
from functions.core.primers import read_primer_bed
from functions.lowfreq import LowfreqParams, run_lowfreq

SAMPLE = "mixture"
# config/amplicon.yaml's engine settings
AMPLICON = LowfreqParams(**yaml.safe_load((ROOT / "config" / "amplicon.yaml").read_text())["calling"]["lowfreq"])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("amplicon")
    load_generator("amplicon").generate_amplicon_mixture(
        out, seed=11, length=8000, depth=2000, fractions=(0.2, 0.05, 0.02), alleles_per_fraction=5, threads=2,
        log=False)
    return out


def _run(data: Path, root: Path, n_regions: int, **lowfreq: object) -> Path:
    settings = {f"calling__lowfreq__{k}": v for k, v in {"end_skip": AMPLICON.end_skip, **lowfreq}.items()}
    wd = make_workdir(root, plan__n_regions=n_regions, calling__engine="lowfreq",
                      calling__primers=str(data / "scheme.primer.bed"), reference=str(data / "virus.fa"),
                      **settings)
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\n{SAMPLE}\t{data / 'mixture.bam'}\n")
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


@pytest.fixture(scope="module")
def runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {n: _run(data, root / f"n{n}", n) for n in (1, 4, 17)}


@pytest.mark.e2e
def test_plans_give_the_same_vcf_and_consensus(data: Path, runs: dict[int, Path], tmp_path: Path) -> None:
    whole = str(tmp_path / "whole.vcf")
    run_lowfreq(str(data / "mixture.bam"), str(data / "virus.fa"), AMPLICON, whole,
                primers=read_primer_bed(str(data / "scheme.primer.bed")))
    want = vcf_body(whole)
    assert len(want) >= 10
    consensus = {n: (wd / "results" / f"{SAMPLE}.consensus.fa").read_text() for n, wd in runs.items()}
    for n, wd in runs.items():
        assert vcf_body(str(wd / "results" / f"{SAMPLE}.vcf.gz")) == want, n
        assert consensus[n] == consensus[1], n
    calls = json.loads((runs[17] / "work" / "calls" / f"{SAMPLE}.json").read_text())
    assert len(calls["fragments"]) >= 10
    assert sum(f["primer_trimmed"] for f in calls["fragments"]) > 1000


@pytest.mark.e2e
def test_a_samples_own_threshold_through_the_cli(data: Path, tmp_path: Path) -> None:
    """``fp_budget`` through ``snakemake``: 17 regions give one whole-genome run's VCF,
    threshold (in the header) included, and that threshold is below ``min_qual``."""
    deep = {"baseline_error": 0.0001, "fp_budget": 0.5}
    wd = _run(data, tmp_path / "budget", 17, **deep)
    whole = str(tmp_path / "whole.vcf")
    params = LowfreqParams(**{**AMPLICON.as_dict(), **deep})
    run_lowfreq(str(data / "mixture.bam"), str(data / "virus.fa"), params, whole,
                primers=read_primer_bed(str(data / "scheme.primer.bed")))
    got = str(wd / "results" / f"{SAMPLE}.vcf.gz")
    assert vcf_body(got) == vcf_body(whole) and len(vcf_body(whole)) >= 10
    import pysam

    with pysam.VariantFile(got) as fh:
        line = [r for r in str(fh.header).splitlines() if r.startswith("##lowfreqThreshold=")]
    with open(whole) as fh2:
        assert line == [r.strip() for r in fh2 if r.startswith("##lowfreqThreshold=")]
    assert len(line) == 1 and float(line[0].split(">=")[1].split()[0]) < params.min_qual, line
    log = "\n".join(p.read_text() for p in (wd / "work" / "logs").rglob("*merge*"))
    assert "QUAL>=" in log, "the merge log names the sample's threshold"


@pytest.mark.e2e
def test_primers_are_trimmed_and_alleles_under_them_found(data: Path, runs: dict[int, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # An allele whose haplotype the primers failed to amplify where it lies (realised AF
    # below half its design, even 0) cannot be seen by any caller: it is not counted.
    truth = [t for t in afeval.read_truth(str(data / "truth.vcf.gz")) if t.af >= t.hf / 2]
    vcf = str(runs[4] / "results" / f"{SAMPLE}.vcf.gz")
    calls = afeval.read_vcf_calls(vcf, str(data / "virus.fa"), pass_only=True)
    ev = afeval.evaluate(calls, truth, genome_length=8000, bins=(0.2, 0.05, 0.02),
                         artefacts=afeval.read_artefacts(str(data / "artefacts.tsv")))
    with capsys.disabled():
        print(f"\n[lowfreq on tiled amplicons, 8 kb, 2000 pairs per amplicon, primers trimmed]\n{ev.table()}")
    for band in (0.2, 0.05):
        assert ev.recall("all", band) == 1.0, (band, ev.false_negatives)
    assert len(ev.false_positives) == len(ev.artefact_false_positives), "no PASS call away from listed artefacts"

    # Without trimming, an allele under a primer reads lower: the primer bases are the reference.
    under = {t.key: t for t in truth if t.hf >= 0.05 and _under_primer(data, t.key)}
    assert under, "the generator puts alleles under primers"
    plain = str(tmp_path / "plain.vcf")
    run_lowfreq(str(data / "mixture.bam"), str(data / "virus.fa"), AMPLICON, plain)
    import pysam

    pysam.tabix_compress(plain, plain + ".gz", force=True)
    untrimmed = afeval.read_vcf_calls(plain + ".gz", str(data / "virus.fa"), pass_only=False)
    trimmed = afeval.read_vcf_calls(vcf, str(data / "virus.fa"), pass_only=True)
    lower = 0
    for key, t in under.items():
        assert key in trimmed and abs((trimmed[key] or 0) - t.af) < 0.02, (key, trimmed.get(key), t.af)
        assert (untrimmed.get(key) or 0.0) <= (trimmed[key] or 0) + 0.002, (key, untrimmed.get(key), trimmed[key])
        lower += (untrimmed.get(key) or 0.0) < (trimmed[key] or 0) - 0.005
    assert lower >= 1, "untrimmed primer bases pull some allele under a primer towards the reference"


def _under_primer(data: Path, key: tuple[str, int, str, str]) -> bool:
    import pysam

    with pysam.VariantFile(str(data / "truth.vcf.gz")) as fh:
        for rec in fh.fetch(key[0], key[1] - 1, key[1]):
            if rec.pos == key[1] and rec.ref == key[2] and rec.alts and rec.alts[0] == key[3]:
                return "UNDER_PRIMER" in rec.info
    return False
