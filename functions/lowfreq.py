"""The ``lowfreq`` engine: minority variants of mixed (viral) populations, with AF.

Contract: :class:`LowfreqParams` holds every parameter that changes a call;
:func:`run_lowfreq` has the signature of :func:`functions.bcftools_engine.run_bcftools`
(BAM, reference, params, output VCF, optional region) and writes an uncompressed
VCF of biallelic records: one per allele that the error model cannot explain, with
INFO ``AF``, ``DP``, per-strand depths ``ADF``/``ADR``, the strand-bias score
``SBP``, per-strand evidence ``QF``/``QR``, a phred ``QUAL`` and the FILTERs
``strand_bias`` and ``low_depth``. A position with several such alleles gets one
record per allele (as LoFreq does), each with its own AF and FILTER.

The model (docs/lowfreq.md has the derivation and the parameters):

* Evidence comes from :mod:`functions.pileup`: per position and strand, the count
  of each base and the sum of the bases' error probabilities; per indel, the reads
  showing it and the reads spanning its whole repeat context plus ``indel_flank``
  bases on each side. Bases within ``end_skip`` of a read's alignment ends are not
  counted: that is where aligners write an indel they cannot place as mismatches.
* Under the null hypothesis "allele ``a`` is not in the sample", a read shows ``a``
  by a sequencing error (its base's error probability from the quality, times the
  sample's error spectrum for that strand, reference base and wrong base), scaled by
  the site's own noise factor, or by an error nothing at the site shows (an early PCR
  error) at ``baseline_error`` per read. The noise factor is gamma-distributed (mean
  1; its spread learnt over the whole sample unless ``site_noise`` fixes it) and
  learnt at the site from its other wrong bases (an indel's from its mirror indel), so
  that term is negative binomial; the floor is Poisson; QUAL = −10·log10 P(X ≥ k) of
  their sum, computed exactly. For indels the expected count at an average site is
  n·indel_error·(1 + repeat length) / 10^(length − 1).
* A true allele is on both strands, in the proportion of the site's reads: the
  allele must be significant on each strand alone (``min_strand_qual``) and its
  strand split must not differ from the site's (two-sided binomial test, ``SBP``,
  ``max_strand_bias``), or the record is FILTERed ``strand_bias``.

Everything but the spectrum is computed per position from that position's evidence
alone, so any window holding a position gives the same candidate for it. The spectrum
is the sample's: a function keeps candidate SNVs with their site terms and the integer
counts the spectrum is made of (:func:`noise_table`, for the positions it owns), and
the merge scores them with every region's counts added (:func:`finalize`); a
whole-genome run does the same in one process, so a region's records, once merged,
equal a whole-genome run's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pysam

from functions.core.primers import PrimerScheme
from functions.core.tasks import Span
from functions.core.version import __version__
from functions.pileup import Evidence, collect_evidence, unpack_bases

_LN10 = math.log(10.0)


@dataclass(frozen=True)
class LowfreqParams:
    ENGINE: ClassVar[str] = "lowfreq"
    PRIMERS: ClassVar[bool] = True  # takes a primer scheme (run_lowfreq's ``primers``)
    DEPTH: ClassVar[bool] = True  # its functions keep a depth track (run_lowfreq's ``on_evidence``)
    SPECTRUM: ClassVar[bool] = True  # fragments hold candidates, scored at the merge (run_lowfreq's ``on_noise``)

    min_mapq: int = 20
    min_baseq: int = 30
    min_aligned: int = 50
    end_skip: int = 5
    baseline_error: float = 0.002
    site_noise: float | None = None
    indel_error: float = 0.0001
    indel_flank: int = 5
    min_qual: float = 60.0
    fp_budget: float | None = None
    min_strand_qual: float = 20.0
    max_strand_bias: float = 40.0
    min_depth: int = 100
    min_af: float = 0.0
    mates_once: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LowfreqParams:
        return cls(**d)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def context_padding(self) -> int:
        """Context a region needs on each side: an indel's window (its repeat context
        and ``indel_flank`` on each side) is shorter than ``min_aligned`` and is
        normalised inside it; every other count is per read or per position."""
        return 2 * (self.min_aligned + self.indel_flank)

    def describe(self) -> str:
        return "lowfreq " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.as_dict().items())


# --------------------------------------------------------------------------- #
# Statistics, vectorised
# --------------------------------------------------------------------------- #
def _lgamma(x: np.ndarray) -> np.ndarray:
    return np.frompyfunc(math.lgamma, 1, 1)(x).astype(np.float64)


def poisson_sf_log10(k: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """log10 P(X >= k) for X ~ Poisson(lam), exact to ~1e-12 relative; 0 when k <= lam.

    P(X >= k) = pmf(k) · Σ_{j>=0} Π_{m=1..j} lam/(k+m); the series is summed until its
    terms stop mattering, and what might remain after 5000 terms is bounded by a
    geometric tail (so the result never understates the p-value).
    """
    k = np.asarray(k, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    out = np.zeros(np.broadcast(k, lam).shape)
    k, lam = np.broadcast_to(k, out.shape), np.broadcast_to(lam, out.shape)
    idx = np.flatnonzero((k > lam) & (k > 0))
    if not len(idx):
        return out
    kk, ll = k.flat[idx], lam.flat[idx]
    log_pmf = -ll + kk * np.log(np.maximum(ll, 1e-300)) - _lgamma(kk + 1)
    total = np.ones(len(idx))
    term = np.ones(len(idx))
    active = np.arange(len(idx))
    j = 0
    while len(active) and j < 5000:
        j += 1
        term[active] *= ll[active] / (kk[active] + j)
        total[active] += term[active]
        active = active[term[active] > 1e-16 * total[active]]
    if len(active):  # slow series (k just above lam): bound the rest geometrically
        r = ll[active] / (kk[active] + j + 1)
        total[active] += term[active] * r / (1 - r)
    out.flat[idx] = np.minimum(0.0, (log_pmf + np.log(total)) / _LN10)
    return out


def negbin_sf_log10(k: np.ndarray, r: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """log10 P(X >= k) for X negative binomial with ``r`` (shape) and mean ``mu``:
    a Poisson whose rate is gamma-distributed (shape ``r``, mean ``mu``). 0 when k <= mu.

    P(X >= k) = pmf(k) · Σ_{j>=0} Π_{m=0..j-1} (k+m+r)/(k+m+1) · q, q = mu/(r+mu);
    summed as :func:`poisson_sf_log10` sums its series, with the rest bounded by a
    geometric tail (never an understated p-value).
    """
    k = np.asarray(k, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    out = np.zeros(np.broadcast(k, r, mu).shape)
    k, r, mu = (np.broadcast_to(a, out.shape) for a in (k, r, mu))
    idx = np.flatnonzero((k > mu) & (k > 0))
    if not len(idx):
        return out
    kk, rr, mm = k.flat[idx], r.flat[idx], np.maximum(mu.flat[idx], 1e-300)
    q = mm / (rr + mm)
    log_pmf = _lgamma(kk + rr) - _lgamma(rr) - _lgamma(kk + 1) + rr * np.log1p(-q) + kk * np.log(q)
    total = np.ones(len(idx))
    term = np.ones(len(idx))
    active = np.arange(len(idx))
    j = 0
    while len(active) and j < 5000:
        term[active] *= (kk[active] + j + rr[active]) / (kk[active] + j + 1) * q[active]
        j += 1
        total[active] += term[active]
        active = active[term[active] > 1e-16 * total[active]]
    if len(active):  # the ratio of terms falls towards q < 1: bound the rest by the current ratio
        ratio = (kk[active] + j + rr[active]) / (kk[active] + j + 1) * q[active]
        total[active] += term[active] * ratio / np.maximum(1 - ratio, 1e-12)
    out.flat[idx] = np.minimum(0.0, (log_pmf + np.log(total)) / _LN10)
    return out


def strand_bias_phred(k_fwd: np.ndarray, k: np.ndarray, p_fwd: np.ndarray) -> np.ndarray:
    """Phred of the two-sided binomial test of ``k_fwd`` forward reads out of ``k`` at rate ``p_fwd``."""
    out = np.zeros(len(k))
    if not len(k):
        return out
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, int(k.max()) + 1, dtype=np.float64)))])
    for i in range(len(k)):  # one test per reported allele; each is a vector operation over 0..k
        n, x, p = int(k[i]), int(k_fwd[i]), float(min(max(p_fwd[i], 1e-12), 1 - 1e-12))
        j = np.arange(n + 1)
        log_pmf = log_fact[n] - log_fact[j] - log_fact[n - j] + j * math.log(p) + (n - j) * math.log1p(-p)
        pval = np.exp(log_pmf[log_pmf <= log_pmf[x] + 1e-7]).sum()
        out[i] = -10 * math.log10(min(1.0, max(pval, 1e-300)))
    return out


# --------------------------------------------------------------------------- #
# Candidate alleles
# --------------------------------------------------------------------------- #
@dataclass
class Alleles:
    """Tested alleles (one row each), in the engine's record order once sorted."""

    pos: np.ndarray  # 0-based POS
    ref: list[str]
    alt: list[str]
    depth: np.ndarray  # (n, 2): informative reads per strand
    alt_count: np.ndarray  # (n, 2): reads showing the allele per strand
    # The null: per strand, the site's sequencing errors, negative binomial (a Poisson
    # whose rate, the site's noise, is gamma-distributed) of ``shape`` (inf: Poisson)
    # and mean ``lam``, plus ``floor`` errors the site does not show otherwise (Poisson).
    lam: np.ndarray  # (n, 2)
    shape: np.ndarray  # (n, 2)
    floor: np.ndarray  # (n, 2)
    lam_all: np.ndarray  # (n,): the same for both strands together
    shape_all: np.ndarray  # (n,)
    # SNVs: what the merge needs to score them again under the sample's spectrum
    errors: np.ndarray | None = None  # (n, 2): the bases' quality-expected errors
    m_other: np.ndarray | None = None  # (n, 2): the site's other wrong bases

    def __len__(self) -> int:
        return len(self.pos)


