"""The tiled-amplicon mixture generator (test_data/amplicon.py) at a small shape: 6 kb,
1000 pairs per amplicon, 6 alleles per frequency band; three generations of ~3 s each.

What must hold: the scheme BED is one the pipeline reads (functions.core.primers) and
tiles the genome; reads start and end exactly at their amplicon's primer ends; a read
shows the reference under the primers that amplified it even when its haplotype carries
an allele there, and the allele in the other amplicons; the truth's AF and DP are what
the reads give after primer trimming as the engine's own trimming defines it, and AF is
within sampling noise of HF when amplification is unbiased; same seed, same bytes."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pysam
import pytest
from helpers import load_generator

from functions.core.primers import PrimerScheme, read_primer_bed

TINY: dict[str, Any] = {"seed": 11, "length": 6000, "depth": 1000.0, "alleles_per_fraction": 6}
FILES = ("virus.fa", "virus.fa.fai", "scheme.primer.bed", "amplicons.tsv", "mixture.bam", "mixture.bam.bai",
         "truth.vcf.gz", "truth.vcf.gz.tbi", "artefacts.tsv")
_SKIP = 0x4 | 0x100 | 0x800


@pytest.fixture(scope="module")
def amplicon() -> ModuleType:
    return load_generator("amplicon")


@pytest.fixture(scope="module")
def tiny(amplicon: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("amplicon")
    s = amplicon.generate_amplicon_mixture(out, threads=2, log=False, **TINY)
    assert s.variant_counts["total"] == 5 * 6 and s.n_amplicons >= 18
    return out


@pytest.fixture(scope="module")
def flat(amplicon: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Unbiased amplification: no PCR jitter, no primer-mismatch loss, no dropouts."""
    out = tmp_path_factory.mktemp("amplicon-flat")
    amplicon.generate_amplicon_mixture(out, threads=2, log=False, pcr_jitter=0.0, primer_mismatch=False,
                                       dropouts=0, **{**TINY, "seed": 12})
    return out


def _truth(path: Path) -> list[pysam.VariantRecord]:
    with pysam.VariantFile(str(path / "truth.vcf.gz")) as fh:
        return list(fh)


def _amplicons(scheme: PrimerScheme) -> dict[int, tuple[Any, Any]]:
    sides: dict[int, dict[str, Any]] = {}
    for p in scheme.primers:
        sides.setdefault(int(p.amplicon.split("_")[-1]), {})[p.side] = p
    return {n: (s["LEFT"], s["RIGHT"]) for n, s in sides.items()}


def _name(read: pysam.AlignedSegment) -> tuple[int, int]:
    """Haplotype and amplicon from a read name ``h3:a017:00001234``."""
    h, a, _ = (read.query_name or "").split(":")
    return int(h[1:]), int(a[1:])


def test_scheme_parses_and_tiles(tiny: Path) -> None:
    scheme = read_primer_bed(str(tiny / "scheme.primer.bed"))
    length = pysam.FastaFile(str(tiny / "virus.fa")).get_reference_length("virus")
    scheme.check({"virus": length})
    amps = _amplicons(scheme)
    assert sorted(amps) == list(range(1, len(amps) + 1))
    rows = [line.split("\t") for line in (tiny / "scheme.primer.bed").read_text().splitlines()]
    assert all(len(r) == 6 and r[5] == ("+" if r[3].endswith("LEFT") else "-") for r in rows)
    for n, (left, right) in amps.items():
        assert left.pool == right.pool == ("1" if n % 2 else "2")
        assert 22 <= left.end - left.start <= 28 and 22 <= right.end - right.start <= 28
        assert 250 <= right.end - left.start <= 400
    for n in range(1, len(amps)):
        r1, l2 = amps[n][1], amps[n + 1][0]
        assert 45 <= r1.end - l2.start <= 110, (n, r1.end - l2.start)  # amplicons overlap
        assert l2.end < r1.start, n  # primers do not: what one hides, the other reads
    assert amps[1][0].start <= 70 and length - amps[len(amps)][1].end <= 100


def test_reads_start_and_end_at_their_primers(tiny: Path) -> None:
    amps = _amplicons(read_primer_bed(str(tiny / "scheme.primer.bed")))
    fwd_ok = fwd = rev_ok = rev = read1_fwd = read1 = 0
    with pysam.AlignmentFile(str(tiny / "mixture.bam")) as bam:
        for r in bam:
            if r.flag & _SKIP:
                continue
            left, right = amps[_name(r)[1]]
            if r.is_read1:
                read1 += 1
                read1_fwd += not r.is_reverse
            if r.is_reverse:
                rev += 1
                rev_ok += r.reference_end == right.end
            else:
                fwd += 1
                fwd_ok += r.reference_start == left.start
    assert fwd_ok >= 0.98 * fwd and rev_ok >= 0.98 * rev, (fwd_ok, fwd, rev_ok, rev)
    assert 0.45 <= read1_fwd / read1 <= 0.55  # ligation libraries: read 1 from either end


