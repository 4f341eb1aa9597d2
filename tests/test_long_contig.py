"""A region far along a long contig costs what one at its start costs, and calls the same.

bcftools mpileup loads each contig's reference from base 0 to the region's end, so the
functions move a far region's reads (and its reference window) to the start of the
contig and move the records back (:func:`functions.slice.shift_slice`). Here the
bundled chr3's reads sit 12 Mb along a contig (``chrLong``) beside the bundled chr1
(whose regions do not move), and a run through the real ``snakemake`` must equal one
whole-genome bcftools run record for record, header contig lengths included (the
moved reads' BAM keeps the header: the VCF's contig lines stay true).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pysam
import pytest
from helpers import DATA, whole_genome
from test_e2e import make_workdir, snakemake

from bench.evaluation.vcfcompare import vcf_body
from functions.call_region import SHIFT_MIN_BASES, keep_owned
from functions.core.tasks import Span

LEAD = 12_000_000  # bases of chrLong before the bundled chr3's sequence and reads
ISLAND, ISLAND_LEN = 10_500_000, 5_000  # where chr3's first bases, and their reads, are copied too


def long_contig_copy(out: Path) -> tuple[Path, Path]:
    """A reference of chr1 and chrLong (12 Mb of random bases, then chr3) and sampleA's
    reads of chr1 and chr3, those of chr3 (and their mates) moved onto chrLong; and a
    second copy of the reads of chr3's first 5 kb (and of those bases) at 10.5 Mb: a
    stretch of reads 1.5 Mb before the others, as exome or amplicon data have."""
    rng = np.random.default_rng(11)
    lead = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, LEAD)].tobytes().decode()
    ref = out / "ref.fa"
    with pysam.FastaFile(str(DATA / "ref.fa")) as fa, open(ref, "w") as fh:
        chr3 = fa.fetch("chr3")
        lead = lead[:ISLAND] + chr3[:ISLAND_LEN] + lead[ISLAND + ISLAND_LEN :]
        for name, seq in [("chr1", fa.fetch("chr1")), ("chrLong", lead + chr3)]:
            fh.write(f">{name}\n")
            fh.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))
    pysam.faidx(str(ref))
    bam, unsorted = out / "sampleA.bam", out / "unsorted.bam"
    with pysam.AlignmentFile(str(DATA / "sampleA.bam")) as src:
        header = src.header.to_dict()
        lengths = {sq["SN"]: sq["LN"] for sq in header["SQ"]}
        header["SQ"] = [{"SN": "chr1", "LN": lengths["chr1"]}, {"SN": "chrLong", "LN": LEAD + lengths["chr3"]}]
        with pysam.AlignmentFile(str(unsorted), "wb", header=header) as dst:
            for read in src:
                if read.reference_name not in ("chr1", "chr3"):
                    continue
                d = read.to_dict()
                dst.write(pysam.AlignedSegment.from_dict(moved(d, LEAD), dst.header))
                mate_near = read.next_reference_name == "chr3" and read.next_reference_start < ISLAND_LEN - 300
                if read.reference_name == "chr3" and read.reference_end and read.reference_end < ISLAND_LEN - 300 \
                        and mate_near:
                    d["name"] += "_far"
                    dst.write(pysam.AlignedSegment.from_dict(moved(d, ISLAND), dst.header))
    pysam.sort("-o", str(bam), str(unsorted))
    pysam.index(str(bam))
    return ref, bam


def moved(d: dict[str, str], by: int) -> dict[str, str]:
    """A read (``AlignedSegment.to_dict``) of chr1 or chr3, with chr3 renamed chrLong and
    its positions (and its mate's) ``by`` bases further; mates elsewhere dropped."""
    d = dict(d)
    if d["ref_name"] == "chr3":
        d["ref_name"], d["ref_pos"] = "chrLong", str(int(d["ref_pos"]) + by)
    mate = d["ref_name"] if d["next_ref_name"] == "=" else d["next_ref_name"]
    if mate in ("chrLong", "chr3"):
        d["next_ref_pos"] = str(int(d["next_ref_pos"]) + by)
        d["next_ref_name"] = "=" if d["ref_name"] == "chrLong" else "chrLong"
    elif mate != "chr1":
        d["next_ref_name"], d["next_ref_pos"] = "*", "0"
    return d


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["bam", "cram"])
def test_regions_far_along_a_contig_move_and_call_as_one_whole_genome_run(tmp_path: Path, fmt: str) -> None:
    """Also as a CRAM: the functions decode the far regions' containers against a
    reference window 12 Mb along the contig, then move the decoded reads."""
    ref, bam = long_contig_copy(tmp_path)
    if fmt == "cram":
        from test_cram import to_cram

        bam = to_cram(bam, tmp_path / "sampleA.cram", ref)
    wd = make_workdir(tmp_path / "wd", plan__n_regions=8, reference=str(ref))
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\nsampleA\t{bam}\n")
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]

    want = whole_genome("sampleA", tmp_path, bam=bam, reference=ref)
    got = str(wd / "results" / "sampleA.vcf.gz")
    assert vcf_body(got) == vcf_body(want)
    assert any(line.startswith("chrLong\t") for line in vcf_body(got))
    with pysam.VariantFile(got) as vcf:
        assert vcf.header.contigs["chrLong"].length == LEAD + 62_000

    fragments = [json.loads(p.read_text()) for p in wd.rglob("*.json") if p.parent.parent.name == "fragments"]
    shifts = {(f["chrom"], f["start"]): f["shift"] for f in fragments if "shift" in f}
    assert shifts, "no fragment stats found"
    assert all(s == 0 for (c, _), s in shifts.items() if c == "chr1")
    far = [s for (c, _), s in shifts.items() if c == "chrLong"]
    assert sum(s >= SHIFT_MIN_BASES for s in far) >= 2 and all(s == 0 or s >= SHIFT_MIN_BASES for s in far)
    # The region holding both stretches of reads moved them and fetched its reference in
    # two pieces. (The CRAM's plan puts the first stretch in a region of its own: a
    # container holds it and the first reads 1.5 Mb on, and planning spreads a
    # container's bytes over its span.)
    if fmt == "bam":
        assert any(f["chrom"] == "chrLong" and f["reference_gaps"] and f["shift"] for f in fragments)
    assert all(f["peak_rss_bytes"] > 10 << 20 for f in fragments)


def test_moved_records_go_back(tmp_path: Path) -> None:
    raw = tmp_path / "raw.vcf"
    raw.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=chrL,length=7000000>\n"
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
        "chrL\t100\t.\tA\tC\t50\t.\tDP=3\n"
        "chrL\t201\t.\tA\t<*>\t0\t.\tEND=250;DP=2\n"
        "chrL\t900\t.\tA\tG\t50\t.\tDP=3\n"
    )
    out = tmp_path / "frag.vcf.gz"
    kept = keep_owned(str(raw), Span("chrL", 5_000_000, 5_001_000), str(out), shift=4_999_800)
    with pysam.BGZFile(str(out)) as fh:  # type: ignore[call-arg]
        lines = fh.read().decode().splitlines()
    assert kept == 2
    assert "##contig=<ID=chrL,length=7000000>" in lines
    assert lines[-2:] == ["chrL\t5000001\t.\tA\t<*>\t0\t.\tEND=5000050;DP=2",
                          "chrL\t5000700\t.\tA\tG\t50\t.\tDP=3"]
