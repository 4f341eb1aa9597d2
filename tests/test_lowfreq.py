"""The lowfreq engine's parts against slow, obvious versions of themselves.

* the vectorised pileup (:mod:`functions.pileup`) against a per-read pysam loop on
  the bundled BAM: every count, error sum, read span and indel event;
* the Poisson tail against direct summation, and the test's calibration: on
  simulated error-only data, no more sites reach a p-value than its level allows;
* the strand-bias test against a direct two-sided binomial sum.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pysam
import pytest
from helpers import DATA, assert_same, run_core, serial, tricky_cuts, whole_genome

from bench.evaluation.vcfcompare import vcf_body
from functions.core.primers import PrimerScheme
from functions.lowfreq import (
    NULL_BAND,
    LowfreqParams,
    add_noise_tables,
    budget_qual,
    finalize,
    negbin_sf_log10,
    null_tail_log10,
    poisson_sf_log10,
    sample_model,
    site_noise_cv,
    spectrum,
    strand_bias_phred,
)
from functions.pileup import _BASE, collect_evidence, pack_bases

SKIP = 0x4 | 0x100 | 0x200 | 0x400


def oracle(bam_path: str, chrom: str, lo: int, hi: int, p: LowfreqParams, end_skip: int,  # type: ignore[no-untyped-def]
           primers: list[tuple[int, int]] = (), anchor_bases: int = 0):
    """Per read, with pysam: the part of the read that counts (primer bases of the primer
    its 5' end lies in left out; with mates_once, the left mate stopped at its mate's
    start + end_skip), then its bases, span and indel events; the span for indels
    widened by up to ``anchor_bases`` of the trimmed primer bases."""
    n = hi - lo
    counts = np.zeros((n, 2, 4), dtype=np.int64)
    errors = np.zeros((n, 2))
    starts = np.zeros((n + 1, 2), dtype=np.int64)
    ends = np.zeros((n + 1, 2), dtype=np.int64)
    events = []
    straddle = []
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
            ta, tb = a, b
            if (p.mates_once and r.is_paired and r.is_proper_pair and not r.mate_is_unmapped
                    and r.next_reference_id == r.reference_id
                    and (r.next_reference_start > r.reference_start
                         or (r.next_reference_start == r.reference_start and r.is_read1))):
                b = min(b, r.next_reference_start + end_skip)
            if b - a < p.min_aligned or b <= lo or a >= hi:
                continue
            s = int(r.is_reverse)
            xa = a - min(anchor_bases, ta - r.reference_start) if a == ta else a
            xb = b + min(anchor_bases, r.reference_end - tb) if b == tb else b
            starts[min(max(xa, lo), hi) - lo, s] += 1
            ends[min(max(xb, lo), hi) - lo, s] += 1
            # a left mate cut short by its mate: its whole trimmed span for indel windows
            # that start before the mate does
            ev_b, ev_xb, last_start = b, xb, 1 << 62
            if b < tb:
                ev_b, ev_xb, last_start = tb, tb + min(anchor_bases, r.reference_end - tb), r.next_reference_start - 1
                straddle.append((xa, b, ev_xb, r.next_reference_start, s))
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
                inside = anchor >= a and anchor + (ln if op == 2 else 0) + 1 < ev_b
                if op == 2 and rpos > r.reference_start and inside:
                    events.append((anchor, ln, 0, 0, s, xa, ev_xb, last_start))
                if op == 1 and rpos > r.reference_start and ln <= 30 and inside:
                    ins, q = seq[qpos:qpos + ln], qual[qpos:qpos + ln]
                    weak = [c not in code or qq < p.min_baseq for c, qq in zip(ins, q, strict=True)]
                    packed = pack_bases(np.array([0 if w else code[c] for c, w in zip(ins, weak, strict=True)]))
                    lowq = sum(1 << j for j, w in enumerate(weak) if w)
                    events.append((anchor, -ln, packed, lowq, s, xa, ev_xb, last_start))
                rpos += ln if op in (0, 2, 3, 7, 8) else 0
                qpos += ln if op in (0, 1, 4, 7, 8) else 0
    return counts, errors, starts, ends, sorted(events), straddle


def _scheme(chrom: str, lo: int, hi: int, step: int = 300, width: int = 24) -> PrimerScheme:
    """Primers every ``step`` bp (LEFT, then RIGHT of the previous amplicon): a dense
    scheme, so that many of the bundled BAM's reads start inside one."""
    rows = []
    for i, start in enumerate(range(lo, hi - 2 * step, step)):
        rows.append([chrom, start, start + width, f"s_{i}_LEFT", "1"])
        rows.append([chrom, start + 2 * step - width, start + 2 * step, f"s_{i}_RIGHT", "1"])
    return PrimerScheme.from_rows(rows)


