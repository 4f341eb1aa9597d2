"""The lowfreq engine's parts against slow, obvious versions of themselves.

* the vectorised pileup (:mod:`functions.pileup`) against a per-read pysam loop on
  the bundled BAM: every count, error sum, read span and indel event;
* the Poisson tail against direct summation, and the test's calibration: on
  simulated error-only data, no more sites reach a p-value than its level allows;
* the strand-bias test against a direct two-sided binomial sum.
"""

from __future__ import annotations

import math

import numpy as np
import pysam
import pytest
from helpers import DATA, assert_same, run_core, serial, tricky_cuts, whole_genome

from functions.core.primers import PrimerScheme
from functions.lowfreq import LowfreqParams, poisson_sf_log10, strand_bias_phred
from functions.pileup import _BASE, collect_evidence, pack_bases

SKIP = 0x4 | 0x100 | 0x200 | 0x400


def oracle(bam_path: str, chrom: str, lo: int, hi: int, p: LowfreqParams, end_skip: int,  # type: ignore[no-untyped-def]
           primers: list[tuple[int, int]] = ()):
    """Per read, with pysam: the part of the read that counts (primer bases of the primer
    its 5' end lies in left out; with mates_once, the left mate stopped at its mate's
    start + end_skip), then its bases, span and indel events."""
    n = hi - lo
    counts = np.zeros((n, 2, 4), dtype=np.int64)
    errors = np.zeros((n, 2))
    starts = np.zeros((n + 1, 2), dtype=np.int64)
    ends = np.zeros((n + 1, 2), dtype=np.int64)
    events = []
    code = {"A": 0, "C": 1, "G": 2, "T": 3}
    with pysam.AlignmentFile(bam_path) as bam:
        for r in bam.fetch(chrom, lo, hi):
            if r.flag & SKIP or r.mapping_quality < p.min_mapq:
                continue
            a, b = r.reference_start, r.reference_end
            for ps, pe in primers:
                if not r.is_reverse and ps <= r.reference_start < pe:
                    a = max(a, pe)
                if r.is_reverse and ps <= r.reference_end - 1 < pe:
                    b = min(b, ps)
            if (p.mates_once and r.is_paired and r.is_proper_pair and not r.mate_is_unmapped
                    and r.next_reference_id == r.reference_id
                    and (r.next_reference_start > r.reference_start
                         or (r.next_reference_start == r.reference_start and r.is_read1))):
                b = min(b, r.next_reference_start + end_skip)
            if b - a < p.min_aligned or b <= lo or a >= hi:
                continue
            s = int(r.is_reverse)
            starts[min(max(a, lo), hi) - lo, s] += 1
            ends[min(max(b, lo), hi) - lo, s] += 1
            seq, qual = r.query_sequence, r.query_qualities
            for qi, ri in r.get_aligned_pairs(matches_only=True):
                if ri - r.reference_start < end_skip or r.reference_end - 1 - ri < end_skip or not a <= ri < b:
                    continue
                if lo <= ri < hi and qual[qi] >= p.min_baseq and seq[qi] in code:
                    counts[ri - lo, s, code[seq[qi]]] += 1
                    errors[ri - lo, s] += 10 ** (-qual[qi] / 10)
            rpos, qpos = r.reference_start, 0
            for op, ln in r.cigartuples:
                anchor = rpos - 1
                inside = anchor >= a and anchor + (ln if op == 2 else 0) + 1 < b
                if op == 2 and rpos > r.reference_start and inside:
                    events.append((anchor, ln, 0, 0, s, a, b))
                if op == 1 and rpos > r.reference_start and ln <= 30 and inside:
                    ins, q = seq[qpos:qpos + ln], qual[qpos:qpos + ln]
                    weak = [c not in code or qq < p.min_baseq for c, qq in zip(ins, q, strict=True)]
                    packed = pack_bases(np.array([0 if w else code[c] for c, w in zip(ins, weak, strict=True)]))
                    lowq = sum(1 << j for j, w in enumerate(weak) if w)
                    events.append((anchor, -ln, packed, lowq, s, a, b))
                rpos += ln if op in (0, 2, 3, 7, 8) else 0
                qpos += ln if op in (0, 1, 4, 7, 8) else 0
    return counts, errors, starts, ends, sorted(events)


def _scheme(chrom: str, lo: int, hi: int, step: int = 300, width: int = 24) -> PrimerScheme:
    """Primers every ``step`` bp (LEFT, then RIGHT of the previous amplicon): a dense
    scheme, so that many of the bundled BAM's reads start inside one."""
    rows = []
    for i, start in enumerate(range(lo, hi - 2 * step, step)):
        rows.append([chrom, start, start + width, f"s_{i}_LEFT", "1"])
        rows.append([chrom, start + 2 * step - width, start + 2 * step, f"s_{i}_RIGHT", "1"])
    return PrimerScheme.from_rows(rows)


