"""test_data/generate.py --samples N: a cohort on one reference, each sample with its own
truth, BAM and FASTQs, some variants shared and some private; a sample's files do not
depend on the cohort size, so the first two samples of a cohort are byte-identical to
the default two-sample run's."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import ModuleType

import pysam
import pytest
from helpers import load_generator

TINY = {"seed": 3, "genome_size": 20_000, "coverage": 5.0, "n_contigs": 1}
COHORT = ("sampleA", "sampleB", "sampleC")


def sample_files(sample: str) -> list[str]:
    return [f"{sample}.bam", f"{sample}.bam.bai", f"truth/{sample}.vcf.gz", f"truth/{sample}.vcf.gz.tbi",
            f"fastq/{sample}_R1.fastq.gz", f"fastq/{sample}_R2.fastq.gz"]


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_generator("generate")


@pytest.fixture(scope="module")
def runs(gen: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, object]]:
    """The tiny dataset generated with 2, 3 and 4 samples (same other parameters)."""
    out = {}
    for n in (2, 3, 4):
        d = tmp_path_factory.mktemp(f"cohort{n}")
        out[n] = (d, gen.generate(d, threads=2, log=False, fastq=True, samples=n, **TINY))
    return out


def truth(path: Path) -> dict[tuple[str, int, str, str], str]:
    with pysam.VariantFile(str(path)) as fh:
        return {(r.chrom, r.pos, r.ref, r.alts[0]): "/".join(map(str, r.samples[0]["GT"])) for r in fh}


def test_sample_names(gen: ModuleType) -> None:
    assert gen.sample_names(2) == ["sampleA", "sampleB"] == list(gen.SAMPLES)
    names = gen.sample_names(30)
    assert names[:3] == ["sampleA", "sampleB", "sampleC"]
    assert names[25:] == ["sampleZ", "sample027", "sample028", "sample029", "sample030"]
    assert names[:8] == gen.sample_names(8)
    with pytest.raises(ValueError):
        gen.sample_names(0)


def test_three_samples_each_with_truth_bam_and_fastqs(runs: dict[int, tuple[Path, object]]) -> None:
    d, summary = runs[3]
    assert list(summary.bams) == list(summary.truth_vcfs) == list(summary.fastqs) == list(COHORT)
    for s in COHORT:
        for name in sample_files(s):
            assert (d / name).exists(), name
        with pysam.AlignmentFile(str(d / f"{s}.bam")) as fh:
            assert fh.header.to_dict()["RG"] == [{"ID": s, "SM": s, "PL": "ILLUMINA", "LB": "lib1"}]
            recs = list(fh)
        assert recs and {r.get_tag("RG") for r in recs} == {s}
        assert {r.query_name.split(":")[0] for r in recs} == {s}
        first = gzip.decompress((d / "fastq" / f"{s}_R1.fastq.gz").read_bytes()).split(b"\n", 1)[0]
        assert first == f"@{s}:00000000 1:N:0:1".encode()
        assert summary.read_pairs[s] == 333
    # the added sample's files name the smallest cohort that has it; sampleA's name none
    source = {s: [h for h in gzip.decompress((d / "truth" / f"{s}.vcf.gz").read_bytes()).decode().split("\n")
                  if h.startswith("##source=")][0] for s in COHORT}
    assert source["sampleC"].endswith(" --samples 3") and "--samples" not in source["sampleA"]


def test_shared_and_private_variants(runs: dict[int, tuple[Path, object]]) -> None:
    d, summary = runs[3]
    calls = {s: truth(d / "truth" / f"{s}.vcf.gz") for s in COHORT}
    a, b, c = (set(calls[s]) for s in COHORT)
    assert c & (a | b), "sampleC shares no variant with sampleA or sampleB"
    assert c - (a | b), "sampleC has no private variant"
    assert a - (b | c) and b - (a | c)
    assert summary.private_variants == {"sampleA": len(a - b - c), "sampleB": len(b - a - c),
                                        "sampleC": len(c - a - b)}
    assert summary.shared_variants == len((a & b) | (a & c) | (b & c))
    # about as many variants per sample as sampleA and sampleB have (one per 1.5 kb: ~13)
    assert 0.5 * len(a) <= len(c) <= 2 * len(a)
    # a shared variant may have another genotype in each sample
    assert {gt for s in COHORT for gt in calls[s].values()} <= {"0/1", "1/1"}


def test_files_do_not_depend_on_the_cohort_size(runs: dict[int, tuple[Path, object]]) -> None:
    two, three, four = runs[2][0], runs[3][0], runs[4][0]
    assert sorted(p.name for p in two.glob("*.bam")) == ["sampleA.bam", "sampleB.bam"]
    for name in ["ref.fa", "ref.fa.fai", *sample_files("sampleA"), *sample_files("sampleB")]:
        assert (three / name).read_bytes() == (two / name).read_bytes() == (four / name).read_bytes(), name
    for name in sample_files("sampleC"):
        assert (three / name).read_bytes() == (four / name).read_bytes(), name
    assert (four / "sampleD.bam").exists()


def test_one_sample_is_sampleA(gen: ModuleType, runs: dict[int, tuple[Path, object]], tmp_path: Path) -> None:
    summary = gen.generate(tmp_path, threads=1, log=False, samples=1, **TINY)
    assert list(summary.bams) == ["sampleA"] and summary.shared_variants == 0
    for name in sample_files("sampleA")[:4]:
        assert (tmp_path / name).read_bytes() == (runs[2][0] / name).read_bytes(), name