@pytest.mark.parametrize("chrom, lo, hi, end_skip, mates_once, primers, anchor", [
    ("chr2", 20_000, 31_000, 0, False, False, 5),
    ("chr3", 0, 62_000, 5, False, False, 0),
    ("chr2", 20_000, 31_000, 5, True, False, 0),
    ("chr2", 20_000, 31_000, 5, True, True, 5),
    ("chr1", 40_000, 52_000, 0, False, True, 10),
    ("chr1", 40_000, 52_000, 0, False, True, 0),
])
def test_vectorised_pileup_equals_a_per_read_loop(chrom: str, lo: int, hi: int, end_skip: int, mates_once: bool,
                                                  primers: bool, anchor: int) -> None:
    p = LowfreqParams(min_mapq=1, min_baseq=20, mates_once=mates_once)
    bam = str(DATA / "sampleA.bam")
    scheme = _scheme(chrom, lo - 1000, hi + 1000) if primers else None
    ev = collect_evidence(bam, chrom, lo, hi, p.min_mapq, p.min_baseq, p.min_aligned, end_skip, batch_reads=97,
                          mates_once=mates_once, primers=scheme, anchor_bases=anchor)
    spans = [(pr.start, pr.end) for pr in scheme.primers] if scheme else []
    counts, errors, starts, ends, events, straddle = oracle(bam, chrom, lo, hi, p, end_skip, spans, anchor)
    assert counts.sum() > 100_000
    np.testing.assert_array_equal(ev.counts, counts)
    np.testing.assert_allclose(ev.errors, errors, rtol=1e-12)
    np.testing.assert_array_equal(ev.starts, starts)
    np.testing.assert_array_equal(ev.ends, ends)
    e = ev.indels
    got = sorted(zip(*(a.tolist() for a in (e.anchor, e.length, e.inserted, e.lowq, e.strand, e.read_start,
                                            e.read_end, e.last_start)), strict=True))
    assert len(events) >= 10 and got == events
    st = ev.straddle
    assert sorted(zip(*(a.tolist() for a in (st.start, st.cut, st.end, st.mate, st.strand)), strict=True)) == sorted(
        straddle)
    assert (len(straddle) > 50) == mates_once
    if mates_once:
        # Indel windows: every fragment counted once. Per window, from the per-read loop:
        # the reads whose span covers it (checked above as starts/ends), plus each cut left
        # mate whose whole trimmed span covers it, for windows starting before its mate
        # and ending where its cut span no longer reaches.
        rng = np.random.default_rng(1)
        first = rng.integers(lo + 60, hi - 60, 400)
        last = first + rng.integers(2, 40, 400)
        want = np.zeros((400, 2), dtype=np.int64)
        for k, (f, la) in enumerate(zip(first.tolist(), last.tolist(), strict=True)):
            for xa, cut, xb, mate, s_ in straddle:
                want[k, s_] += (xa <= f < mate) and la < xb and cut <= la
        want += ev.spanning(first, last, p.min_aligned)
        np.testing.assert_array_equal(ev.indel_depth(first, last, p.min_aligned), want)
        assert want.sum() > ev.spanning(first, last, p.min_aligned).sum()  # windows straddling a cut exist
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


def _direct_sum_tail(k: int, shape: float, lam: float, floor: float) -> float:
    """P(X + Y >= k), X negative binomial (shape, mean lam), Y Poisson(floor), by plain summation."""
    q = lam / (shape + lam)
    px = [math.exp(math.lgamma(j + shape) - math.lgamma(shape) - math.lgamma(j + 1) + shape * math.log1p(-q)
                   + j * math.log(q)) for j in range(k + 4000)]
    py = [math.exp(-floor + j * math.log(floor) - math.lgamma(j + 1)) if floor > 0 else float(j == 0)
          for j in range(k + 4000)]
    below = sum(py[y] * sum(px[: k - y]) for y in range(k))  # P(X + Y < k)
    return math.log10(max(1.0 - below, 1e-300)) if below < 1 - 1e-9 else math.log10(
        sum(py[y] * sum(px[k - y :]) for y in range(k)) + sum(py[k:]))


