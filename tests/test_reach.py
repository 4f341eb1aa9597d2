"""bcftools' calls in a region equal a whole-genome run's only when every read
overlapping the region lies inside its context (mpileup's partial BAQ realigns a read
at any column it covers where the pileup shows indels, judged from all the reads
there): each function checks that, so a padding too short for the reads stops the
region in one line instead of changing calls (functions.call_region.check_reach)."""

from __future__ import annotations

from pathlib import Path

import pysam
import pytest
from helpers import DATA, assert_same, run_core, serial, whole_genome
from test_e2e import make_workdir, snakemake
from test_faults import error_lines, why

from bench.evaluation.vcfcompare import vcf_body
from functions.core.errors import SvcError

# A cut 0-based at this chr1 position, 60 bases after an indel of sampleA: with no
# context before the region, reads starting before it miss their realignment at the
# indel's columns, and a record in the region differs from the whole-genome run's.
CUT = {"chr1": [70442]}
LONG = (40_000, 2_500)  # the long read of long_read_bam: start and reference span


def test_without_the_check_a_short_padding_changes_calls(store, tmp_path: Path, monkeypatch) -> None:
    """Why the check exists: the same plan with the check switched off gives a VCF that
    is not the whole-genome run's."""
    monkeypatch.setattr("functions.call_region.needs_reads_in_context", lambda engine: False)
    vcf, _, _ = run_core(store, "sampleA", tmp_path, serial(store), cuts=CUT, padding=0)
    assert vcf_body(vcf) != vcf_body(whole_genome("sampleA", tmp_path))


def test_a_short_padding_is_refused(store, tmp_path: Path) -> None:
    with pytest.raises(SvcError) as err:
        run_core(store, "sampleA", tmp_path, serial(store), cuts=CUT, padding=100)
    msg = str(err.value)
    # Both regions of chr1 have 150 bp reads crossing the cut.
    assert msg.startswith("2 of 4 functions failed: sampleA chr1:1-70442, sampleA chr1:70443-151000; "), msg
    assert ("a read overlapping region chr1:1-70442 reaches 150 bp beyond it, past the 100 bp of context each "
            "side, so its calls could differ from a whole-genome run's: set plan.padding to the reference span of "
            "the longest reads or more (at least 150)") in msg, msg


def long_read_bam(out: Path) -> Path:
    """sampleA with one more read, unpaired, 2,500 bp along chr1 from 40,000 (0-based),
    its bases the reference's but for a SNV and a 3 bp deletion."""
    start, span = LONG
    with pysam.FastaFile(str(DATA / "ref.fa")) as fa:
        ref = fa.fetch("chr1", start, start + span)
    seq = ref[:1000] + ("A" if ref[1000] != "A" else "C") + ref[1001:1600] + ref[1603:]
    bam = out / "long.bam"
    unsorted = out / "long.unsorted.bam"
    with pysam.AlignmentFile(str(DATA / "sampleA.bam")) as src, \
            pysam.AlignmentFile(str(unsorted), "wb", header=src.header) as dst:
        for read in src:
            dst.write(read)
        rec = pysam.AlignedSegment(dst.header)
        rec.query_name, rec.flag, rec.reference_id, rec.reference_start = "long1", 0, 0, start
        rec.mapping_quality, rec.cigarstring = 60, "1600M3D897M"
        rec.query_sequence = seq
        rec.query_qualities = pysam.qualitystring_to_array("I" * len(seq))
        rec.set_tag("RG", src.header.to_dict()["RG"][0]["ID"])
        dst.write(rec)
    pysam.sort("-o", str(bam), str(unsorted))
    pysam.index(str(bam))
    return bam


def test_a_long_read_needs_a_padding_as_long_as_it(store, tmp_path: Path) -> None:
    bam = long_read_bam(tmp_path)
    cut = {"chr1": [41_250]}  # through the long read's middle
    with pytest.raises(SvcError) as err:  # the default padding (500 bp) is for short reads
        run_core(store, "sampleA", tmp_path / "default", serial(store), cuts=cut, bam=bam)
    assert "reaches 1,250 bp beyond it, past the 500 bp of context" in str(err.value), err.value
    vcf, plan, _ = run_core(store, "sampleA", tmp_path / "wide", serial(store), cuts=cut, bam=bam, padding=3000)
    assert ("chr1", 41_250) in {(r.chrom, r.start) for r in plan.regions}
    assert_same(vcf, whole_genome("sampleA", tmp_path, bam=bam))


def test_snakemake_stops_in_one_line_when_the_padding_is_short(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path, plan__n_regions=5, plan__padding=50)
    res = snakemake(wd)
    assert res.returncode != 0
    lines = error_lines(res)
    assert len(lines) == 1, why(res)
    assert "set plan.padding to the reference span of the longest reads or more" in lines[0], why(res)
    assert not list(wd.glob("results/*.vcf.gz"))
