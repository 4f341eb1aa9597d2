"""calling.normalize: each region's records left-aligned and split as `bcftools norm -f
ref -m-` would, and the merged VCF equal to one whole-genome run followed by that
`bcftools norm`, including records that left-align into the region before theirs;
through the real ``snakemake`` command line and with cuts placed on such records."""

from __future__ import annotations

from pathlib import Path

import pysam
import pysam.bcftools
import pytest
from helpers import DATA, run_core, serial, tricky_cuts, whole_genome
from test_e2e import make_workdir, snakemake

from bench.evaluation.vcfcompare import vcf_body
from functions.bcftools_engine import NORM_MARGIN, BcftoolsParams
from functions.core.tasks import Span
from pipeline.merge import NormalizedOrder


def _normalized(vcf: str, out: Path) -> str:
    pysam.bcftools.norm("-f", str(DATA / "ref.fa"), "-m-", "-Ov", "-o", str(out), vcf, catch_stdout=False)
    return str(out)


def test_cuts_inside_repeats_and_indels_give_the_normalised_whole_genome_run(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Cuts on a SNV, inside deletions and inside insertions (in repeats too), normalised
    region by region: equal to the whole-genome run normalised. (bcftools call already
    places indels at their leftmost position, with long REF and ALT in repeats: here
    normalising trims them; a record that does move left across a cut is ordered by the
    merge, below.)"""
    raw = whole_genome("sampleA", tmp_path)
    want = vcf_body(_normalized(raw, tmp_path / "want.vcf"))
    assert sum(a != b for a, b in zip(vcf_body(raw), want, strict=True)) >= 20  # normalising changes records
    cuts, kinds = tricky_cuts("sampleA", raw)
    assert {"deletion", "insertion", "insertion-in-repeat"} <= set(kinds)
    vcf, plan, _ = run_core(store, "sampleA", tmp_path / "run", serial(store), cuts=cuts,
                            params=BcftoolsParams(normalize=True))
    assert len(plan.regions) >= 7
    assert vcf_body(vcf) == want
    header = list(pysam.VariantFile(vcf).header.records)
    command = [str(h) for h in header if h.key == "svc_command"]
    assert command and "| bcftools norm -f <reference> -m-" in command[0]
    assert not any(str(h.key).startswith("bcftools_norm") for h in header)


def test_the_merge_orders_records_across_regions() -> None:
    """Records of a later region that moved before records of an earlier one go before
    them; at the same position the earlier region's come first; others stream out."""
    order = NormalizedOrder()

    def rec(pos: int, tag: str) -> str:
        return f"chr1\t{pos}\t.\tA\tC\t50\t.\t{tag}\n"

    first = [rec(10, "a"), rec(5000 - 50, "b"), rec(5000 - 5, "c"), rec(5000, "d")]
    out = order.add(first, Span("chr1", 0, 5000))
    assert out == [rec(10, "a")]  # the rest lie within NORM_MARGIN of the region's end
    second = [rec(5000 - 5, "e"), rec(5000 + 2, "f"), rec(9000, "g")]
    out += order.add(second, Span("chr1", 5000, 9000))
    out += order.add([rec(3, "h")], Span("chr2", 0, 100))
    out += order.flush()
    assert [ln.split("\t")[7] for ln in out] == ["a\n", "b\n", "c\n", "e\n", "d\n", "f\n", "g\n", "h\n"]
    assert NORM_MARGIN == 1000


@pytest.mark.e2e
def test_normalize_through_the_cli_equals_a_normalised_whole_genome_run(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "run", plan__n_regions=13, calling__normalize=True)
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    raw = whole_genome("sampleB", tmp_path)
    for sample in ("sampleA", "sampleB"):
        want = vcf_body(_normalized(whole_genome(sample, tmp_path), tmp_path / f"{sample}.norm.vcf"))
        assert vcf_body(str(wd / "results" / f"{sample}.vcf.gz")) == want
    assert vcf_body(raw) != vcf_body(str(tmp_path / "sampleB.norm.vcf"))  # normalising changed records
    lowfreq = make_workdir(tmp_path / "lf", calling__engine="lowfreq", calling__normalize=True)
    res = snakemake(lowfreq, "-n")
    assert res.returncode != 0 and "normalize applies to the bcftools engine" in res.stderr