@pytest.mark.parametrize("chrom, lo, hi, end_skip, mates_once, primers", [
    ("chr2", 20_000, 31_000, 0, False, False),
    ("chr3", 0, 62_000, 5, False, False),
    ("chr2", 20_000, 31_000, 5, True, False),
    ("chr2", 20_000, 31_000, 5, True, True),
    ("chr1", 40_000, 52_000, 0, False, True),
])
def test_vectorised_pileup_equals_a_per_read_loop(chrom: str, lo: int, hi: int, end_skip: int, mates_once: bool,
                                                  primers: bool) -> None:
    p = LowfreqParams(min_mapq=1, min_baseq=20, mates_once=mates_once)
    bam = str(DATA / "sampleA.bam")
    scheme = _scheme(chrom, lo - 1000, hi + 1000) if primers else None
    ev = collect_evidence(bam, chrom, lo, hi, p.min_mapq, p.min_baseq, p.min_aligned, end_skip, batch_reads=97,
                          mates_once=mates_once, primers=scheme)
    spans = [(pr.start, pr.end) for pr in scheme.primers] if scheme else []
    counts, errors, starts, ends, events = oracle(bam, chrom, lo, hi, p, end_skip, spans)
    assert counts.sum() > 100_000
    np.testing.assert_array_equal(ev.counts, counts)
    np.testing.assert_allclose(ev.errors, errors, rtol=1e-12)
    np.testing.assert_array_equal(ev.starts, starts)
    np.testing.assert_array_equal(ev.ends, ends)
    e = ev.indels
    got = sorted(zip(*(a.tolist() for a in (e.anchor, e.length, e.inserted, e.lowq, e.strand, e.read_start,
                                            e.read_end)), strict=True))
    assert len(events) >= 10 and got == events
    if primers:
        assert ev.primer_trimmed.sum() > 100  # the scheme trims many reads: the test exercises it


def test_bases_decode_like_htslib() -> None:
    assert [int(_BASE[c]) for c in (1, 2, 4, 8, 15, 0)] == [0, 1, 2, 3, 4, 4]


def _direct_sf(k: int, lam: float) -> float:
    terms = [math.exp(-lam + j * math.log(lam) - math.lgamma(j + 1)) for j in range(k, k + 4000)]
    return sum(terms)


@pytest.mark.parametrize("k, lam", [(1, 0.01), (5, 1.0), (30, 4.0), (200, 150.0), (151, 150.0), (3000, 12.5)])
def test_poisson_tail_equals_direct_summation(k: int, lam: float) -> None:
    got = poisson_sf_log10(np.array([k]), np.array([lam]))[0]
    want = math.log10(_direct_sf(k, lam)) if _direct_sf(k, lam) > 0 else None
    if want is None:  # beyond double precision: compare in log space by the leading term
        want = (-lam + k * math.log(lam) - math.lgamma(k + 1)) / math.log(10)
        assert got >= want
    else:
        assert got == pytest.approx(want, abs=1e-9)
    assert poisson_sf_log10(np.array([3]), np.array([5.0]))[0] == 0.0  # k <= lam: no evidence


def test_error_model_is_calibrated_on_error_only_data() -> None:
    """Reads with known error probabilities and no variant: P(p <= alpha) <= alpha."""
    rng = np.random.default_rng(5)
    sites, depth = 20_000, 2000
    quals = rng.choice([12, 23, 37], size=(sites, depth), p=[0.05, 0.25, 0.70])
    eps = 10 ** (-quals / 10) / 3  # chance a read shows one given wrong base
    k = (rng.random((sites, depth)) < eps).sum(axis=1)
    lam = eps.sum(axis=1)
    logp = poisson_sf_log10(k, lam)
    for alpha in (1e-1, 1e-2, 1e-3):
        assert (logp <= math.log10(alpha)).mean() <= alpha, alpha
    # and it is not blind: a 1 % allele at this depth is found nearly every time
    k_true = k + rng.binomial(depth, 0.01, size=sites)
    assert (poisson_sf_log10(k_true, lam) <= -6).mean() > 0.95


@pytest.mark.parametrize("kf, k, p", [(0, 10, 0.5), (5, 10, 0.5), (30, 30, 0.5), (3, 40, 0.3), (12, 12, 0.9)])
def test_strand_bias_equals_direct_binomial(kf: int, k: int, p: float) -> None:
    pmf = [math.comb(k, j) * p**j * (1 - p) ** (k - j) for j in range(k + 1)]
    want = min(1.0, sum(x for x in pmf if x <= pmf[kf] * (1 + 1e-7)))
    got = strand_bias_phred(np.array([kf]), np.array([k]), np.array([p]))[0]
    assert got == pytest.approx(-10 * math.log10(want), abs=1e-6)


GERMLINE = LowfreqParams(min_depth=5)


def test_distributed_equals_whole_genome_with_cuts_inside_indels(store, tmp_path) -> None:
    """On the bundled 20x diploid sample (many indels, many records): the exactness of the design."""
    whole = whole_genome("sampleA", tmp_path, GERMLINE)
    cuts, kinds = tricky_cuts("sampleA", whole)
    assert {"snv", "deletion", "insertion"} <= set(kinds)
    vcf, plan, _ = run_core(store, "sampleA", tmp_path / "cuts", serial(store), cuts=cuts, params=GERMLINE)
    assert len(plan.regions) > 6
    assert_same(vcf, whole)
    vcf, _, _ = run_core(store, "sampleA", tmp_path / "n17", serial(store), 17, params=GERMLINE)
    assert_same(vcf, whole)
