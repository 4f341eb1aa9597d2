"""The viral-mixture generator (test_data/viral.py) and the low-frequency evaluation
(bench/evaluation/afeval.py), on a tiny mixture: 3 kb, 1000x, two batches, a few seconds."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pysam
import pytest
from helpers import load_viral

from bench.evaluation import afeval

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "seed": 11,
    "genome_length": 3000,
    "depth": 1000.0,
    "snvs_per_haplotype": 3,
    "indels_per_haplotype": 2,
    "multiallelic_sites": 2,
}
FILES = ("virus.fa", "virus.fa.fai", "mixture.bam", "mixture.bam.bai", "truth.vcf.gz", "truth.vcf.gz.tbi",
         "artefacts.tsv")


@pytest.fixture(scope="module")
def viral() -> ModuleType:
    return load_viral()


@pytest.fixture(scope="module")
def tiny(viral: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny1")
    summary = viral.generate_mixture(out, threads=1, log=False, **TINY)
    assert summary.read_pairs == 10_000 and summary.variant_counts["total"] == 6 * 5 + 2 * 2
    return out


def test_same_seed_same_bytes_any_threads(viral: ModuleType, tiny: Path, tmp_path: Path) -> None:
    viral.generate_mixture(tmp_path, threads=2, log=False, **TINY)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (tiny / name).read_bytes(), name


def test_other_seed_other_data(viral: ModuleType, tiny: Path, tmp_path: Path) -> None:
    viral.generate_mixture(tmp_path, threads=1, log=False, verify=False, **{**TINY, "seed": 12, "depth": 20.0})
    assert (tmp_path / "virus.fa").read_bytes() != (tiny / "virus.fa").read_bytes()


class _Truth(NamedTuple):
    pos: int
    ref: str
    alt: str
    vt: str
    haps: tuple[str, ...]
    af: float
    hf: float
    dp: int


class _Base(NamedTuple):
    """One read at a pileup column; ``base``/``qual`` are None in a deletion."""

    name: str
    reverse: bool
    flag: int
    base: str | None
    qual: int | None


def _truth(folder: Path) -> list[_Truth]:
    out = []
    with pysam.VariantFile(str(folder / "truth.vcf.gz")) as fh:
        for r in fh:
            assert r.ref is not None and r.alts is not None and len(r.alts) == 1
            i = r.info
            out.append(_Truth(r.pos, r.ref, r.alts[0], i["VT"], tuple(i["HAP"]), i["AF"][0], i["HF"][0], i["DP"]))
    return out


def _pileup(bam: pysam.AlignmentFile, p: int, **kwargs: Any) -> list[_Base]:
    """Every read at 0-based position ``p`` (pysam pileup with ``kwargs``)."""
    out = []
    for col in bam.pileup("virus", p, p + 1, truncate=True, max_depth=10**6, **kwargs):
        for pr in col.pileups:
            a, qp = pr.alignment, pr.query_position
            seq, quals = a.query_sequence, a.query_qualities
            base = seq[qp] if qp is not None and seq is not None else None
            qual = quals[qp] if qp is not None and quals is not None else None
            out.append(_Base(str(a.query_name), a.is_reverse, a.flag, base, qual))
    return out


def test_truth_is_normalised_and_well_spaced(viral: ModuleType, tiny: Path) -> None:
    viral.gen.check_truth_normalised(tiny / "truth.vcf.gz", tiny / "virus.fa")
    recs = _truth(tiny)
    positions = sorted({r.pos for r in recs})
    assert min(b - a for a, b in zip(positions, positions[1:], strict=False)) > viral.MIN_GAP
    assert positions[0] > viral.END_MARGIN and positions[-1] < TINY["genome_length"] - viral.END_MARGIN
    by_pos: dict[int, list[_Truth]] = {}
    for r in recs:
        by_pos.setdefault(r.pos, []).append(r)
        if r.vt != "SNV":
            assert 1 <= abs(len(r.ref) - len(r.alt)) <= 5
    multi = [rs for rs in by_pos.values() if len(rs) == 2]
    assert len(multi) == TINY["multiallelic_sites"]
    for a, b in multi:
        assert a.alt != b.alt and a.haps != b.haps
    for h in range(1, 7):  # every minor haplotype has its private SNVs and indels
        mine = [r for r in recs if r.haps == (f"h{h}",) and len(by_pos[r.pos]) == 1]
        assert sum(r.vt == "SNV" for r in mine) == TINY["snvs_per_haplotype"]
        assert sum(r.vt != "SNV" for r in mine) == TINY["indels_per_haplotype"]


def _informative(viral: ModuleType, bam: pysam.AlignmentFile, ref: str, t: _Truth) -> list[str]:
    """Haplotypes (from read names) of the informative primary reads, recounted with pysam."""
    if t.vt == "SNV":
        column = _pileup(bam, t.pos - 1, stepper="nofilter", ignore_overlaps=False, ignore_orphans=False,
                         min_base_quality=0)
        return [b.name.split(":")[0] for b in column if not b.flag & 0x904 and b.base is not None]
    if t.vt == "DEL":
        _, right, k = viral.gen.normalise_deletion(ref, t.pos, len(t.ref) - 1)
        win = (t.pos - 1, right + k + 1)
    else:
        _, right, _ = viral.gen.normalise_insertion(ref, t.pos, t.alt[1:])
        win = (t.pos - 1, right + 1)
    lo, hi = win[0] - viral.INDEL_FLANK, win[1] + viral.INDEL_FLANK
    return [str(a.query_name).split(":")[0] for a in bam.fetch("virus", lo, hi)
            if not (a.flag & 0x904) and a.reference_start <= lo and (a.reference_end or 0) >= hi]


def test_truth_af_is_realised_in_the_bam(viral: ModuleType, tiny: Path) -> None:
    with pysam.FastaFile(str(tiny / "virus.fa")) as fa:
        ref = fa.fetch("virus")
    with pysam.AlignmentFile(str(tiny / "mixture.bam")) as bam:
        for t in _truth(tiny):
            haps = _informative(viral, bam, ref, t)
            carriers = sum(h in t.haps for h in haps)
            assert t.dp == len(haps), t
            assert t.af == pytest.approx(carriers / len(haps), abs=6e-6), t
            sd = (t.hf * (1 - t.hf) / len(haps)) ** 0.5
            assert abs(t.af - t.hf) < 5 * sd + 0.01, t


def test_read_names_carry_haplotypes(tiny: Path) -> None:
    with pysam.AlignmentFile(str(tiny / "mixture.bam")) as bam:
        names = {str(a.query_name) for a in bam.fetch(until_eof=True)}
        assert all(re.fullmatch(r"h[0-6]:\d{8}", n) for n in names)
        assert len(names) == 10_000
        h0 = sum(n.startswith("h0:") for n in names) / len(names)
        assert h0 == pytest.approx(0.12, abs=0.02)
        # reads showing the alt base of a 50 % SNV come from the haplotype carrying it
        for t in _truth(tiny):
            if t.vt == "SNV" and t.haps == ("h1",):
                alts = [b.name for b in _pileup(bam, t.pos - 1, min_base_quality=30) if b.base == t.alt]
                carrier = sum(n.startswith("h1:") for n in alts)
                assert carrier > 100 and len(alts) - carrier <= 0.02 * carrier, t


def _artefact_reads(folder: Path) -> list[tuple[str, float, int, list[tuple[bool, int | None]]]]:
    """Per artefact site: kind, rate, depth, (is_reverse, quality) of the reads showing the alt base."""
    out = []
    with open(folder / "artefacts.tsv") as fh, pysam.AlignmentFile(str(folder / "mixture.bam")) as bam:
        rows = [line.rstrip("\n").split("\t") for line in fh][1:]
        for _chrom, pos, ref, alt, kind, rate in rows:
            assert ref != alt
            column = _pileup(bam, int(pos) - 1, min_base_quality=0, ignore_overlaps=False)
            out.append((kind, float(rate), len(column), [(b.reverse, b.qual) for b in column if b.base == alt]))
    return out


def test_artefacts_listed_and_in_the_reads(tiny: Path) -> None:
    sites = _artefact_reads(tiny)
    assert {s[0] for s in sites} == {"strand_hotspot", "pcr"}
    for kind, rate, _, alts in sites:
        lo, hi = (0.005, 0.04) if kind == "strand_hotspot" else (0.001, 0.004)
        assert lo <= rate <= hi
        if kind == "strand_hotspot":  # at Q37 only on forward-strand reads
            assert {rev for rev, q in alts if q == 37} <= {False}
    assert sum(q == 37 for kind, _, _, alts in sites if kind == "strand_hotspot" for _, q in alts) >= 5


def test_artefact_strands_at_high_rates(viral: ModuleType, tmp_path: Path) -> None:
    params = {**TINY, "depth": 300.0, "hotspot_rates": (0.4, 0.4), "pcr_rates": (0.3, 0.3)}
    viral.generate_mixture(tmp_path, threads=1, log=False, verify=False, **params)
    for kind, _, depth, alts in _artefact_reads(tmp_path):
        q37 = [rev for rev, q in alts if q == 37]
        if kind == "strand_hotspot":  # 40 % of the forward reads, about half the depth
            assert set(q37) == {False} and 0.12 < len(q37) / depth < 0.28
        else:  # 30 % of the fragments, read on both strands
            assert set(q37) == {False, True} and 0.2 < len(q37) / depth < 0.4


# --------------------------------------------------------------------------- #
# afeval
# --------------------------------------------------------------------------- #
REF = "GATCCTGACTAAAAAGCTTGCAGTCCATGGACCTAGGCTAACGTTCAGGTACCTTAGGCA"  # 60 bp, AAAAA at 11-15


@pytest.fixture
def ref_fa(tmp_path: Path) -> str:
    fa = tmp_path / "ref.fa"
    fa.write_text(f">c1\n{REF}\n")
    pysam.faidx(str(fa))
    return str(fa)


def test_ivar_alleles() -> None:
    assert afeval.ivar_to_vcf_alleles("A", "G") == ("A", "G")
    assert afeval.ivar_to_vcf_alleles("A", "+CG") == ("A", "ACG")
    assert afeval.ivar_to_vcf_alleles("A", "-TT") == ("ATT", "A")


def test_read_ivar_tsv_converts_and_normalises(ref_fa: str, tmp_path: Path) -> None:
    cols = "REGION POS REF ALT REF_DP REF_RV REF_QUAL ALT_DP ALT_RV ALT_QUAL ALT_FREQ TOTAL_DP PVAL PASS".split()
    rows = [
        ("c1", 2, "A", "G", "0.25", "TRUE"),
        ("c1", 2, "A", "G", "0.25", "TRUE"),  # the same row for another GFF feature
        ("c1", 13, "A", "-A", "0.05", "TRUE"),  # deletion inside AAAAA: left-aligned to POS 10
        ("c1", 20, "G", "+AT", "0.1", "TRUE"),  # insertion after POS 20
        ("c1", 30, "G", "T", "0.01", "FALSE"),
    ]
    tsv = tmp_path / "ivar.tsv"
    lines = ["\t".join(cols)]
    for chrom, pos, ref, alt, freq, ok in rows:
        assert REF[pos - 1] == ref
        lines.append("\t".join([chrom, str(pos), ref, alt, "90", "40", "35", "10", "5", "35", freq, "100", "0.01", ok]))
    tsv.write_text("\n".join(lines) + "\n")
    calls = afeval.read_ivar_tsv(str(tsv), ref_fa)
    assert calls == {
        ("c1", 2, "A", "G"): 0.25,
        ("c1", 10, "TA", "T"): 0.05,
        ("c1", 20, "G", "GAT"): 0.1,
    }
    assert ("c1", 30, "G", "T") in afeval.read_ivar_tsv(str(tsv), ref_fa, pass_only=False)


def test_read_vcf_calls_af_from_info_or_ad(ref_fa: str, tmp_path: Path) -> None:
    vcf = tmp_path / "calls.vcf"
    vcf.write_text(
        "##fileformat=VCFv4.2\n##contig=<ID=c1,length=60>\n"
        '##FILTER=<ID=LowQual,Description="low">\n'
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="GT">\n'
        '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="AD">\n'
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts\n"
        "c1\t2\t.\tA\tG,T\t50\tPASS\t.\tGT:AD\t1:60,30,10\n"  # AF from AD of the unsplit record
        "c1\t14\t.\tAA\tA\t50\t.\t.\tGT:AD\t1:10,10\n"  # right-shifted deletion
        "c1\t30\t.\tG\tT\t50\tLowQual\t.\tGT:AD\t1:1,1\n"
        "c1\t40\t.\tA\tC\t50\tPASS\t.\tGT:AD\t0:9,1\n"  # called reference: not a call
    )
    calls = afeval.read_vcf_calls(str(vcf), ref_fa)
    assert calls == {
        ("c1", 2, "A", "G"): pytest.approx(0.3),  # not 30/90; T is not called (GT 1)
        ("c1", 10, "TA", "T"): pytest.approx(0.5),
    }
    assert ("c1", 30, "G", "T") in afeval.read_vcf_calls(str(vcf), ref_fa, pass_only=False)


def test_frequency_bins() -> None:
    assert [afeval.frequency_bin(x) for x in (0.7, 0.5, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.012, 0.01, 0.005)] == [
        0.5, 0.5, 0.1, 0.1, 0.05, 0.05, 0.02, 0.02, 0.01, 0.01, 0.01]
    assert afeval.frequency_bin(0.05 * (1 - 1e-9)) == 0.05  # rounding in a sum of fractions


def test_evaluate_counts_recall_fps_and_af_error() -> None:
    t = [
        afeval.TruthVariant("c", 100, "A", "G", 0.48, 0.5, "snv"),
        afeval.TruthVariant("c", 200, "A", "AT", 0.09, 0.1, "indel"),
        afeval.TruthVariant("c", 300, "C", "T", 0.011, 0.01, "snv"),
        afeval.TruthVariant("c", 300, "C", "G", 0.021, 0.02, "snv"),
    ]
    calls: dict[afeval.Key, float | None] = {
        ("c", 100, "A", "G"): 0.50,
        ("c", 200, "A", "AT"): None,
        ("c", 300, "C", "G"): 0.02,
        ("c", 400, "G", "T"): 0.01,  # artefact site
        ("c", 500, "G", "GA"): 0.02,
    }
    ev = afeval.evaluate(calls, t, genome_length=15_000, artefacts={("c", 400, "G", "T")})
    assert ev.found["snv"][0.5] == (1, 1) and ev.found["snv"][0.01] == (0, 1) and ev.found["snv"][0.02] == (1, 1)
    assert ev.found["indel"][0.1] == (1, 1) and ev.found["all"][0.05] == (0, 0)
    assert ev.recall("snv", 0.01) == 0.0 and ev.recall("all", 0.05) is None
    assert ev.false_positives == [("c", 400, "G", "T"), ("c", 500, "G", "GA")]
    assert ev.artefact_false_positives == [("c", 400, "G", "T")]
    assert ev.fp_per_30kb == pytest.approx(4.0)
    assert ev.false_negatives == [("c", 300, "C", "T")]
    assert ev.af_errors == {("c", 100, "A", "G"): pytest.approx(2.0), ("c", 300, "C", "G"): pytest.approx(-0.1)}
    d = ev.as_dict()
    assert d["recall"]["snv"]["0.5"] == {"tp": 1, "n": 1, "recall": 1.0} and d["false_positives"] == 2
    assert "HF 50%" in ev.table() and "2 (4.0 per 30 kb; 1 at artefact sites)" in ev.table()