@pytest.mark.parametrize("k, shape, lam, floor", [
    (20, 3.0, 2.0, 1.0), (18, 3.0, 1.6, 9.3), (50, 2.0, 3.0, 9.0), (9, 1.0, 0.2, 0.3), (30, 11.0, 8.0, 0.0),
    (12, 1.0, 0.5, 0.0), (400, 5.0, 30.0, 20.0),
])
def test_noise_model_tail_equals_direct_summation(k: int, shape: float, lam: float, floor: float) -> None:
    want = _direct_sum_tail(k, shape, lam, floor)
    got = null_tail_log10(np.array([k]), np.array([shape]), np.array([lam]), np.array([floor]))[0]
    assert got == pytest.approx(want, abs=1e-6 * max(1.0, abs(want)))
    if floor == 0:
        assert negbin_sf_log10(np.array([k]), np.array([shape]), np.array([lam]))[0] == pytest.approx(want, abs=1e-6)


def test_noisy_sites_are_learnt_from_the_other_wrong_bases() -> None:
    """Error-only data where each site's error rate is several times the qualities' on
    some sites (lognormal, CV ~1): the Poisson of the qualities calls the noisy sites,
    the site-noise model does not; and a 0.3 % allele at 10,000x is still found."""
    rng = np.random.default_rng(11)
    sites, depth = 20_000, 10_000
    eps = 2e-4  # Q37
    factor = np.exp(rng.normal(0.0, 0.8, sites))
    factor /= factor.mean()
    p_err = eps * factor  # per base; the wrong base is one of three, ALT takes half
    n_wrong = rng.binomial(depth, p_err)
    alt = rng.binomial(n_wrong, 0.5)
    other = n_wrong - alt
    errors = np.full(sites, depth * eps)
    mu_a = mu_o = errors / 2
    alpha = 1.0
    shape = alpha + other
    lam = mu_a * shape / (alpha + mu_o)
    zero = np.zeros(sites)
    logp = null_tail_log10(alt, shape, lam, zero)
    naive = poisson_sf_log10(alt, mu_a)
    for level in (1e-2, 1e-3, 1e-4):
        assert (logp <= math.log10(level)).mean() <= level, level
    assert (naive <= -4).mean() > 10 * 1e-4  # without the site's noise, noisy sites look like alleles
    k_true = alt + rng.binomial(depth, 0.003, size=sites)
    assert (null_tail_log10(k_true, shape, lam, zero) <= -6).mean() > 0.9


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


def test_distributed_equals_whole_genome_with_a_samples_own_threshold(store, tmp_path) -> None:
    """``fp_budget``: the threshold each sample gets from its own tests is the same for
    any plan (it needs every region's candidates: the merge reads them all first), and
    it is really used: below ``min_qual`` here, and more records than with min_qual."""
    budget = LowfreqParams(min_depth=5, fp_budget=0.5)
    whole = whole_genome("sampleA", tmp_path, budget)
    with open(whole) as fh:
        header = [ln for ln in fh if ln.startswith("##lowfreqThreshold=")]
    assert len(header) == 1, header
    threshold = float(header[0].split(">=")[1].split()[0])
    assert threshold < budget.min_qual
    assert len(vcf_body(whole)) > len(vcf_body(whole_genome("sampleA", tmp_path, GERMLINE)))
    cuts, _ = tricky_cuts("sampleA", whole)
    for name, plan in (("cuts", {"cuts": cuts}), ("n17", {"n_regions": 17})):
        vcf, _, _ = run_core(store, "sampleA", tmp_path / name, serial(store), params=budget, **plan)
        assert_same(vcf, whole)
        with pysam.VariantFile(vcf) as fh:
            assert [r for r in str(fh.header).splitlines() if r.startswith("##lowfreqThreshold=")] == [
                header[0].strip()]


def test_the_budget_threshold_keeps_false_reports_within_the_budget() -> None:
    """Null tests whose model p-values are exact or conservative (by 1/16, as measured on
    the amplicon mixtures): over many simulated samples of 80,000 tests the threshold
    from each sample's own band keeps the mean number of false reports within
    ``fp_budget``, and the conservative model gets a lower threshold than the exact one."""
    rng = np.random.default_rng(7)
    p = LowfreqParams(fp_budget=0.5, min_qual=80)
    for scale, lowest, highest in ((1.0, 50.0, 55.0), (1 / 16, 37.0, 44.0)):
        reports, thresholds = [], []
        for _ in range(200):
            qual = -10 * np.log10(rng.random(80_000) / scale)
            band = int(((qual >= NULL_BAND[0]) & (qual < NULL_BAND[1])).sum())
            thresholds.append(budget_qual(band, p))
            reports.append(int((qual >= thresholds[-1]).sum()))
        assert np.mean(reports) <= p.fp_budget, (scale, np.mean(reports))
        assert lowest <= np.median(thresholds) <= highest, (scale, np.median(thresholds))
    assert budget_qual(0, p) == 30.0 and budget_qual(10**9, p) == 80.0
    assert budget_qual(46, LowfreqParams()) == 60.0  # no budget: min_qual
    assert budget_qual(46, LowfreqParams(fp_budget=0.5)) == pytest.approx(41.3, abs=0.05)


