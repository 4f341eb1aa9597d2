"""calling.targets / calling.exclude: only regions overlapping the targets are planned
and fetched, only records whose POS lies in targets minus exclude are reported, and
the VCF equals one whole-genome run filtered by ``bcftools view -T targets.bed`` and
then ``-T ^exclude.bed``, through the real ``snakemake`` command line."""

from __future__ import annotations

from pathlib import Path

import pysam
import pytest
from helpers import whole_genome
from test_e2e import make_workdir, snakemake

from bench.evaluation.vcfcompare import vcf_body
from functions.core.targets import TargetError, contains, overlapping, read_bed, subtract, targets
from pipeline.plan import read_plan

CONTIGS = (("chr1", 151_000), ("chr2", 97_000), ("chr3", 62_000))


def _bed(path: Path, rows: list[tuple[str, int, int]]) -> str:
    path.write_text("track name=t\n" + "".join(f"{c}\t{s}\t{e}\tname\n" for c, s, e in rows))
    return str(path)


def test_beds_are_read_merged_and_subtracted(tmp_path: Path) -> None:
    bed = _bed(tmp_path / "t.bed", [("chr1", 500, 900), ("chr1", 100, 200), ("chr1", 150, 300), ("chr3", 0, 10)])
    assert read_bed(bed) == {"chr1": [(100, 300), (500, 900)], "chr3": [(0, 10)]}
    assert subtract([(0, 100), (200, 300)], [(50, 60), (90, 210), (290, 400)]) == [(0, 50), (60, 90), (210, 290)]
    ex = _bed(tmp_path / "x.bed", [("chr1", 250, 600)])
    called = targets(CONTIGS, bed, ex, "the BAM")
    assert called == {"chr1": [(100, 250), (600, 900)], "chr3": [(0, 10)]}
    only_ex = targets(CONTIGS, None, ex, "the BAM")
    assert only_ex is not None and only_ex["chr1"] == [(0, 250), (600, 151_000)] and only_ex["chr2"] == [(0, 97_000)]
    assert targets(CONTIGS, None, None, "the BAM") is None
    assert overlapping([(100, 250), (600, 900)], 200, 700) == [(200, 250), (600, 700)]
    assert contains([(100, 250)], 100) and not contains([(100, 250)], 250) and not contains([(100, 250)], 99)


@pytest.mark.parametrize("rows, message", [
    ([("chr1", 300, 200)], "empty or reversed"),
    ([("chr1", "a", 200)], "are not whole numbers"),
    ([("chrZ", 1, 200)], "names contig 'chrZ'"),
])
def test_a_bad_bed_is_one_line(tmp_path: Path, rows: list[tuple[str, object, int]], message: str) -> None:
    bed = tmp_path / "bad.bed"
    bed.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in rows))
    with pytest.raises(TargetError, match=message) as exc:
        targets(CONTIGS, str(bed), None, "sample sampleA's BAM")
    assert "\n" not in str(exc.value)
    with pytest.raises(TargetError, match="not found"):
        read_bed(str(tmp_path / "missing.bed"))


def _filtered(vcf: str, bed: str, out: Path, exclude: bool = False) -> str:
    """``bcftools view -T [^]bed`` (the BED without its track line, which bcftools does
    not read; a .bed name tells bcftools it is 0-based)."""
    plain = out.with_suffix(".plain.bed")
    plain.write_text("".join(ln for ln in Path(bed).read_text().splitlines(keepends=True)
                             if not ln.startswith("track")))
    pysam.bcftools.view("-T", ("^" if exclude else "") + str(plain), "-Ov", "-o", str(out), vcf, catch_stdout=False)
    return str(out)


@pytest.mark.e2e
def test_targets_through_the_cli_equal_a_filtered_whole_genome_run(tmp_path: Path) -> None:
    bed = _bed(tmp_path / "genes.bed", [("chr1", 10_000, 40_000), ("chr1", 100_000, 100_500), ("chr3", 0, 62_000)])
    ex = _bed(tmp_path / "blacklist.bed", [("chr1", 30_000, 31_000), ("chr3", 20_000, 30_000)])
    wd = make_workdir(tmp_path / "run", plan__n_regions=11, calling__targets=bed, calling__exclude=ex)
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    whole = whole_genome("sampleA", tmp_path)
    want = vcf_body(_filtered(_filtered(whole, bed, tmp_path / "t.vcf"), ex, tmp_path / "tx.vcf", exclude=True))
    got = vcf_body(str(wd / "results" / "sampleA.vcf.gz"))
    assert got == want and 20 < len(got) < len(vcf_body(whole))
    called = targets(CONTIGS, bed, ex, "the BAM")
    assert called is not None
    for line in got:
        chrom, pos = line.split("\t")[:2]
        assert contains(called[chrom], int(pos) - 1)
    plan = read_plan(wd / "work" / "plans" / "sampleA.tsv")
    assert plan.regions and {r.chrom for r in plan.regions} == {"chr1", "chr3"}
    assert all(overlapping(called[r.chrom], r.start, r.end) for r in plan.regions)
    full = make_workdir(tmp_path / "full", plan__n_regions=11)
    assert snakemake(full, "--until", "plan").returncode == 0
    assert plan.fetch_bytes < 0.8 * read_plan(full / "work" / "plans" / "sampleA.tsv").fetch_bytes


@pytest.mark.e2e
def test_a_bed_naming_another_contig_stops_the_run_before_any_function(tmp_path: Path) -> None:
    bed = _bed(tmp_path / "genes.bed", [("1", 10_000, 40_000)])
    wd = make_workdir(tmp_path / "run", calling__targets=bed)
    res = snakemake(wd)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert lines and "names contig '1'" in lines[0] and "use the reference's contig names" in lines[0], lines
    assert not (wd / "work" / "calls").exists()
    lowfreq = make_workdir(tmp_path / "lf", calling__engine="lowfreq", calling__targets=bed)
    res = snakemake(lowfreq, "-n")
    assert res.returncode != 0 and "targets and exclude restrict the bcftools engine" in res.stderr


@pytest.mark.e2e
def test_targets_in_joint_mode_equal_a_filtered_whole_genome_joint_run(tmp_path: Path) -> None:
    """Joint mode plans the samples' shared regions by the bytes near the targets: the
    cohort VCF equals one whole-genome joint run filtered the same way."""
    from helpers import DATA
    from test_cohort import whole_joint

    bed = _bed(tmp_path / "genes.bed", [("chr1", 10_000, 40_000), ("chr1", 100_000, 100_500), ("chr3", 0, 62_000)])
    ex = _bed(tmp_path / "blacklist.bed", [("chr1", 30_000, 31_000), ("chr3", 20_000, 30_000)])
    wd = make_workdir(tmp_path / "run", plan__n_regions=11, calling__mode="joint", calling__cohort="cohort",
                      calling__targets=bed, calling__exclude=ex)
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    body = whole_joint([DATA / "sampleA.bam", DATA / "sampleB.bam"], tmp_path)
    raw = tmp_path / "whole.sampleA+sampleB.vcf"  # the joint run whole_joint wrote
    want = vcf_body(_filtered(_filtered(str(raw), bed, tmp_path / "t.vcf"), ex, tmp_path / "tx.vcf", exclude=True))
    got = vcf_body(str(wd / "results" / "cohort.vcf.gz"))
    assert got == want and 20 < len(got) < len(body)
