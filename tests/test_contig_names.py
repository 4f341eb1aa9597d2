"""Contig names as GRCh38's analysis set writes them, through the real ``snakemake``.

GRCh38 carries some 3,000 alt, decoy, EBV and HLA contigs whose names hold ``:``, ``*``
and ``-`` (``HLA-A*01:01:01:01``, ``chrUn_JTFH01000001v1_decoy``). htslib region strings
split at ``:``, so every step that names a region must do it without one: here the
bundled data's three contigs are renamed that way (the reads are the same), and a run
cut into several regions per contig must still equal one whole-genome run of the
engine on the renamed files, record for record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pysam
import pytest
from helpers import DATA, whole_genome
from test_e2e import make_workdir, snakemake

from bench.evaluation.vcfcompare import vcf_body
from functions.core.tasks import Span, region_name
from functions.lowfreq import LowfreqParams

pytestmark = pytest.mark.e2e

# One SAM-legal name per kind that broke or could break a region string.
NAMES = {
    "chr1": "HLA-A*01:01:01:01",  # ':' and '*': the HLA contigs
    "chr2": "chr3:1-5000",  # a name that reads as a region of another contig
    "chr3": "chrUn_JTFH01000001v1_decoy",
}


def renamed_copy(out: Path, sample: str = "sampleA") -> tuple[Path, Path]:
    """The bundled reference and one BAM with their contigs renamed (same reads)."""
    ref = out / "ref.fa"
    with pysam.FastaFile(str(DATA / "ref.fa")) as fa, open(ref, "w") as fh:
        for name in fa.references:
            seq = fa.fetch(name)
            fh.write(f">{NAMES[name]}\n")
            fh.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    pysam.faidx(str(ref))
    bam = out / f"{sample}.bam"
    with pysam.AlignmentFile(str(DATA / f"{sample}.bam")) as src:
        header = src.header.to_dict()
        for sq in header["SQ"]:
            sq["SN"] = NAMES[sq["SN"]]
        with pysam.AlignmentFile(str(bam), "wb", header=header) as dst:
            for read in src:
                dst.write(read)
    pysam.index(str(bam))
    return ref, bam


@pytest.fixture(scope="module")
def renamed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return renamed_copy(tmp_path_factory.mktemp("names"))


def test_region_names_brace_a_name_holding_a_colon() -> None:
    assert region_name("chr1", 0, 100) == "chr1:1-100"
    assert region_name("HLA-A*01:01:01:01", 9, 20) == "{HLA-A*01:01:01:01}:10-20"
    assert Span("chr3:1-5000", 0, 5).name == "{chr3:1-5000}:1-5"


@pytest.mark.parametrize("engine", ["bcftools", "lowfreq"])
def test_grch38_style_names_run_end_to_end(engine: str, renamed: tuple[Path, Path], tmp_path: Path) -> None:
    ref, bam = renamed
    wd = make_workdir(tmp_path / "wd", plan__n_regions=9, calling__engine=engine, reference=str(ref))
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\nsampleA\t{bam}\n")
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]

    params = LowfreqParams(min_depth=100) if engine == "lowfreq" else None
    want = vcf_body(whole_genome("sampleA", tmp_path, params, bam=bam, reference=ref))
    got = vcf_body(str(wd / "results" / "sampleA.vcf.gz"))
    assert got == want
    assert {line.split("\t")[0] for line in got} == set(NAMES.values())  # calls on every contig

    calls = json.loads((wd / "work" / "calls" / "sampleA.json").read_text())
    names = [f["name"] for f in calls["fragments"]]
    assert len(names) >= 9 and all(n.startswith(("{HLA-A*01:01:01:01}:", "{chr3:1-5000}:", "chrUn_")) for n in names)
    with pysam.VariantFile(str(wd / "results" / "sampleA.vcf.gz")) as vcf:
        assert list(vcf.header.contigs) == list(NAMES.values())
    if engine == "lowfreq":
        fasta = (wd / "results" / "sampleA.consensus.fa").read_text().splitlines()
        headers = [ln[1:] for ln in fasta if ln.startswith(">")]
        assert headers == [f"sampleA|{n}" for n in NAMES.values()]