_BASES = "ACGT"
_CODE = np.full(256, 4, dtype=np.int64)
for _i, _c in enumerate(_BASES):
    _CODE[ord(_c)] = _CODE[ord(_c.lower())] = _i


def tail_log10(k: np.ndarray, shape: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """log10 P(X >= k): negative binomial of ``shape`` and mean ``lam``, Poisson where shape is inf."""
    k, shape, lam = np.broadcast_arrays(np.asarray(k, dtype=np.float64), shape, lam)
    out = np.empty(k.shape)
    pois = np.isinf(shape)
    out[pois] = poisson_sf_log10(k[pois], lam[pois])
    out[~pois] = negbin_sf_log10(k[~pois], shape[~pois], lam[~pois])
    return out


def _sum_tail(k: int, shape: float, lam: float, floor: float) -> float:
    """log10 P(X + Y >= k), X negative binomial (``shape``, mean ``lam``; Poisson if inf), Y Poisson(``floor``):
    Σ_y P(Y = y)·P(X >= k - y) + P(Y >= k), with X's survival summed down from its tail at k."""
    j = np.arange(k, dtype=np.float64)
    if np.isinf(shape):
        log_px = -lam + j * math.log(max(lam, 1e-300)) - _lgamma(j + 1)
        s_k = poisson_sf_log10(np.array([k]), np.array([lam]))[0]
    else:
        q = lam / (shape + lam)
        log_px = (_lgamma(j + shape) - math.lgamma(shape) - _lgamma(j + 1) + shape * math.log1p(-q)
                  + j * math.log(max(q, 1e-300)))
        s_k = negbin_sf_log10(np.array([k]), np.array([shape]), np.array([lam]))[0]
    # survival of X at k, k-1, ..., 1 (in that order), then P(Y = 0..k-1)
    surv = 10.0**s_k + np.cumsum(np.exp(log_px[::-1]))
    surv = np.concatenate([[10.0**s_k], surv[:-1]])  # S(k), S(k-1), ..., S(1)
    log_py = -floor + j * math.log(max(floor, 1e-300)) - _lgamma(j + 1)
    total = float(np.sum(np.exp(log_py) * np.minimum(surv, 1.0))) + 10.0 ** poisson_sf_log10(
        np.array([k]), np.array([floor]))[0]
    return min(0.0, math.log10(max(total, 1e-300)))


_EXACT_MAX_K = 20_000


def null_tail_log10(k: np.ndarray, shape: np.ndarray, lam: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """log10 P(X + Y >= k), X negative binomial (``shape``, ``lam``), Y Poisson(``floor``).

    Computed exactly (:func:`_sum_tail`) where it can matter; where even its lower
    bound max(P(X >= k), P(Y >= k)) exceeds 0.1 that bound is returned (such p-values
    decide nothing), and above ``_EXACT_MAX_K`` reads an upper bound (X + Y >= k needs
    X >= k/2 or Y >= k/2), never an understated p-value.
    """
    k, shape, lam, floor = (np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(k, shape, lam, floor))
    out = np.maximum(tail_log10(k, shape, lam), poisson_sf_log10(k, floor))
    need = np.flatnonzero((floor.ravel() > 0) & (out.ravel() < -1.0))
    for i in need.tolist():
        kk, sh, ll, ff = int(k.flat[i]), float(shape.flat[i]), float(lam.flat[i]), float(floor.flat[i])
        if kk <= _EXACT_MAX_K:
            out.flat[i] = _sum_tail(kk, sh, ll, ff)
        else:
            half = np.array([math.ceil(kk / 2)], dtype=np.float64)
            tx = tail_log10(half, np.array([sh]), np.array([ll]))[0]
            ty = poisson_sf_log10(half, np.array([ff]))[0]
            out.flat[i] = min(0.0, max(tx, ty) + math.log10(2.0))
    return out


# The largest share of a base's sequencing errors that one wrong base takes: Illumina's
# substitutions are not uniform over the three (A>G and C>T in read orientation can take
# half). Assuming half for the ALT (and the other half for the two others) never
# understates the ALT's expected errors.
_ALT_SHARE = 0.5
# An SNV a function keeps for the merge to score under the sample's error spectrum:
# QUAL under the conservative spectrum (every ALT half of the errors) at least this.
CANDIDATE_QUAL = 10.0
# The sample's spectrum: errors of each ALT per unit of quality-expected error, by strand
# and reference base, pulled towards the conservative share by this many expected errors
# (a class seen little stays near it) and kept within _RHO_RANGE.
_SPECTRUM_PRIOR = 20.0
_RHO_RANGE = (0.05, 5.0)
_MICRO = 1e6  # quality-expected errors are summed in integer millionths: the same sum in any order


_CONSERVATIVE_NOISE = 1.0  # the sites' spread (CV) assumed before the sample's is known
_ALPHA_RANGE = (0.25, 100.0)  # a learnt spread stays within CV 0.1-2


def _alpha(site_noise: float | None) -> float:
    """The gamma prior's shape for a site-noise CV (None: the conservative CV; 0: Poisson)."""
    cv = _CONSERVATIVE_NOISE if site_noise is None else site_noise
    return 1.0 / cv**2 if cv > 0 else np.inf


class SiteTerms(NamedTuple):
    """A window's per-site terms under the conservative spectrum (every ALT half of a
    base's errors), per position, strand and base where shaped (L, 2, 4)."""

    codes: np.ndarray  # (L,): reference base codes, 4 for anything but A, C, G, T
    is_alt: np.ndarray  # (L, 4)
    mu_a: np.ndarray  # the ALT's expected errors at an average site
    mu_o: np.ndarray  # the two other wrong bases'
    floor: np.ndarray  # (L, 2): errors the other bases do not show (early PCR errors)
    m_other: np.ndarray  # the other wrong bases that are noise, for each ALT
    noise: np.ndarray  # the wrong bases that are noise


def site_terms(ev: Evidence, ref: str, params: LowfreqParams) -> SiteTerms:
    """The terms :func:`_snv_alleles` and :func:`noise_table` both need, computed once
    per window; ``ref`` holds the window's bases from ``ev.lo`` on."""
    codes = _CODE[np.frombuffer(ref[: ev.hi - ev.lo].encode(), dtype=np.uint8)]
    k = ev.counts.sum(axis=1)  # (L, 4)
    depth = ev.counts.sum(axis=2)  # (L, 2)
    is_alt = (codes[:, None] < 4) & (np.arange(4)[None, :] != codes[:, None])  # (L, 4)
    mu_a = np.where(is_alt, _ALT_SHARE, 0.0)[:, None, :] * ev.errors[:, :, None]  # (L, 2, 4)
    mu_o = np.where(is_alt, 1 - _ALT_SHARE, 0.0)[:, None, :] * ev.errors[:, :, None]
    floor = params.baseline_error * depth
    alpha = _alpha(params.site_noise)
    # The site's noise is learnt from its wrong bases that noise can explain: a base
    # significant on its own under the conservative prior (another allele of a
    # multi-allelic site) says nothing about the errors there. Significant: even the
    # union bound P(X >= k/2) + P(Y >= k/2) of its null tail is below 10^(-min_qual/10).
    half = np.ceil(k / 2)
    seq = np.broadcast_to(_ALT_SHARE * ev.errors.sum(axis=1)[:, None], k.shape)
    bound = np.logaddexp(tail_log10(half, np.full(k.shape, alpha), seq) * _LN10,
                         poisson_sf_log10(half, np.broadcast_to(floor.sum(axis=1)[:, None], k.shape)) * _LN10)
    real = is_alt & (k >= 2) & (bound / _LN10 <= -params.min_qual / 10.0)
    noise = np.where((is_alt & ~real)[:, None, :], ev.counts, 0)  # (L, 2, 4)
    m_other = noise.sum(axis=2)[:, :, None] - noise  # (L, 2, 4): the other wrong bases, for each ALT
    return SiteTerms(codes, is_alt, mu_a, mu_o, floor, m_other, noise)


def _posterior(mu_a: np.ndarray, mu_o: np.ndarray, m_other: np.ndarray,
               alpha: float) -> tuple[np.ndarray, ...]:
    """The site-noise posterior's (shape, mean) per strand and for both strands (axis 1),
    for a gamma prior of shape ``alpha`` (inf: no site noise, Poisson)."""
    if np.isinf(alpha):
        return (np.full(mu_a.shape, np.inf), mu_a, np.full(mu_a.sum(axis=1).shape, np.inf), mu_a.sum(axis=1))
    shape = alpha + m_other
    shape_all = alpha + m_other.sum(axis=1)
    return (shape, mu_a * shape / (alpha + mu_o), shape_all,
            mu_a.sum(axis=1) * shape_all / (alpha + mu_o.sum(axis=1)))


def noise_table(ev: Evidence, terms: SiteTerms, lo: int, hi: int) -> dict[str, Any]:
    """The sufficient statistics of the sample's error spectrum over positions [lo, hi)
    of the window: per strand, reference base and wrong base, the reads showing it
    where it is noise (``wrong``), and per strand and reference base the bases'
    quality-expected errors (``error_micro``, integer millionths). Integers: summed
    over regions in any order they give the whole genome's figures exactly."""
    a, b = max(lo, ev.lo) - ev.lo, min(hi, ev.hi) - ev.lo
    codes, noise = terms.codes, terms.noise
    wrong = np.zeros((2, 4, 4), dtype=np.int64)
    err = np.zeros((2, 4), dtype=np.int64)
    disp = np.zeros((3, 2, 4), dtype=object)  # Σ w², Σ w·E_milli, Σ E_milli² per strand and reference base
    micro = np.rint(ev.errors[a:b] * _MICRO).astype(np.int64)
    milli = np.rint(ev.errors[a:b] * 1e3).astype(np.int64)
    w = noise[a:b].sum(axis=2)  # (n, 2): the site's wrong bases that are noise
    for r in range(4):
        at = codes[a:b] == r
        wrong[:, r, :] = noise[a:b][at].sum(axis=0)
        err[:, r] = micro[at].sum(axis=0)
        for s_ in range(2):
            ww, ee = w[at, s_].astype(object), milli[at, s_].astype(object)
            disp[:, s_, r] = (ww * ww).sum(), (ww * ee).sum(), (ee * ee).sum()
    return {"wrong": wrong.tolist(), "error_micro": err.tolist(),
            "dispersion": [[[int(v) for v in row] for row in m] for m in disp]}


def add_noise_tables(tables: list[dict[str, Any]]) -> dict[str, Any]:
    """The noise table of several disjoint sets of positions (Python integers: exact)."""
    def add(key: str, shape: tuple[int, ...]) -> Any:
        total = np.zeros(shape, dtype=object)
        for t in tables:
            total = total + np.array(t[key], dtype=object).reshape(shape)
        return [[[int(v) for v in row] for row in m] for m in total] if len(shape) == 3 else [
            [int(v) for v in row] for row in total]
    return {"wrong": add("wrong", (2, 4, 4)), "error_micro": add("error_micro", (2, 4)),
            "dispersion": add("dispersion", (3, 2, 4))}


def site_noise_cv(table: dict[str, Any], rho: np.ndarray) -> float | None:
    """The sites' spread (CV of the noise factor) the sample shows: per site and strand,
    the wrong bases that are noise, w, are Poisson of f·μ (μ = the spectrum's errors
    there), f of mean 1 and variance v, so E[(w - μ)² - w] = v·μ²: v is the ratio of
    the sums over the sample (method of moments). None when the sample is too small."""
    wrong = np.array(table["wrong"], dtype=object).sum(axis=2)  # (2, 4): Σ w
    w2, we, e2 = (np.array(m, dtype=object) for m in table["dispersion"])
    tot = rho.sum(axis=2)  # (2, 4): the spectrum's errors per unit of expected error, all wrong bases
    num = den = 0.0
    for s_ in range(2):
        for r in range(4):
            t = float(tot[s_, r])
            num += float(w2[s_, r]) - 2 * t * float(we[s_, r]) / 1e3 + t * t * float(e2[s_, r]) / 1e6 - float(
                wrong[s_, r])
            den += t * t * float(e2[s_, r]) / 1e6
    if den < 100.0:  # fewer than ~100 expected errors' worth of sites: keep the conservative spread
        return None
    return math.sqrt(max(num, 0.0) / den)


def spectrum(table: dict[str, Any]) -> np.ndarray:
    """(2, 4, 4): each ALT's errors per unit of quality-expected error, by strand and
    reference base, from the sample's noise table."""
    wrong = np.array(table["wrong"], dtype=np.float64)
    err = np.array(table["error_micro"], dtype=np.float64) / _MICRO
    rho = (wrong + _SPECTRUM_PRIOR * _ALT_SHARE) / (err[:, :, None] + _SPECTRUM_PRIOR)
    rho = np.clip(rho, *_RHO_RANGE)
    rho[:, np.arange(4), np.arange(4)] = 0.0
    return rho


def _snv_alleles(ev: Evidence, ref: str, params: LowfreqParams, terms: SiteTerms) -> Alleles:
    """SNV candidates and their null under the conservative spectrum (every ALT half of
    the errors). Expected errors of an ALT on a strand: its share of the bases' error
    probabilities times the site's own noise factor ``f`` (some sites are several times
    noisier than others, from their sequence context), plus the floor,
    ``baseline_error`` per read. ``f`` is gamma-distributed a priori (mean 1, shape
    ``1/site_noise**2``, conservatively 1 while the sample's spread is not known) and
    learnt at the site from the two other wrong bases on the same strand, which the same
    noise makes; that term is then negative binomial. Nothing but the site's own reads
    enters, so any window gives the same answer (:func:`finalize` scores them again
    under the sample's spectrum)."""
    depth = ev.counts.sum(axis=2)  # (L, 2)
    k = ev.counts.sum(axis=1)  # (L, 4)
    _, is_alt, mu_a, mu_o, floor, m_other, _ = terms
    shape, lam, shape_all, lam_all = _posterior(mu_a, mu_o, m_other, _alpha(params.site_noise))
    # The exact test only where the ALT could pass: at least two reads, more than expected.
    x, b = np.nonzero(is_alt & (k >= 2) & (k > lam_all + floor.sum(axis=1)[:, None]))
    return Alleles(
        pos=x + ev.lo,
        ref=[ref[i] for i in x],
        alt=[_BASES[i] for i in b],
        depth=depth[x],
        alt_count=ev.counts[x, :, b],
        lam=lam[x, :, b],
        shape=shape[x, :, b],
        floor=floor[x],
        lam_all=lam_all[x, b],
        shape_all=shape_all[x, b],
        errors=ev.errors[x],
        m_other=m_other[x, :, b],
    )


def _normalise(ref: str, lo: int, anchor: int, length: int, inserted: str) -> tuple[int, int, str]:
    """Leftmost and rightmost equivalent anchors of an indel, and its leftmost inserted bases."""
    a = anchor - lo
    if length > 0:  # deletion of ref[a+1 : a+1+length]
        if a + length >= len(ref):  # runs off the window: left as it is (and never used)
            return anchor, anchor, ""
        la = a
        while la > 0 and ref[la] == ref[la + length]:
            la -= 1
        ra = a
        while ra + 1 + length < len(ref) and ref[ra + 1] == ref[ra + 1 + length]:
            ra += 1
        return la + lo, ra + lo, ""
    s = inserted
    la = a
    while la > 0 and ref[la] == s[-1]:
        s = s[-1] + s[:-1]
        la -= 1
    left = s
    ra = a
    t = inserted
    while ra + 1 < len(ref) and ref[ra + 1] == t[0]:
        t = t[1:] + t[0]
        ra += 1
    return la + lo, ra + lo, left


def _rotate(seq: str, n: int) -> str:
    n %= len(seq)
    return seq[n:] + seq[:n]


def _indel_alleles(ev: Evidence, ref: str, params: LowfreqParams) -> Alleles:
    e = ev.indels
    empty = Alleles(np.zeros(0, np.int64), [], [], np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64),
                    np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), np.zeros(0))
    inside = (e.anchor >= ev.lo) & (e.anchor < ev.hi)
    if not inside.any():
        return empty
    raw = np.stack([e.anchor[inside], e.length[inside], e.inserted[inside], e.lowq[inside]], axis=1)
    keys, inverse, key_events = np.unique(raw, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    # Normalise each distinct raw event once (a few per true indel; errors are spread thin).
    cand: dict[tuple[int, int, str], int] = {}
    cand_of_key = np.full(len(keys), -1, dtype=np.int64)
    first, last, events = [], [], []
    for i, (anchor, length, ins, lowq) in enumerate(keys.tolist()):
        if lowq:
            continue
        la, ra, seq = _normalise(ref, ev.lo, anchor, length, unpack_bases(ins) if length < 0 else "")
        ck = (la, length, seq)
        if ck not in cand:
            cand[ck] = len(cand)
            first.append(la - params.indel_flank + 1)
            last.append(ra + max(length, 0) + params.indel_flank)
            events.append(0)
        cand_of_key[i] = cand[ck]
        events[cand[ck]] += int(key_events[i])
    if not cand:
        return empty
    # An insertion with bases of low quality (or N) counts for the best-supported
    # insertion it matches at its good bases, placed where the read has it.
    by_length: dict[int, list[tuple[int, int, str, int]]] = {}
    for (la, length, seq), c in cand.items():
        if length < 0:
            by_length.setdefault(length, []).append((la, last[c] - params.indel_flank, seq, c))
    for i in np.flatnonzero(keys[:, 3]).tolist():
        anchor, length, ins, lowq = keys[i].tolist()
        read_seq = unpack_bases(ins)
        best = -1
        for la, ra, seq, c in by_length.get(length, []):
            if la <= anchor <= ra:
                placed = _rotate(seq, anchor - la)
                if all(lowq >> j & 1 or placed[j] == read_seq[j] for j in range(-length)):
                    if best < 0 or events[c] > events[best]:
                        best = c
        cand_of_key[i] = best
    lo_w, hi_w = np.array(first), np.array(last)
    usable = (lo_w >= ev.lo) & (hi_w < ev.hi) & (hi_w - lo_w + 1 < params.min_aligned)
    # A read counts for an indel if it spans the indel's whole window, as the depth does.
    ev_cand = cand_of_key[inverse]
    known = ev_cand >= 0
    rs, re_, strand = e.read_start[inside][known], e.read_end[inside][known], e.strand[inside][known]
    ev_cand = ev_cand[known]
    # A read showing a deletion reaches that many bases further along the reference at
    # its 3' end than the same read without it (fewer for an insertion). Where reads end
    # at one place (amplicons), only the indel's reads would then span a window near
    # their ends; each is judged by the span it would have without the indel.
    shift = e.length[inside][known]
    rs = np.where(strand == 1, rs + shift, rs)
    re_ = np.where(strand == 0, re_ - shift, re_)
    spans = (rs <= lo_w[ev_cand]) & (re_ > hi_w[ev_cand]) & usable[ev_cand]
    spans &= lo_w[ev_cand] <= e.last_start[inside][known]  # a cut left mate: windows before its mate only
    alt_count = np.bincount(ev_cand[spans] * 2 + strand[spans], minlength=2 * len(cand)).reshape(-1, 2)
    idx = np.flatnonzero(usable & (alt_count.sum(axis=1) >= 2))
    if not len(idx):
        return empty
    depth = ev.indel_depth(lo_w[idx], hi_w[idx], params.min_aligned)
    items = list(cand)
    pos, refs, alts, rep = [], [], [], []
    for i in idx.tolist():
        la, length, seq = items[i]
        a = la - ev.lo
        if length > 0:
            refs.append(ref[a : a + length + 1])
            alts.append(ref[a])
        else:
            refs.append(ref[a])
            alts.append(ref[a] + seq)
        pos.append(la)
        # Slippage: likelier the longer the repeat, ten times less likely per base beyond one.
        rep.append((1 + (hi_w[i] - lo_w[i] + 1) - 2 * params.indel_flank - max(length, 0)) / 10.0 ** (abs(length) - 1))
    mu = depth * params.indel_error * np.array(rep, dtype=np.float64)[:, None]  # slippage at an average site
    floor = depth * params.baseline_error
    # The site's own slippage: a repeat that slips one way in the reads slips the other
    # way too (a sequencing or polymerase error makes both a shorter and a longer copy),
    # while a real deletion leaves the insertion of the same bases at background. Each
    # indel's site factor is learnt from its mirror, as an SNV's from the other bases.
    alpha = _alpha(params.site_noise)
    if np.isfinite(alpha):
        where = {key: i for i, key in enumerate(items)}
        mirror = np.zeros((len(idx), 2), dtype=np.int64)
        for j, i in enumerate(idx.tolist()):
            la, length, seq = items[i]
            a = la - ev.lo
            if length > 0:
                m = where.get((la, -length, ref[a + 1 : a + 1 + length]), -1)
            else:
                m = where.get((la, -length, ""), -1) if ref[a + 1 : a + 1 - length] == seq else -1
            if m >= 0 and usable[m]:
                mirror[j] = alt_count[m]
        shape = alpha + mirror
        lam = mu * shape / (alpha + mu)
        shape_all = alpha + mirror.sum(axis=1)
        lam_all = mu.sum(axis=1) * shape_all / (alpha + mu.sum(axis=1))
    else:
        shape, lam = np.full(mu.shape, np.inf), mu
        shape_all, lam_all = np.full(len(idx), np.inf), mu.sum(axis=1)
    return Alleles(np.array(pos, dtype=np.int64), refs, alts, depth, alt_count[idx], lam, shape, floor, lam_all,
                   shape_all)


# --------------------------------------------------------------------------- #
# Records
# --------------------------------------------------------------------------- #
HEADER_INFO = [
    '##INFO=<ID=DP,Number=1,Type=Integer,Description="Informative reads: bases of quality >= min_baseq at POS '
    '(SNVs), reads spanning the indel and its repeat context (indels)">',
    '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency: ALT reads / DP">',
    '##INFO=<ID=ADF,Number=R,Type=Integer,Description="Forward-strand reads: informative without this ALT, '
    'with this ALT">',
    '##INFO=<ID=ADR,Number=R,Type=Integer,Description="Reverse-strand reads: informative without this ALT, '
    'with this ALT">',
    '##INFO=<ID=SBP,Number=1,Type=Integer,Description="Strand bias: phred of the two-sided binomial test of '
    'the ALT reads\' strand split against the site\'s">',
    '##INFO=<ID=QF,Number=1,Type=Integer,Description="Phred evidence for ALT on the forward strand alone">',
    '##INFO=<ID=QR,Number=1,Type=Integer,Description="Phred evidence for ALT on the reverse strand alone">',
    '##INFO=<ID=INDEL,Number=0,Type=Flag,Description="The allele is an insertion or deletion">',
]


def _quals(alleles: Alleles) -> np.ndarray:
    """Each allele's QUAL: −10·log10 of its null tail, both strands together."""
    k = alleles.alt_count.sum(axis=1)
    return -10 * null_tail_log10(k, alleles.shape_all, alleles.lam_all, alleles.floor.sum(axis=1))


def _records(alleles: Alleles, chrom: str, params: LowfreqParams, min_qual: float,
             candidates: bool = False) -> list[tuple[int, int, str, str, str]]:
    """Records of the alleles reaching ``min_qual``; SNVs with their site terms (INFO
    ``SE``, ``SM``) when ``candidates``."""
    if not len(alleles):
        return []
    k = alleles.alt_count.sum(axis=1)
    dp = alleles.depth.sum(axis=1)
    qual = _quals(alleles)
    keep = np.flatnonzero((qual >= min_qual) & (dp > 0))
    keep = keep[k[keep] / dp[keep] >= params.min_af] if params.min_af > 0 else keep
    if not len(keep):
        return []
    ac, dep = alleles.alt_count[keep], alleles.depth[keep]
    null = (alleles.shape[keep], alleles.lam[keep], alleles.floor[keep])
    q_strand = -10 * null_tail_log10(ac, *null)
    sb = strand_bias_phred(ac[:, 0], ac.sum(axis=1), dep[:, 0] / np.maximum(dep.sum(axis=1), 1))
    # A strand must show the allele on its own only where it could: where an allele at
    # the observed AF would be expected to reach twice min_strand_qual on that strand's
    # depth. (Amplicon reads put nearly all of a site's reads on one strand near an
    # amplicon's ends; there the split test, SBP, is what judges strand.)
    af = (k[keep] / dp[keep])[:, None]
    q_expected = -10 * null_tail_log10(np.floor(af * dep), *null)
    weak_strand = np.any((q_strand < params.min_strand_qual) & (q_expected >= 2 * params.min_strand_qual), axis=1)
    out = []
    for j, i in enumerate(keep):
        filters = []
        if sb[j] > params.max_strand_bias or bool(weak_strand[j]):
            filters.append("strand_bias")
        if dp[i] < params.min_depth:
            filters.append("low_depth")
        ref, alt = alleles.ref[i], alleles.alt[i]
        indel = len(ref) != len(alt)
        info = (
            f"DP={dp[i]};AF={k[i] / dp[i]:.6f};ADF={dep[j, 0] - ac[j, 0]},{ac[j, 0]};"
            f"ADR={dep[j, 1] - ac[j, 1]},{ac[j, 1]};SBP={round(sb[j])};"
            f"QF={round(q_strand[j, 0])};QR={round(q_strand[j, 1])}" + (";INDEL" if indel else "")
        )
        if candidates and alleles.errors is not None and alleles.m_other is not None:
            e, m = alleles.errors[i], alleles.m_other[i]
            info += f";SE={float(e[0])!r},{float(e[1])!r};SM={int(m[0])},{int(m[1])}"
        line = "\t".join([
            chrom, str(alleles.pos[i] + 1), ".", ref, alt, f"{qual[i]:.1f}",
            ";".join(filters) or "PASS", info,
        ])
        out.append((int(alleles.pos[i]), int(indel), ref, alt, line + "\n"))
    return out


def call_evidence(ev: Evidence, ref: str, params: LowfreqParams, candidates: bool = False,
                  terms: SiteTerms | None = None) -> list[str]:
    """VCF data lines for the window of ``ev``; ``ref`` holds its bases from ``ev.lo`` on.
    ``candidates``: candidates for :func:`finalize`, kept from ``CANDIDATE_QUAL``: SNVs
    scored under the conservative spectrum, with their site terms; indels as they will
    be reported (the merge applies the sample's QUAL threshold to them).
    ``terms``: the window's :func:`site_terms`, if already computed."""
    terms = site_terms(ev, ref, params) if terms is None else terms
    least = CANDIDATE_QUAL if candidates else params.min_qual
    recs = _records(_snv_alleles(ev, ref, params, terms), ev.chrom, params, least, candidates)
    recs += _records(_indel_alleles(ev, ref, params), ev.chrom, params, least)
    return [r[-1] for r in sorted(recs)]


def _info(field: str, key: str) -> str:
    for item in field.split(";"):
        if item.startswith(key + "="):
            return item[len(key) + 1 :]
    raise ValueError(f"no INFO/{key} in {field!r}")


class SampleModel(NamedTuple):
    """The sample's error model, made once from the whole sample's noise table."""

    rho: np.ndarray  # error spectrum (:func:`spectrum`)
    alpha: float  # shape of the sites' noise factors
    min_qual: float | None = None  # the sample's QUAL threshold (:func:`with_budget`); None: params.min_qual
    band: int | None = None  # the tests it was set from (:func:`null_band`)


def sample_model(table: dict[str, Any], params: LowfreqParams) -> SampleModel:
    """The error spectrum and site-noise shape of a sample, from its whole noise table."""
    rho = spectrum(table)
    if params.site_noise is not None:
        return SampleModel(rho, _alpha(params.site_noise))
    cv = site_noise_cv(table, rho)
    return SampleModel(rho, _alpha(None) if cv is None else float(np.clip(1.0 / max(cv, 1e-6) ** 2, *_ALPHA_RANGE)))


def _rescored(lines: list[str], model: SampleModel, params: LowfreqParams) -> tuple[list[int], list[list[str]],
                                                                                  Alleles | None]:
    """The SNV candidates among ``lines`` (their indices and fields) and their alleles
    under the sample's error model."""
    snv = [i for i, ln in enumerate(lines) if ";SE=" in ln]
    if not snv:
        return snv, [], None
    rho, alpha = model.rho, model.alpha
    fields = [lines[i].rstrip("\n").split("\t") for i in snv]
    n = len(fields)
    depth = np.zeros((n, 2), dtype=np.int64)
    alt_count = np.zeros((n, 2), dtype=np.int64)
    errors = np.zeros((n, 2))
    m_other = np.zeros((n, 2), dtype=np.int64)
    r_code = np.zeros(n, dtype=np.int64)
    a_code = np.zeros(n, dtype=np.int64)
    for j, f in enumerate(fields):
        info = f[7]
        adf = [int(v) for v in _info(info, "ADF").split(",")]
        adr = [int(v) for v in _info(info, "ADR").split(",")]
        alt_count[j] = adf[1], adr[1]
        depth[j] = adf[0] + adf[1], adr[0] + adr[1]
        errors[j] = [float(v) for v in _info(info, "SE").split(",")]
        m_other[j] = [int(v) for v in _info(info, "SM").split(",")]
        r_code[j], a_code[j] = _BASES.index(f[3]), _BASES.index(f[4])
    share = rho[:, r_code, a_code].T  # (n, 2)
    other = rho[:, r_code, :].sum(axis=2).T - share
    mu_a, mu_o = share * errors, other * errors
    shape, lam, shape_all, lam_all = _posterior(mu_a, mu_o, m_other, alpha)
    alleles = Alleles(np.array([int(f[1]) - 1 for f in fields]), [f[3] for f in fields], [f[4] for f in fields],
                      depth, alt_count, lam, shape, params.baseline_error * depth, lam_all, shape_all)
    return snv, fields, alleles


# With ``fp_budget``, the sample's null is measured on its tests that score QUAL in this
# band: nearly all of them are errors (a true allele scores far above it unless it is at
# the limit of detection), and each candidate's QUAL there no longer depends on the
# CANDIDATE_QUAL cut made under the conservative spectrum (measured: 52 such tests
# without the cut, 49 with it, on a 30 kb genome at 10,000x).
NULL_BAND = (20.0, 30.0)
# ... and the threshold it sets is never below the band's top.
BUDGET_FLOOR = NULL_BAND[1]


def _line_qual(line: str) -> float:
    """A record line's QUAL (an indel's, which the merge does not score again)."""
    return float(line.split("\t", 6)[5])


def null_band(lines: list[str], model: SampleModel, params: LowfreqParams) -> int:
    """How many candidate ``lines`` (SNVs scored under the sample's model, indels as
    they are) score QUAL within :data:`NULL_BAND`. A count per line: the counts of any
    split of the lines add up to the whole's."""
    snv, _, alleles = _rescored(lines, model, params)
    quals = [float(v) for v in _quals(alleles)] if alleles is not None else []
    skip = set(snv)
    quals += [_line_qual(ln) for i, ln in enumerate(lines) if i not in skip]
    lo, hi = NULL_BAND
    return sum(1 for q in quals if lo <= q < hi)


def budget_qual(band: int, params: LowfreqParams) -> float:
    """The QUAL threshold that keeps the expected number of false reports within
    ``params.fp_budget``, from the sample's own null: its ``band`` tests scoring QUAL
    within :data:`NULL_BAND` (taken at a one-sided ~97.5 % Poisson upper bound) give the
    number of tests whose QUAL, were the model's p-values exact, would fall there; the
    threshold is where that many tests expect ``fp_budget`` false reports. Within
    [:data:`BUDGET_FLOOR`, ``params.min_qual``]."""
    if params.fp_budget is None:
        return params.min_qual
    lo, hi = NULL_BAND
    upper = band + 1 + 2 * math.sqrt(band + 1)
    tests = upper / (10 ** (-lo / 10) - 10 ** (-hi / 10))
    return float(min(params.min_qual, max(BUDGET_FLOOR, 10 * math.log10(tests / params.fp_budget))))


def with_budget(model: SampleModel, band: int, params: LowfreqParams) -> SampleModel:
    """``model`` with its QUAL threshold: :func:`budget_qual` of the sample's ``band``."""
    return model._replace(min_qual=budget_qual(band, params), band=band)


def threshold_line(model: SampleModel, params: LowfreqParams) -> str:
    """The VCF header line saying what QUAL threshold the sample got, and why ("" when
    it is ``min_qual``, set in the command line)."""
    if model.min_qual is None:
        return ""
    lo, hi = NULL_BAND
    return (f"##lowfreqThreshold=QUAL>={model.min_qual:.1f} (fp_budget {params.fp_budget:g}: {model.band} of the "
            f"sample's tests scored QUAL {lo:g}-{hi:g}; within {BUDGET_FLOOR:g}-{params.min_qual:g})\n")


def finalize(lines: list[str], model: SampleModel, params: LowfreqParams) -> list[str]:
    """The reported records from candidate lines (:func:`call_evidence` with
    ``candidates``, in VCF order): each SNV scored again with the sample's error model
    (:func:`sample_model` of the whole sample's noise table), indels as they are, each
    kept if it reaches the sample's threshold (``model.min_qual``, else
    ``params.min_qual``). The order is kept, and each line is scored on its own, so any
    split of the lines (one fragment at a time) gives the same records."""
    least = params.min_qual if model.min_qual is None else model.min_qual
    snv, fields, alleles = _rescored(lines, model, params)
    out: dict[int, str] = {}
    if alleles is not None:
        by_chrom: dict[str, list[int]] = {}
        for j, f in enumerate(fields):
            by_chrom.setdefault(f[0], []).append(j)
        for chrom, js in by_chrom.items():
            sub = Alleles(alleles.pos[js], [alleles.ref[j] for j in js], [alleles.alt[j] for j in js],
                          alleles.depth[js], alleles.alt_count[js], alleles.lam[js], alleles.shape[js],
                          alleles.floor[js], alleles.lam_all[js], alleles.shape_all[js])
            recs = _records(sub, chrom, params, least)
            # _records keeps its input order; map each kept record back by position and allele
            where = {(int(alleles.pos[j]), alleles.ref[j], alleles.alt[j]): j for j in js}
            for pos, _, ref, alt, line in recs:
                out[snv[where[(pos, ref, alt)]]] = line
    snv_set = set(snv)
    kept = []
    for i, ln in enumerate(lines):
        if i in snv_set:
            if i in out:
                kept.append(out[i])
        elif _line_qual(ln) >= least:
            kept.append(ln)
    return kept


def vcf_header(bam: pysam.AlignmentFile, params: LowfreqParams) -> str:
    lines = [
        "##fileformat=VCFv4.2",
        f"##source=serverless-variant-calling {__version__} lowfreq",
        f"##lowfreqCommand={params.describe()}",
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##FILTER=<ID=strand_bias,Description="ALT not significant on each strand alone (QF/QR < '
        f'{params.min_strand_qual:g}) or strand split unlike the site\'s (SBP > {params.max_strand_bias:g})">',
        f'##FILTER=<ID=low_depth,Description="DP < {params.min_depth}">',
        *[f"##contig=<ID={name},length={length}>" for name, length in zip(bam.references, bam.lengths,
                                                                         strict=True)],
        *HEADER_INFO,
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    return "\n".join(lines) + "\n"


def run_lowfreq(
    bam: str,
    reference: str,
    params: LowfreqParams,
    out_vcf: str,
    region: Span | None = None,
    workdir: str | None = None,
    primers: PrimerScheme | None = None,
    on_evidence: Callable[[Evidence], None] | None = None,
    owned: Span | None = None,
    on_noise: Callable[[dict[str, Any]], None] | None = None,
) -> str:
    """Call ``bam`` (optionally one ``region``; with ``primers``, not counting the bases
    of the primer each read starts in); uncompressed VCF at out_vcf. ``on_evidence`` is
    given each window's evidence (for the depth track and the trim counts).

    Without ``on_noise`` the records are final: the SNVs scored under the error
    spectrum of everything this call read. With it (a function calling one region of a
    sample), the SNVs are candidates (:func:`call_evidence`) and ``on_noise`` is given
    the noise table of the positions in ``owned`` (the region the function owns), for
    the merge to score them under the whole sample's spectrum (:func:`finalize`)."""
    del workdir  # nothing to spill: the evidence is held in memory, window by window
    with pysam.AlignmentFile(bam, "rb") as fh:
        header = vcf_header(fh, params)
        contigs = dict(zip(fh.references, fh.lengths, strict=True))
    if region:
        windows = [(region.chrom, region.start, region.end)]
    else:
        windows = [(c, 0, n) for c, n in contigs.items()]
    lines: list[str] = []
    tables: list[dict[str, Any]] = []
    with pysam.FastaFile(reference) as fasta:
        for chrom, lo, hi in windows:
            ev = collect_evidence(bam, chrom, lo, hi, params.min_mapq, params.min_baseq, params.min_aligned,
                                  params.end_skip, mates_once=params.mates_once, primers=primers,
                                  anchor_bases=params.indel_flank)
            ref = fasta.fetch(chrom, lo, hi).upper()
            terms = site_terms(ev, ref, params)
            lines += call_evidence(ev, ref, params, candidates=True, terms=terms)
            if owned is None:
                tables.append(noise_table(ev, terms, lo, hi))
            elif owned.chrom == chrom:
                tables.append(noise_table(ev, terms, owned.start, owned.end))
            if on_evidence is not None:
                on_evidence(ev)
    table = add_noise_tables(tables)
    if on_noise is not None:
        on_noise(table)
    else:
        model = sample_model(table, params)
        if params.fp_budget is not None:
            model = with_budget(model, null_band(lines, model, params), params)
            header = header.replace("#CHROM", threshold_line(model, params) + "#CHROM")
        lines = finalize(lines, model, params)
    tmp = out_vcf + ".part"
    with open(tmp, "w") as out:
        out.write(header)
        out.writelines(lines)
    os.replace(tmp, out_vcf)
    return out_vcf
