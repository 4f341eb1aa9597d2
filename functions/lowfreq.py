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
  by a sequencing error (probability ε_i/3 from its base quality) or by an error
  the qualities do not capture, at ``baseline_error`` per read (PCR errors, and
  everything else that is not in the sequencer's qualities). The count of reads
  showing ``a`` is then Poisson-binomial; its Poisson bound with mean
  λ = Σε_i/3 + n·baseline_error is conservative (never smaller p-values), and
  QUAL = −10·log10 P(X ≥ k). For indels λ = n·(baseline_error + indel_error·(1 +
  repeat length) / 10^(length − 1)).
* A true allele is on both strands, in the proportion of the site's reads: the
  allele must be significant on each strand alone (``min_strand_qual``) and its
  strand split must not differ from the site's (two-sided binomial test, ``SBP``,
  ``max_strand_bias``), or the record is FILTERed ``strand_bias``.

Everything is computed per position from that position's evidence alone, so any
window holding a position gives the same record for it: a region's records equal
a whole-genome run's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

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

    min_mapq: int = 20
    min_baseq: int = 20
    min_aligned: int = 50
    end_skip: int = 5
    baseline_error: float = 0.002
    indel_error: float = 0.0001
    indel_flank: int = 10
    min_qual: float = 60.0
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


def chernoff_log10(k: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """An upper bound of log10 P(X >= k), X ~ Poisson(lam): cheap, for pre-filtering."""
    k = k.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(k > lam, (k - lam - k * np.log(np.maximum(k, 1e-300) / lam)) / _LN10, 0.0)
    return np.minimum(b, 0.0)


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
    lam: np.ndarray  # (n, 2): expected error reads per strand under the null

    def __len__(self) -> int:
        return len(self.pos)


_BASES = "ACGT"
_CODE = np.full(256, 4, dtype=np.int64)
for _i, _c in enumerate(_BASES):
    _CODE[ord(_c)] = _CODE[ord(_c.lower())] = _i


def _snv_alleles(ev: Evidence, ref: str, params: LowfreqParams) -> Alleles:
    codes = _CODE[np.frombuffer(ref[: ev.hi - ev.lo].encode(), dtype=np.uint8)]
    depth = ev.counts.sum(axis=2)  # (L, 2)
    lam = ev.errors / 3.0 + params.baseline_error * depth  # (L, 2)
    k = ev.counts.sum(axis=1)  # (L, 4)
    bound = chernoff_log10(k, lam.sum(axis=1)[:, None])
    cand = (k >= 2) & (bound <= -params.min_qual / 10.0) & (codes[:, None] < 4)
    cand &= np.arange(4)[None, :] != codes[:, None]
    x, b = np.nonzero(cand)
    return Alleles(
        pos=x + ev.lo,
        ref=[ref[i] for i in x],
        alt=[_BASES[i] for i in b],
        depth=depth[x],
        alt_count=ev.counts[x, :, b],
        lam=lam[x],
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
                    np.zeros((0, 2)))
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
    spans = (rs <= lo_w[ev_cand]) & (re_ > hi_w[ev_cand]) & usable[ev_cand]
    alt_count = np.bincount(ev_cand[spans] * 2 + strand[spans], minlength=2 * len(cand)).reshape(-1, 2)
    idx = np.flatnonzero(usable & (alt_count.sum(axis=1) >= 2))
    if not len(idx):
        return empty
    depth = ev.spanning(lo_w[idx], hi_w[idx], params.min_aligned)
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
    lam = depth * (params.baseline_error + params.indel_error * np.array(rep, dtype=np.float64)[:, None])
    return Alleles(np.array(pos, dtype=np.int64), refs, alts, depth, alt_count[idx], lam)


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


def _records(alleles: Alleles, chrom: str, params: LowfreqParams) -> list[tuple[int, int, str, str, str]]:
    if not len(alleles):
        return []
    k = alleles.alt_count.sum(axis=1)
    dp = alleles.depth.sum(axis=1)
    qual = -10 * poisson_sf_log10(k, alleles.lam.sum(axis=1))
    keep = np.flatnonzero((qual >= params.min_qual) & (dp > 0))
    keep = keep[k[keep] / dp[keep] >= params.min_af] if params.min_af > 0 else keep
    if not len(keep):
        return []
    ac, dep, lam = alleles.alt_count[keep], alleles.depth[keep], alleles.lam[keep]
    q_strand = -10 * poisson_sf_log10(ac, lam)
    sb = strand_bias_phred(ac[:, 0], ac.sum(axis=1), dep[:, 0] / np.maximum(dep.sum(axis=1), 1))
    # A strand must show the allele on its own only where it could: where an allele at
    # the observed AF would be expected to reach twice min_strand_qual on that strand's
    # depth. (Amplicon reads put nearly all of a site's reads on one strand near an
    # amplicon's ends; there the split test, SBP, is what judges strand.)
    af = (k[keep] / dp[keep])[:, None]
    q_expected = -10 * poisson_sf_log10(np.floor(af * dep), lam)
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
        line = "\t".join([
            chrom, str(alleles.pos[i] + 1), ".", ref, alt, f"{qual[i]:.1f}",
            ";".join(filters) or "PASS", info,
        ])
        out.append((int(alleles.pos[i]), int(indel), ref, alt, line + "\n"))
    return out


def call_evidence(ev: Evidence, ref: str, params: LowfreqParams) -> list[str]:
    """VCF data lines for the window of ``ev``; ``ref`` holds its bases from ``ev.lo`` on."""
    recs = _records(_snv_alleles(ev, ref, params), ev.chrom, params)
    recs += _records(_indel_alleles(ev, ref, params), ev.chrom, params)
    return [r[-1] for r in sorted(recs)]


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
) -> str:
    """Call ``bam`` (optionally one ``region``; with ``primers``, not counting the bases
    of the primer each read starts in); uncompressed VCF at out_vcf. ``on_evidence`` is
    given each window's evidence (for the depth track and the trim counts)."""
    del workdir  # nothing to spill: the evidence is held in memory, window by window
    with pysam.AlignmentFile(bam, "rb") as fh:
        header = vcf_header(fh, params)
        contigs = dict(zip(fh.references, fh.lengths, strict=True))
    if region:
        windows = [(region.chrom, region.start, region.end)]
    else:
        windows = [(c, 0, n) for c, n in contigs.items()]
    tmp = out_vcf + ".part"
    with pysam.FastaFile(reference) as fasta, open(tmp, "w") as out:
        out.write(header)
        for chrom, lo, hi in windows:
            ev = collect_evidence(bam, chrom, lo, hi, params.min_mapq, params.min_baseq, params.min_aligned,
                                  params.end_skip, mates_once=params.mates_once, primers=primers)
            ref = fasta.fetch(chrom, lo, hi).upper()
            out.writelines(call_evidence(ev, ref, params))
            if on_evidence is not None:
                on_evidence(ev)
    os.replace(tmp, out_vcf)
    return out_vcf