def test_primer_bases_are_the_reference_under_the_amplifying_primer(tiny: Path) -> None:
    """Reads of a haplotype carrying an SNV under a primer show the reference in the
    amplicons that primer amplified and the allele in the neighbouring one."""
    masked_ref = masked = shown_alt = shown = 0
    under = [v for v in _truth(tiny) if "UNDER_PRIMER" in v.info and v.info["VT"] == "SNV"]
    assert len(under) >= 5 * 3
    with pysam.AlignmentFile(str(tiny / "mixture.bam")) as bam:
        for v in under:
            carrier = int(v.info["HAP"][0][1:])
            hidden = set(v.info["MASKED"])
            for col in bam.pileup("virus", v.pos - 1, v.pos, truncate=True, stepper="nofilter",
                                  ignore_overlaps=False, min_base_quality=0, max_depth=10**6):
                for pr in col.pileups:
                    if pr.is_del or pr.is_refskip or pr.alignment.flag & _SKIP:
                        continue
                    h, a = _name(pr.alignment)
                    if h != carrier:
                        continue
                    seq, qpos = pr.alignment.query_sequence, pr.query_position
                    assert seq is not None and qpos is not None
                    base = seq[qpos]
                    if a in hidden:
                        masked += 1
                        masked_ref += base == v.ref
                    else:
                        shown += 1
                        shown_alt += base == (v.alts or ("",))[0]
    assert masked >= 100 and masked_ref >= 0.97 * masked, (masked_ref, masked)
    assert shown >= 100 and shown_alt >= 0.95 * shown, (shown_alt, shown)


def _recount(path: Path, v: pysam.VariantRecord, scheme: PrimerScheme) -> tuple[int, int]:
    """(alt, DP) of an SNV from the BAM, trimmed by the engine's PrimerScheme.trim_bounds."""
    reads = []
    with pysam.AlignmentFile(str(path / "mixture.bam")) as bam:
        for r in bam.fetch("virus", v.pos - 1, v.pos):
            if r.flag & _SKIP:
                continue
            reads.append(r)
    start = np.array([r.reference_start for r in reads])
    end = np.array([r.reference_end for r in reads])
    rev = np.array([r.is_reverse for r in reads])
    lo, hi = scheme.trim_bounds("virus", start, end, rev)
    carrier = int(v.info["HAP"][0][1:])
    hidden = set(v.info.get("MASKED", ()))
    alt = dp = 0
    for r, a, b in zip(reads, lo.tolist(), hi.tolist(), strict=True):
        if not a <= v.pos - 1 < b or v.pos - 1 not in set(r.get_reference_positions()):
            continue
        h, amp = _name(r)
        dp += 1
        alt += h == carrier and amp not in hidden
    return alt, dp


@pytest.mark.parametrize("which", ["tiny", "flat"])
def test_truth_af_and_dp_are_what_the_trimmed_reads_give(which: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(which)
    scheme = read_primer_bed(str(path / "scheme.primer.bed"))
    snvs = [v for v in _truth(path) if v.info["VT"] == "SNV"]
    for v in snvs:
        alt, dp = _recount(path, v, scheme)
        assert dp == v.info["DP"], (v.pos, dp, v.info["DP"])
        assert abs(alt / dp - v.info["AF"][0]) < 1e-5, (v.pos, alt / dp, v.info["AF"])
        assert set(v.info["AMP"]).isdisjoint(v.info.get("MASKED", ()))


def test_realised_af_within_sampling_noise_of_hf(flat: Path) -> None:
    """Unbiased amplification: AF - HF is binomial noise over the molecules (a pair whose
    mates overlap is one molecule counted twice, hence DP / 2)."""
    z = []
    for v in _truth(flat):
        hf, af, dp = v.info["HF"][0], v.info["AF"][0], v.info["DP"]
        n = max(dp / 2, 1)
        z.append((af - hf) / np.sqrt(hf * (1 - hf) / n))
    z_arr = np.array(z)
    assert np.abs(z_arr).max() < 5, z_arr
    assert abs(z_arr.mean()) < 0.6 and np.abs(z_arr).mean() < 1.5


def test_every_band_has_alleles_under_primers_indels_and_homopolymers(tiny: Path) -> None:
    truth = _truth(tiny)
    ref = pysam.FastaFile(str(tiny / "virus.fa")).fetch("virus")
    for hf in (0.05, 0.02, 0.01, 0.005, 0.002):
        band = [v for v in truth if abs(v.info["HF"][0] - hf) < 1e-9]
        assert len(band) == 6
        assert sum("UNDER_PRIMER" in v.info for v in band) >= 3
        assert all(v.info["DP"] > 0 and v.info["AMP"] for v in band)
    indels = [v for v in truth if v.info["VT"] != "SNV"]
    in_hp = [v for v in indels if len(set(ref[v.pos : v.pos + 4])) == 1]
    assert len(indels) >= 5 and len(in_hp) >= 2
    assert all(50 <= v.pos <= len(ref) - 50 for v in truth)


def test_same_seed_same_bytes_any_threads(amplicon: ModuleType, tiny: Path, tmp_path: Path) -> None:
    amplicon.generate_amplicon_mixture(tmp_path, threads=1, log=False, verify=False, **TINY)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (tiny / name).read_bytes(), name