def _table(rate: float, err: float = 1e6, a_to_g: float | None = None) -> dict[str, Any]:
    """A noise table in which every wrong base shows ``rate`` reads per unit of expected
    error (A>G ``a_to_g`` if given)."""
    wrong = np.full((2, 4, 4), round(rate * err), dtype=np.int64)
    if a_to_g is not None:
        wrong[:, 0, 2] = round(a_to_g * err)
    wrong[:, np.arange(4), np.arange(4)] = 0
    return {"wrong": wrong.tolist(), "error_micro": np.full((2, 4), round(err * 1e6), dtype=np.int64).tolist(),
            "dispersion": np.zeros((3, 2, 4), dtype=np.int64).tolist()}


def test_spectrum_is_learnt_from_the_table_and_pulled_towards_the_conservative_share() -> None:
    rho = spectrum(_table(0.2))
    assert rho[0, 0, 1] == pytest.approx(0.2, rel=1e-4) and rho[1, 2, 0] == pytest.approx(0.2, rel=1e-4)
    assert (rho[:, np.arange(4), np.arange(4)] == 0).all()
    # a class seen little stays near the conservative share
    assert spectrum(_table(0.4, err=5.0))[0, 0, 1] == pytest.approx((2 + 10) / 25, rel=1e-6)
    summed = add_noise_tables([_table(0.1), _table(0.3)])
    assert spectrum(summed)[0, 3, 2] == pytest.approx(0.2, rel=1e-4)


def test_merge_scores_candidates_under_the_samples_spectrum() -> None:
    """The same candidate A>G: reported where the sample's A>G errors are few, not where
    they are many (the other wrong bases alike); indels pass as they are; the order is kept."""
    p = LowfreqParams(baseline_error=0.0001)
    snv = ("virus\t100\t.\tA\tG\t30.0\tPASS\tDP=10000;AF=0.002000;ADF=4990,10;ADR=4990,10;SBP=0;QF=20;QR=20;"
           "SE=1.0,1.0;SM=1,1\n")
    indel = "virus\t90\t.\tAT\tA\t300.0\tPASS\tDP=10000;AF=0.010000;ADF=4950,50;ADR=4950,50;SBP=0;QF=150;QR=150;INDEL\n"
    low = finalize([indel, snv], sample_model(_table(0.3, a_to_g=0.05), p), p)
    high = finalize([indel, snv], sample_model(_table(0.3, a_to_g=3.0), p), p)
    assert low[0] == indel and len(low) == 2 and "SE=" not in low[1] and float(low[1].split("\t")[5]) >= 60
    assert high == [indel]


def test_merge_refuses_fragments_without_a_noise_table() -> None:
    from pipeline.manifests import CallResults
    from pipeline.merge import FragmentError, noise_model

    manifest = CallResults("s1", "code", "lowfreq", LowfreqParams().as_dict(), "lowfreq", 0, ())
    with pytest.raises(FragmentError, match="forcerun call"):
        noise_model([{"region": 0}], manifest, "s1", "call")


@pytest.mark.parametrize("cv", [0.0, 0.5, 1.0])
def test_the_sites_spread_is_learnt_by_moments(cv: float) -> None:
    """Sites whose noise factor has CV ``cv``: the estimate from the table's sums recovers it."""
    rng = np.random.default_rng(3)
    sites = 40_000
    e = rng.uniform(1.0, 4.0, (sites, 2))  # quality-expected errors per site and strand
    f = rng.gamma(1 / cv**2, cv**2, (sites, 2)) if cv > 0 else np.ones((sites, 2))
    rate = 0.6  # the spectrum's errors per unit of expected error, all wrong bases
    w = rng.poisson(f * rate * e)
    milli = np.rint(e * 1e3).astype(np.int64)
    disp = np.zeros((3, 2, 4), dtype=np.int64)
    disp[:, :, 0] = [(w * w).sum(axis=0), (w * milli).sum(axis=0), (milli * milli).sum(axis=0)]
    wrong = np.zeros((2, 4, 4), dtype=np.int64)
    wrong[:, 0, 1] = w.sum(axis=0)
    table = {"wrong": wrong.tolist(), "error_micro": np.zeros((2, 4), dtype=np.int64).tolist(),
             "dispersion": disp.tolist()}
    rho = np.zeros((2, 4, 4))
    rho[:, 0, 1] = rate
    got = site_noise_cv(table, rho)
    assert got is not None and got == pytest.approx(cv, abs=0.05)
