#!/usr/bin/env python3
"""Seeded generator of tiled-amplicon (ARTIC-style) viral mixtures: reference, primer
scheme, reads as an amplicon library gives them, and the truth.

Contract
--------
``python test_data/amplicon.py --outdir DIR [--seed 7] [--length 30000] [--depth 10000]
[--fractions 0.05,0.02,0.01,0.005,0.002] [--alleles-per-fraction 20] [--indel-share 0.2]
[--under-primer 3] [--threads 2]`` (or :func:`generate_amplicon_mixture`) writes into ``DIR``:

* ``virus.fa`` (+ ``.fai``) -- one contig ``virus``, random sequence made like
  ``generate.py``'s references (GC ~42 %, CpG-depleted, short tandem repeats and
  8-18 bp homopolymers about one per 1.2 kb).
* ``scheme.primer.bed`` -- the primer scheme, ARTIC BED6: ``virus start end
  SIM_<n>_LEFT|RIGHT pool strand`` (0-based half-open; pools 1, 2 alternate; LEFT ``+``,
  RIGHT ``-``). Primers are 22-28 bp, placed (within a few bp of their target) where they
  hold no homopolymer >= 4 bp, no repeat tract and 30-70 % GC. Amplicons (LEFT start to
  RIGHT end) are ``amplicon_length`` long (default 250-400 bp); consecutive amplicons
  overlap by ~50-95 bp including their primers (ARTIC V3: 80-90), with 5-40 bp of
  primer-free sequence between the inner primer ends, so primers never overlap and every
  base under a primer (except under the first LEFT and the last RIGHT) is read, untrimmed,
  by the neighbouring amplicon. The first amplicon starts 12-70 bp from the contig start,
  the last ends 12-100 bp before its end.
* ``amplicons.tsv`` -- per amplicon: number, pool, start, end, insert (primer-free) start
  and end, depth multiplier and read pairs drawn (for diagnosis; a caller must not need it).
* ``mixture.bam`` (+ ``.bai``) -- coordinate-sorted, aligned with minimap2 (``mappy``,
  preset ``sr``, paired; records built by ``generate.py``), read group ``ID=SM=mixture``.
  One pair = one amplicon molecule of one haplotype; its name says which:
  ``h3:a017:00001234`` is pair 1234, haplotype ``h3``, amplicon 17. The forward read is
  the first ``read_length`` (150) bases of the molecule, the reverse read the last 150,
  reverse-complemented: amplicons < 300 bp give overlapping mates, amplicons > 300 bp
  leave their middle (up to 100 bp) unread -- together with the short amplicon overlaps
  this leaves holes no read covers (their share of the genome is in the summary). With the
  default lengths, of the counted (primer-trimmed) genome ~12 % is read on both strands,
  ~76 % on one strand only (strand-bias tests cannot work there), ~12 % not at all. As in
  ligation libraries, read 1 is the forward read in ``read1_left_share`` (0.5) of the
  pairs, the reverse read in the others. The bases of a molecule under the two primers
  that amplified it are the PRIMERS' sequence (the reference), whatever its haplotype
  carries there: a variant under a primer is hidden in that amplicon's reads and seen in
  the neighbour's.
* ``truth.vcf.gz`` (+ ``.tbi``) -- VCFv4.2, sites only, one biallelic record per true
  allele, left-aligned and parsimonious (``bcftools norm`` form). INFO: ``AF`` realised
  frequency (see :func:`realised_frequencies`: among the reads whose counted, primer-trimmed
  part covers the allele, the share showing it), ``HF`` designed fraction, ``DP`` those
  informative reads, ``HAP``, ``VT`` SNV/INS/DEL, ``UNDER_PRIMER`` (flag: the allele lies
  under a primer), ``AMP`` the amplicons whose counted reads cover it, ``MASKED`` the
  amplicons whose primers hide it.
* ``artefacts.tsv`` -- error sites that are NOT variants, ``viral.py``'s format (``chrom
  pos ref alt kind rate``, 1-based, normalised): ``strand_hotspot`` (a base after ``GG``
  miscalled in a share ``rate`` of the forward reads, one per kb), ``pcr`` (an early-cycle
  polymerase error in a share ``rate`` of ONE amplicon's molecules, both reads, one per
  1.5 kb) and ``hp_slippage`` (polymerase slippage, -1 / +1 base, in every homopolymer
  >= 7 bp; ``rate`` the per-molecule probability).

Population: ``h0`` is the reference (1 - sum of ``fractions``); haplotype ``hK`` has
fraction ``fractions[K-1]`` and carries all ``alleles_per_fraction`` alleles of that band
(a co-infecting lineage: the alleles are linked). Per band: ``round(alleles_per_fraction *
indel_share)`` 1-3 bp indels (half in homopolymers, some in short tandem repeats, the
rest anywhere), the rest SNVs (transitions 2:1); ``under_primer`` of them (one an indel
when the band has two or more) are put under a primer, and alleles placed at random land
under primers too (primers cover ~20 % of the genome). No allele lies within 50 bp of the
contig ends or where no counted read part covers it; ambiguity windows (and artefact
sites) are >= 40 bp apart; an allele never straddles a primer's edge.

Amplification (what makes the data an amplicon library): each amplicon's read pairs are
Poisson(``depth`` x multiplier), the multiplier lognormal (sd 0.45) clipped to 0.3-3x,
times a pool factor (pool 2 vs pool 1, lognormal sd 0.15), renormalised to mean 1; then
``dropouts`` amplicons (default one per 60) fall to 1-5 %. ``depth`` is thus the mean
number of pairs per amplicon, i.e. of reads over a base read by one mate of each pair.
Within an amplicon, haplotypes are drawn with their fraction times a PCR jitter
(lognormal, sd ``pcr_jitter`` 0.1) times a primer-mismatch efficiency: a haplotype with
an allele under one of the amplicon's primers amplifies at 0.7 (0.3 when within 5 bp of
the primer's 3' end), so its other alleles in that amplicon are depleted -- the truth's
AF says by how much.

Errors: per molecule, polymerase substitutions (2e-5 per base; in both mates),
homopolymer slippage (above) and the ``pcr`` sites; per read, binned Illumina qualities
decaying along the read (Q2/12/23/37, ``generate.py``'s profile, read 2 worse),
substitutions drawn from them with an Illumina-like non-uniform substitution matrix,
quality-blind substitutions (1e-4 per base, any quality), both scaled at each reference
position and strand by a sequence-context factor (lognormal, sd 0.5, mean 1: some sites
are several times noisier than others, on one strand), 1-base indel errors (1e-5 per
base, up to 5e-3 per read over a long homopolymer), the ``strand_hotspot`` sites, a
quarter of the Q2 bases reported as N, 0.1 % chimeric pairs (read 1 continues in another
amplicon) and 0.1 % junk pairs (random sequence). No duplicates are marked: in amplicon
data every pair of an amplicon starts at the same place.

The output is a pure function of the parameters (``outdir`` and ``threads`` excepted)
and of the installed numpy, pysam and mappy: same seed, same bytes. Time on 2 cores
(shared with other jobs): 6 kb at 1000x ~5 s; 30 kb at 2000x ~20 s (16 MB BAM); 30 kb at
10,000x ~110 s (1.17 M pairs, 81 MB BAM; ~85 s simulating and aligning, ~20 s merging). Needs
``test_data/generate.py`` and ``test_data/viral.py`` next to this file, numpy, pysam and
``mappy``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pysam

CONTIG = "virus"
SAMPLE = "mixture"
SCHEME = "SIM"
DEFAULT_FRACTIONS: tuple[float, ...] = (0.05, 0.02, 0.01, 0.005, 0.002)
END_MARGIN = 50  # no allele closer than this to a contig end
MIN_GAP = 40  # bp between the ambiguity windows of any two alleles / artefact sites
INDEL_FLANK = 5  # an indel's informative reads cover its window plus this on each side
BATCH_PAIRS = 10_000  # read pairs per simulation/alignment batch (and per seed)
READ_LENGTH = 150
PRIMER_LENGTH = (22, 28)
OVERLAP_GAP = (5, 35)  # primer-free bases shared by consecutive amplicons
HOTSPOT_SPACING = 1000.0
PCR_SPACING = 1500.0
HOTSPOT, PCR, SLIPPAGE = "strand_hotspot", "pcr", "hp_slippage"
SLIPPAGE_MIN_RUN = 7  # homopolymers listed in artefacts.tsv
_SKIP = 0x4 | 0x100 | 0x800  # unmapped, secondary, supplementary: not informative
# Per-read error model
SEQ_INDEL_RATE = 1e-5  # per base
BLIND_ERROR_RATE = 1e-4  # substitutions at any quality
SITE_ERROR_SD = 0.5  # log-sd of the per-position, per-strand error-rate factor
PCR_SUB_RATE = 2e-5  # per molecule base
CHIMERA_FRACTION = 0.001
JUNK_FRACTION = 0.001
# substitution matrix in read orientation: P(called base | true base), diagonal 0
_SUBST = np.array([
    [0.00, 0.45, 0.30, 0.25],
    [0.40, 0.00, 0.20, 0.40],
    [0.30, 0.20, 0.00, 0.50],
    [0.25, 0.30, 0.45, 0.00],
])
_SUBST_CUM = np.cumsum(_SUBST, axis=1)


def _load(name: str) -> ModuleType:
    """``test_data/<name>.py``, imported once and registered under ``name``."""
    here = Path(__file__).resolve().parent / f"{name}.py"
    mod = sys.modules.get(name)
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve() == here:
        return mod
    spec = importlib.util.spec_from_file_location(name, here)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {here}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


gen = _load("generate")
viral = _load("viral")
MixtureVariant = viral.MixtureVariant
Artefact = viral.Artefact


# --------------------------------------------------------------------------- #
# Data classes
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Amplicon:
    """One amplicon: 0-based half-open primer intervals on the reference."""

    number: int  # 1-based, as in the primer names
    left: tuple[int, int]
    right: tuple[int, int]

    @property
    def pool(self) -> int:
        return 1 if self.number % 2 else 2

    @property
    def start(self) -> int:
        return self.left[0]

    @property
    def end(self) -> int:
        return self.right[1]

    @property
    def insert(self) -> tuple[int, int]:
        """The primer-free part [end of LEFT, start of RIGHT)."""
        return self.left[1], self.right[0]

    def read_parts(self, read_length: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The counted (primer-trimmed) reference spans of its forward and reverse reads."""
        return (self.left[1], self.start + read_length), (self.end - read_length, self.right[0])

    def masks(self, window: tuple[int, int]) -> bool:
        """Whether a primer of this amplicon covers part of ``window``."""
        return any(window[0] < hi and window[1] > lo for lo, hi in (self.left, self.right))


@dataclass
class AmpliconSummary:
    """What :func:`generate_amplicon_mixture` wrote and how long it took."""

    outdir: Path
    reference: Path
    scheme_bed: Path
    bam: Path
    truth_vcf: Path
    artefacts_tsv: Path
    amplicons_tsv: Path
    genome_length: int
    depth: float
    n_amplicons: int
    read_pairs: int
    fractions: dict[str, float]
    variant_counts: dict[str, int]
    under_primer: int
    artefact_counts: dict[str, int]
    unread_fraction: float  # share of the genome no counted read part covers
    flagstat: str
    seconds: float


@dataclass(frozen=True)
class _Molecules:
    """The amplicon molecules of every (amplicon, haplotype): index ``a * n_haps + h``."""

    seq: np.ndarray  # (n_mol, max_len) base codes, padded with 4
    length: np.ndarray  # (n_mol,)
    n_haps: int
    slip_mol: np.ndarray  # homopolymer tracts >= 6 bp: molecule, start, run length, probability
    slip_start: np.ndarray
    slip_len: np.ndarray
    slip_p: np.ndarray
    slip_total: np.ndarray  # (n_mol,) sum of slip_p


# --------------------------------------------------------------------------- #
# Scheme
# --------------------------------------------------------------------------- #
def _longest_run(s: str) -> int:
    best = run = 1
    for a, b in zip(s, s[1:], strict=False):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best


def _good_primer(ref: str, lo: int, hi: int, repeat_mask: np.ndarray) -> bool:
    s = ref[lo:hi]
    gc = (s.count("G") + s.count("C")) / len(s)
    return 0.3 <= gc <= 0.7 and _longest_run(s) < 4 and not repeat_mask[lo:hi].any()


def _place_primer(rng: np.random.Generator, ref: str, anchor: int, side: str, repeat_mask: np.ndarray,
                  lo_bound: int, hi_bound: int) -> tuple[int, int]:
    """A primer whose outer end lies at ``anchor`` +- a few bp (LEFT: its start; RIGHT: its
    end), staying inside [lo_bound, hi_bound); the best-looking of the near candidates."""
    length = int(rng.integers(PRIMER_LENGTH[0], PRIMER_LENGTH[1] + 1))
    for shift in (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 8, -8):
        outer = anchor + shift
        lo, hi = (outer, outer + length) if side == "LEFT" else (outer - length, outer)
        if lo >= lo_bound and hi <= hi_bound and _good_primer(ref, lo, hi, repeat_mask):
            return lo, hi
    lo = min(max(anchor, lo_bound), hi_bound - length) if side == "LEFT" else max(anchor - length, lo_bound)
    return lo, lo + length


def design_scheme(rng: np.random.Generator, ref: str, repeats: list[tuple[int, int, str]],
                  amplicon_length: tuple[int, int] = (250, 400)) -> list[Amplicon]:
    """Tile ``ref`` with amplicons (see the module's contract)."""
    lo_len, hi_len = amplicon_length
    if lo_len < READ_LENGTH + 20 or hi_len < lo_len:
        raise ValueError(f"amplicon lengths {amplicon_length}: need {READ_LENGTH + 20} <= min <= max")
    n = len(ref)
    if n < hi_len + 200:
        raise ValueError(f"a {n} bp genome is too short for {hi_len} bp amplicons")
    repeat_mask = np.zeros(n, dtype=bool)
    for s, e, _ in repeats:
        repeat_mask[s:e] = True
    target_end = n - int(rng.integers(20, 51))
    left = _place_primer(rng, ref, int(rng.integers(20, 61)), "LEFT", repeat_mask, 0, n)
    amplicons: list[Amplicon] = []
    while True:
        start = left[0]
        remaining = target_end - start
        gap = int(rng.integers(OVERLAP_GAP[0], OVERLAP_GAP[1] + 1))
        overlap_guess = gap + 2 * (PRIMER_LENGTH[0] + PRIMER_LENGTH[1]) // 2
        if remaining <= hi_len:
            length = max(remaining, lo_len)
            last = True
        else:
            top = min(hi_len, remaining + overlap_guess - lo_len - 10)
            last = top < lo_len
            length = hi_len if last else int(rng.integers(lo_len, top + 1))
        end_bound = min(n, start + hi_len)
        right = _place_primer(rng, ref, start + length, "RIGHT", repeat_mask, left[1] + 100, end_bound)
        if right[1] - start < lo_len:  # pushed too short by the search: take the target as is
            right = (start + length - (right[1] - right[0]), start + length)
        amplicons.append(Amplicon(len(amplicons) + 1, left, right))
        if last:
            break
        # next LEFT: ends `gap` bp before this RIGHT starts
        plen = int(rng.integers(PRIMER_LENGTH[0], PRIMER_LENGTH[1] + 1))
        anchor = right[0] - gap - plen
        nxt = _place_primer(rng, ref, anchor, "LEFT", repeat_mask, left[1] + 60, right[0] - OVERLAP_GAP[0])
        if nxt[1] > right[0] - OVERLAP_GAP[0]:
            nxt = (right[0] - OVERLAP_GAP[0] - plen, right[0] - OVERLAP_GAP[0])
        left = nxt
    _check_scheme(amplicons, n, amplicon_length)
    return amplicons


def _check_scheme(amplicons: list[Amplicon], n: int, amplicon_length: tuple[int, int]) -> None:
    for a, b in zip(amplicons, amplicons[1:], strict=False):
        if not (a.start < b.start and b.left[1] + OVERLAP_GAP[0] <= a.right[0] and b.start < a.end):
            raise AssertionError(f"amplicons {a} and {b} do not tile")
    for a in amplicons:
        if not (amplicon_length[0] <= a.end - a.start <= amplicon_length[1]) or a.end > n or a.start < 0:
            raise AssertionError(f"amplicon {a} is {a.end - a.start} bp, outside {amplicon_length}")


def write_primer_bed(path: Path, amplicons: list[Amplicon]) -> None:
    """ARTIC BED6 of the scheme, in amplicon order (LEFT, then RIGHT)."""
    lines = []
    for a in amplicons:
        lines.append(f"{CONTIG}\t{a.left[0]}\t{a.left[1]}\t{SCHEME}_{a.number}_LEFT\t{a.pool}\t+")
        lines.append(f"{CONTIG}\t{a.right[0]}\t{a.right[1]}\t{SCHEME}_{a.number}_RIGHT\t{a.pool}\t-")
    path.write_text("\n".join(lines) + "\n")


def counted_intervals(amplicons: list[Amplicon], read_length: int = READ_LENGTH) -> list[tuple[int, int, int]]:
    """``(lo, hi, amplicon index)`` of every read's counted part, sorted by ``lo``."""
    out = []
    for i, a in enumerate(amplicons):
        for lo, hi in a.read_parts(read_length):
            if hi > lo:
                out.append((lo, hi, i))
    return sorted(out)


# --------------------------------------------------------------------------- #
# Design: alleles and artefact sites
# --------------------------------------------------------------------------- #
def _homopolymers(ref: str, min_run: int) -> list[tuple[int, int]]:
    """``(start, end)`` of every run of one base at least ``min_run`` long."""
    out, i = [], 0
    while i < len(ref):
        j = i
        while j < len(ref) and ref[j] == ref[i]:
            j += 1
        if j - i >= min_run:
            out.append((i, j))
        i = j
    return out


@dataclass
class _Layout:
    """Where alleles may go: counted coverage, primers, and the read parts."""

    ref: str
    amplicons: list[Amplicon]
    counted: np.ndarray  # bool per base: some counted read part covers it
    parts: list[tuple[int, int, int]]
    primers: list[tuple[int, int]]  # every primer, sorted; they do not overlap

    def straddles_primer(self, window: tuple[int, int]) -> bool:
        return any(window[0] < hi and window[1] > lo and not (lo <= window[0] and window[1] <= hi)
                   for lo, hi in self.primers)

    def under_primer(self, window: tuple[int, int]) -> bool:
        return any(window[0] < hi and window[1] > lo for lo, hi in self.primers)

    def readable(self, window: tuple[int, int], indel: bool) -> bool:
        """Some counted read part holds the whole window (+ flank for indels)."""
        lo, hi = (window[0] - INDEL_FLANK, window[1] + INDEL_FLANK) if indel else window
        if lo < END_MARGIN or hi > len(self.ref) - END_MARGIN:
            return False
        return any(p_lo <= lo and hi <= p_hi for p_lo, p_hi, _ in self.parts)


def _snv(rng: np.random.Generator, ref: str, p: int, hap: int) -> Any:
    return MixtureVariant(p + 1, ref[p], viral._snv_alt(rng, ref[p]), (hap,), (p, p + 1))


def _indel(ref: str, p: int, is_del: bool, length: int, ins: str, hap: int) -> Any:
    """A left-normalised deletion of ``ref[p:p+length]`` or insertion of ``ins`` before ``ref[p]``."""
    if is_del:
        left, right, k = gen.normalise_deletion(ref, p, length)
        return MixtureVariant(left, ref[left - 1 : left + k], ref[left - 1], (hap,), (left - 1, right + k + 1))
    left, right, s = gen.normalise_insertion(ref, p, ins)
    return MixtureVariant(left, ref[left - 1], ref[left - 1] + s, (hap,), (left - 1, right + 1))


def _draw(rng: np.random.Generator, kind: str, lay: _Layout, hap: int, hps: list[tuple[int, int]],
          strs: list[tuple[int, int, str]], visible_primers: list[tuple[int, int]]) -> Any:
    """One candidate allele of ``kind`` (snv, snv_under, indel, indel_hp, indel_str, indel_under)."""
    ref = lay.ref
    n = len(ref)
    if kind == "snv":
        return _snv(rng, ref, int(rng.integers(END_MARGIN, n - END_MARGIN)), hap)
    if kind.endswith("_under"):
        lo, hi = visible_primers[int(rng.integers(len(visible_primers)))]
        p = int(rng.integers(lo + 1, hi - 1))
        if kind == "snv_under":
            return _snv(rng, ref, p, hap)
    elif kind == "indel_hp" and hps:
        s, e = hps[int(rng.integers(len(hps)))]
        k = int(rng.integers(1, min(3, e - s - 1) + 1))
        is_del = bool(rng.random() < 0.5)
        return _indel(ref, s, is_del, k, ref[s] * k, hap)
    elif kind == "indel_str" and strs:
        s, e, unit = strs[int(rng.integers(len(strs)))]
        is_del = bool(rng.random() < 0.5)
        return _indel(ref, s, is_del, len(unit), unit, hap)
    else:
        p = int(rng.integers(END_MARGIN, n - END_MARGIN))
    weights = 0.6 ** np.arange(3)
    length = int(rng.choice(np.arange(1, 4), p=weights / weights.sum()))
    ins = "".join("ACGT"[int(b)] for b in rng.integers(0, 4, length))
    return _indel(ref, p, bool(rng.random() < 0.5), length, ins, hap)


def design_alleles(rng: np.random.Generator, lay: _Layout, repeats: list[tuple[int, int, str]],
                   fractions: tuple[float, ...], alleles_per_fraction: int, indel_share: float,
                   under_primer: int, occ: Any) -> list[Any]:
    """The true alleles, haplotype ``K`` carrying the ``alleles_per_fraction`` of band K."""
    hps = [(s, e) for s, e in _homopolymers(lay.ref, 4) if END_MARGIN + 10 < s and e < len(lay.ref) - END_MARGIN - 10]
    strs = [(s, e, u) for s, e, u in repeats if 2 <= len(u) <= 3 and (e - s) // len(u) >= 3]
    visible = [p for p in lay.primers if lay.counted[p[0]:p[1]].all()]
    requests: list[tuple[str, int]] = []
    for band in range(len(fractions)):
        n_indel = round(alleles_per_fraction * indel_share)
        n_under = min(under_primer, alleles_per_fraction)
        under_indel = 1 if n_indel >= 2 and n_under >= 1 else 0
        n_hp = (n_indel - under_indel + 1) // 2
        n_str = (n_indel - under_indel - n_hp) // 2
        kinds = (["indel_under"] * under_indel + ["snv_under"] * (n_under - under_indel)
                 + ["indel_hp"] * n_hp + ["indel_str"] * n_str
                 + ["indel"] * (n_indel - under_indel - n_hp - n_str))
        kinds += ["snv"] * (alleles_per_fraction - len(kinds))
        requests += [(k, band + 1) for k in kinds]
    # the constrained ones first, so that random placements do not take their room
    order = sorted(range(len(requests)), key=lambda i: (not requests[i][0].endswith(("_under", "_hp", "_str")), i))
    out: list[Any] = []
    for i in order:
        kind, hap = requests[i]
        for attempt in range(4000):
            k = kind if attempt < 3000 else "indel" if kind.startswith("indel") else "snv"
            v = _draw(rng, k, lay, hap, hps, strs, visible)
            win = v.window
            if v.pos < 2 or lay.straddles_primer(win) or not lay.readable(win, v.kind != "SNV"):
                continue
            if k.endswith("_under") and not lay.under_primer(win):
                continue
            if occ.try_add(*win):
                out.append(v)
                break
        else:
            raise ValueError(f"cannot place {len(requests)} alleles {MIN_GAP} bp apart on {len(lay.ref)} bp; "
                             "use a longer genome or fewer alleles per fraction")
    out.sort(key=lambda v: (v.pos, v.alt))
    return out


def _slippage_p(run: np.ndarray) -> np.ndarray:
    """Per-molecule polymerase slippage probability of a homopolymer of length ``run``."""
    return np.where(run >= 6, np.minimum(3e-3, 5e-5 * 2.0 ** (run - 5.0)), 0.0)


def _read_indel_p(run: np.ndarray) -> np.ndarray:
    """Per-read probability of a sequencing indel error over a homopolymer of length ``run``."""
    return np.where(run >= 4, np.minimum(5e-3, 2e-5 * 2.2 ** (run - 3.0)), 0.0)


_RUN_CAP = 64
_READ_INDEL_PER_BASE = SEQ_INDEL_RATE + _read_indel_p(np.arange(_RUN_CAP)) / np.maximum(np.arange(_RUN_CAP), 1)


def design_artefacts(rng: np.random.Generator, lay: _Layout, variants: list[Any], occ: Any,
                     read_length: int) -> tuple[list[Any], list[tuple[int, Any]]]:
    """Strand hotspots and amplicon PCR errors (with their amplicon index), and the
    homopolymer slippage sites. Returns ``(artefacts, pcr_sites)``."""
    ref, n = lay.ref, len(lay.ref)
    usable = n - 2 * END_MARGIN
    fwd_counted = np.zeros(n, dtype=bool)
    for a in lay.amplicons:
        (lo, hi), _ = a.read_parts(read_length)
        fwd_counted[lo:hi] = True
    gg = [p for p in range(END_MARGIN, n - END_MARGIN) if ref[p - 2 : p] == "GG" and fwd_counted[p]]
    out: list[Any] = []
    pcr: list[tuple[int, Any]] = []
    n_hot = max(1, round(usable / HOTSPOT_SPACING))
    n_pcr = max(1, round(usable / PCR_SPACING))
    placed = 0
    for _ in range(2000 * n_hot):
        if placed == n_hot or not gg:
            break
        p = gg[int(rng.integers(len(gg)))]
        alt = "ACGT"[("ACGT".index(ref[p]) + int(rng.integers(1, 4))) % 4]
        rate = float(rng.uniform(0.003, 0.03))
        if occ.try_add(p, p + 1):
            out.append(Artefact(p + 1, ref[p], alt, HOTSPOT, round(rate, 5)))
            placed += 1
    if placed < n_hot:
        raise ValueError(f"cannot place {n_hot} strand hotspots {MIN_GAP} bp from the alleles on {n} bp; "
                         "use a longer genome or fewer alleles per fraction")
    placed = 0
    for _ in range(2000 * n_pcr):
        if placed == n_pcr:
            break
        ai = int(rng.integers(len(lay.amplicons)))
        parts = lay.amplicons[ai].read_parts(read_length)
        lo, hi = parts[int(rng.integers(2))]
        if hi - lo < 10:
            continue
        p = int(rng.integers(lo, hi))
        alt = "ACGT"[("ACGT".index(ref[p]) + int(rng.integers(1, 4))) % 4]
        rate = float(rng.uniform(0.001, 0.004))
        if END_MARGIN <= p < n - END_MARGIN and occ.try_add(p, p + 1):
            art = Artefact(p + 1, ref[p], alt, PCR, round(rate, 5))
            out.append(art)
            pcr.append((ai, art))
            placed += 1
    if placed < n_pcr:
        raise ValueError(f"cannot place {n_pcr} PCR error sites {MIN_GAP} bp from the alleles on {n} bp; "
                         "use a longer genome or fewer alleles per fraction")
    taken = [v.window for v in variants]
    for s, e in _homopolymers(ref, SLIPPAGE_MIN_RUN):
        if s < 1 or any(w0 < e + 1 and w1 > s - 1 for w0, w1 in taken):
            continue
        slip = float(_slippage_p(np.array([e - s]))[0])
        out.append(Artefact(s, ref[s - 1 : s + 1], ref[s - 1], SLIPPAGE, round(0.6 * slip, 6)))
        out.append(Artefact(s, ref[s - 1], ref[s - 1 : s + 1], SLIPPAGE, round(0.4 * slip, 6)))
    out.sort(key=lambda a: (a.pos, a.kind, len(a.alt)))
    return out, pcr


# --------------------------------------------------------------------------- #
# Molecules and amplification
# --------------------------------------------------------------------------- #
def _hap_position(p: int, variants: list[Any], h: int) -> int:
    """0-based reference position ``p`` (not strictly inside an allele) in haplotype ``h``."""
    return p + sum(len(v.alt) - len(v.ref) for v in variants if h in v.haps and v.pos - 1 < p)


def molecule_sequence(ref: str, hap_seq: str, variants: list[Any], h: int, a: Amplicon) -> str:
    """Amplicon ``a`` of haplotype ``h``: the primers' sequence, then the haplotype's own
    bases between them."""
    lo = _hap_position(a.insert[0], variants, h)
    hi = _hap_position(a.insert[1], variants, h)
    return ref[a.left[0] : a.left[1]] + hap_seq[lo:hi] + ref[a.right[0] : a.right[1]]


def molecule_offset(a: Amplicon, variants: list[Any], h: int, p: int, mol_len: int) -> int:
    """Where 0-based reference position ``p`` lies in the molecule of (``a``, ``h``), or -1."""
    if a.left[0] <= p < a.left[1]:
        return p - a.left[0]
    if a.right[0] <= p < a.right[1]:
        return mol_len - (a.right[1] - p)
    if a.insert[0] <= p < a.insert[1]:
        return (a.left[1] - a.left[0]) + _hap_position(p, variants, h) - _hap_position(a.insert[0], variants, h)
    return -1


def build_molecules(ref: str, haps: list[str], variants: list[Any], amplicons: list[Amplicon]) -> _Molecules:
    seqs = [molecule_sequence(ref, haps[h], variants, h, a) for a in amplicons for h in range(len(haps))]
    length = np.array([len(s) for s in seqs], dtype=np.int64)
    mat = np.full((len(seqs), int(length.max())), 4, dtype=np.uint8)
    lut = np.zeros(256, dtype=np.uint8)
    lut[np.frombuffer(b"ACGT", dtype=np.uint8)] = np.arange(4, dtype=np.uint8)
    for i, s in enumerate(seqs):
        mat[i, : len(s)] = lut[np.frombuffer(s.encode(), dtype=np.uint8)]
    sm, ss, sl = [], [], []
    for i, s in enumerate(seqs):
        for st, en in _homopolymers(s, 6):
            sm.append(i)
            ss.append(st)
            sl.append(en - st)
    slip_len = np.array(sl, dtype=np.int64)
    slip_p = _slippage_p(slip_len)
    slip_mol = np.array(sm, dtype=np.int64)
    total = np.bincount(slip_mol, weights=slip_p, minlength=len(seqs)) if slip_mol.size else np.zeros(len(seqs))
    return _Molecules(mat, length, len(haps), slip_mol, np.array(ss, dtype=np.int64), slip_len, slip_p, total)


def amplification(rng: np.random.Generator, amplicons: list[Amplicon], variants: list[Any],
                  pop_fractions: list[float], depth: float, dropouts: int, pcr_jitter: float,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-amplicon depth multipliers and read pairs per (amplicon, haplotype)."""
    n = len(amplicons)
    mult = np.clip(np.exp(rng.normal(0.0, 0.45, n)), 0.3, 3.0)
    pool2 = float(np.exp(rng.normal(0.0, 0.15)))
    mult *= np.array([1.0 if a.pool == 1 else pool2 for a in amplicons])
    mult = np.clip(mult / mult.mean(), 0.3, 3.0)
    mult /= mult.mean()
    if dropouts:
        drop = rng.choice(n, size=min(dropouts, n), replace=False)
        mult[drop] = rng.uniform(0.01, 0.05, size=drop.size)
    pairs = rng.poisson(depth * mult)
    n_haps = len(pop_fractions)
    eff = np.ones((n, n_haps))
    for i, a in enumerate(amplicons):
        for v in variants:
            for (lo, hi), three_prime in ((a.left, a.left[1]), (a.right, a.right[0])):
                if v.window[0] < hi and v.window[1] > lo:
                    near = abs(three_prime - (v.window[0] if three_prime == a.right[0] else v.window[1])) <= 5
                    for h in v.haps:
                        eff[i, h] *= 0.3 if near else 0.7
    weights = np.array(pop_fractions)[None, :] * eff * np.exp(rng.normal(0.0, pcr_jitter, (n, n_haps)))
    weights /= weights.sum(axis=1, keepdims=True)
    counts = np.stack([rng.multinomial(int(pairs[i]), weights[i]) for i in range(n)])
    return mult, counts


# --------------------------------------------------------------------------- #
# Reads
# --------------------------------------------------------------------------- #
_QUAL_ERROR = 10.0 ** (-np.arange(64) / 10.0)  # phred -> error probability


def _draw_qualities(rng: np.random.Generator, n: int, table: np.ndarray) -> np.ndarray:
    """``generate.py``'s binned qualities (Q2/12/23/37 with position-dependent
    probabilities ``table`` and a lognormal per-read factor), drawn without its
    (n, L, 3) intermediates: the same distribution, several times faster."""
    factor = np.clip(rng.lognormal(0.0, 0.6, size=n), 0.2, 6.0).astype(np.float32)
    cum = np.cumsum(table, axis=1).astype(np.float32)  # (L, 3)
    scale = np.minimum(factor[:, None], np.float32(0.9) / cum[None, :, 2])  # cap the non-Q37 total at 0.9
    u = rng.random((n, table.shape[0]), dtype=np.float32)
    idx = np.zeros(u.shape, dtype=np.uint8)
    for k in range(3):
        idx += u >= cum[None, :, k] * scale
    return gen._QUAL_BINS[idx]


def _run_lengths(a: np.ndarray) -> np.ndarray:
    """For each element of the rows of ``a``, the length of the run of equal values holding it."""
    new = np.ones(a.shape, dtype=bool)
    new[:, 1:] = a[:, 1:] != a[:, :-1]
    idx = np.cumsum(new.ravel()) - 1
    return np.bincount(idx)[idx].reshape(a.shape)


def _ends(mol: np.ndarray, length: int, ext: int) -> tuple[np.ndarray, np.ndarray]:
    """The forward and reverse reads' first ``ext`` bases of one molecule."""
    fwd = mol[:ext]
    rev = gen._COMPLEMENT[mol[length - 1 - np.arange(ext)]]
    return fwd, rev


def _slip(row: np.ndarray, pos: int, deletion: bool) -> None:
    """A 1-base deletion of ``row[pos]`` or duplication of it, in place (length kept)."""
    if deletion:
        row[pos:-1] = row[pos + 1 :].copy()
    else:
        row[pos + 1 :] = row[pos:-1].copy()


def simulate_batch(rng: np.random.Generator, st: dict[str, Any], amp: np.ndarray,
                   hap: np.ndarray) -> tuple[np.ndarray, ...]:
    """Reads of the molecules (``amp``, ``hap``): ``(seq1, qual1, seq2, qual2, r1_left)``,
    sequencing orientation, base codes 0-4."""
    mols: _Molecules = st["molecules"]
    rl = st["read_length"]
    ext = rl + 10
    n = amp.size
    m = amp * mols.n_haps + hap
    mol_len = mols.length[m].copy()
    ar = np.arange(ext)
    fwd = mols.seq[m[:, None], ar[None, :]]
    rev = gen._COMPLEMENT[mols.seq[m[:, None], (mol_len - 1)[:, None] - ar[None, :]]]

    # polymerase slippage in homopolymers: the molecule itself is one base shorter/longer
    hit = np.flatnonzero(rng.random(n) < mols.slip_total[m])
    for i in hit.tolist():
        tracts = np.flatnonzero(mols.slip_mol == m[i])
        t = int(rng.choice(tracts, p=mols.slip_p[tracts] / mols.slip_p[tracts].sum()))
        mol = mols.seq[m[i], : mol_len[i]]
        s = int(mols.slip_start[t])
        mol = np.delete(mol, s) if rng.random() < 0.6 else np.insert(mol, s, mol[s])
        mol_len[i] = mol.size
        fwd[i], rev[i] = _ends(mol, mol.size, ext)
    # polymerase substitutions and the early-cycle PCR error sites: in both reads
    n_sub = rng.poisson(PCR_SUB_RATE * mol_len)
    rows = np.repeat(np.arange(n), n_sub)
    js = (rng.random(rows.size) * mols.length[m[rows]]).astype(np.int64)
    alts = rng.integers(1, 4, rows.size).astype(np.uint8)
    site_rows, site_js, site_alt = [rows], [js], [(mols.seq[m[rows], js] + alts) % 4]
    for ai, j_by_hap, alt, rate in st["pcr_sites"]:
        r = np.flatnonzero((amp == ai) & (rng.random(n) < rate))
        r = r[j_by_hap[hap[r]] >= 0]
        site_rows.append(r)
        site_js.append(j_by_hap[hap[r]])
        site_alt.append(np.full(r.size, alt, dtype=np.uint8))
    r_all, j_all, b_all = (np.concatenate(x) for x in (site_rows, site_js, site_alt))
    f = j_all < ext
    fwd[r_all[f], j_all[f]] = b_all[f]
    jr = mol_len[r_all] - 1 - j_all
    f = (jr >= 0) & (jr < ext)
    rev[r_all[f], jr[f]] = gen._COMPLEMENT[b_all[f]]

    r1_left = rng.random(n) < st["read1_left_share"]
    flip = ~r1_left[:, None]
    r1, r2 = np.where(flip, rev, fwd), np.where(flip, fwd, rev)
    # chimeras: read 1 continues in another amplicon after 25-125 bp; junk: random reads
    for i in np.flatnonzero(rng.random(n) < CHIMERA_FRACTION).tolist():
        k = int(rng.integers(25, 126))
        other = int(rng.integers(mols.seq.shape[0]))
        src = int(rng.integers(0, int(mols.length[other]) - ext))
        r1[i, k:] = mols.seq[other, src : src + ext - k]
    junk = np.flatnonzero(rng.random(n) < JUNK_FRACTION)
    which = rng.choice(3, size=junk.size, p=[0.375, 0.375, 0.25])
    for i, w in zip(junk.tolist(), which.tolist(), strict=True):
        if w != 1:
            r1[i] = rng.integers(0, 4, ext)
        if w != 0:
            r2[i] = rng.integers(0, 4, ext)

    table = gen._quality_tables(rl)
    out: list[np.ndarray] = []
    # per-position, per-strand error-rate factor (sequence context), by reference position
    ar_rl = np.arange(rl)
    fwd_pos = np.minimum(st["amp_start"][amp][:, None] + ar_rl, st["site_factor"].shape[1] - 1)
    rev_pos = np.maximum(st["amp_end"][amp][:, None] - 1 - ar_rl, 0)
    factor_fwd, factor_rev = st["site_factor"][0][fwd_pos], st["site_factor"][1][rev_pos]
    for reads, worse, is_fwd in ((r1, 1.0, r1_left), (r2, 1.4, ~r1_left)):
        # sequencing indel errors: 1e-5 per base, more over homopolymers
        prop = _READ_INDEL_PER_BASE[np.minimum(_run_lengths(reads), _RUN_CAP - 1)]
        prop[:, :10] = 0.0
        prop[:, rl - 10 :] = 0.0
        total = prop.sum(axis=1)
        for i in np.flatnonzero(rng.random(n) < total).tolist():
            pos = int(rng.choice(ext, p=prop[i] / total[i]))
            _slip(reads[i], pos, deletion=bool(rng.random() < 0.55))
        seq = np.ascontiguousarray(reads[:, :rl])
        qual = _draw_qualities(rng, n, table * worse)
        p_err = (_QUAL_ERROR[qual] + BLIND_ERROR_RATE) * np.where(is_fwd[:, None], factor_fwd, factor_rev)
        err = (rng.random(seq.shape) < p_err) & (seq < 4)
        true = seq[err]
        u = rng.random(true.size)
        seq[err] = (u[:, None] >= _SUBST_CUM[true][:, :3]).sum(axis=1).astype(np.uint8)
        seq[(qual == 2) & (rng.random(seq.shape) < 0.25)] = 4
        out += [seq, qual]
    seq1, qual1, seq2, qual2 = out
    # strand hotspots: forward reads only, after the random errors
    for j_by_amp_hap, alt, rate in st["hotspots"]:
        j = j_by_amp_hap[amp, hap]
        for seq, is_fwd in ((seq1, r1_left), (seq2, ~r1_left)):
            r = np.flatnonzero(is_fwd & (j >= 0) & (j < rl) & (rng.random(n) < rate))
            seq[r, j[r]] = alt
    return seq1, qual1, seq2, qual2, r1_left


_STATE: dict[str, Any] = {}  # shared with forked workers


def _run_batch(task: tuple[int, int, int, str]) -> tuple[str, dict[str, np.ndarray]]:
    """Simulate, align and sort pairs ``[first, first + n)`` into a BAM chunk; returns the
    chunk and its primary mapped reads (span, strand, haplotype, amplicon, deletions)."""
    import mappy

    bi, first, n_pairs, chunk = task
    st = _STATE
    rng = np.random.default_rng([st["seed"], 3, bi])
    amp = st["pair_amp"][first : first + n_pairs]
    hap = st["pair_hap"][first : first + n_pairs]
    s1, q1, s2, q2, _ = simulate_batch(rng, st, amp, hap)
    header = pysam.AlignmentHeader.from_dict(st["header"])
    rl = s1.shape[1]
    b1 = gen._BASE_LUT[s1].tobytes().decode()
    b2 = gen._BASE_LUT[s2].tobytes().decode()
    aligner, contigs = st["aligner"], {CONTIG: st["ref"]}
    buf = mappy.ThreadBuffer()
    cols: dict[str, list[int]] = {k: [] for k in ("start", "end", "reverse", "hap", "amp", "ds", "de", "dread")}
    unsorted = chunk + ".unsorted.bam"
    with pysam.AlignmentFile(unsorted, "wbu", header=header) as out:
        for i in range(n_pairs):
            h, a = int(hap[i]), int(amp[i])
            name = f"h{h}:a{a + 1:03d}:{first + i:08d}"
            r1, r2 = b1[i * rl : (i + 1) * rl], b2[i * rl : (i + 1) * rl]
            hits = list(aligner.map(r1, r2, buf=buf))
            for rec in gen._pair_records(header, contigs, name, (r1, r2), (q1[i], q2[i]), hits, SAMPLE):
                out.write(rec)
                if rec.flag & _SKIP:
                    continue
                idx = len(cols["start"])
                cols["start"].append(rec.reference_start)
                cols["end"].append(rec.reference_end or rec.reference_start)
                cols["reverse"].append(int(rec.is_reverse))
                cols["hap"].append(h)
                cols["amp"].append(a)
                p = rec.reference_start
                for op, ln in rec.cigartuples or []:
                    if op in (2, 3):
                        cols["ds"].append(p)
                        cols["de"].append(p + ln)
                        cols["dread"].append(idx)
                    if op in (0, 2, 3, 7, 8):
                        p += ln
    pysam.sort("--no-PG", "-l", "1", "-m", "512M", "-T", chunk + ".tmp", "-o", chunk, unsorted)
    os.remove(unsorted)
    return chunk, {k: np.array(v, dtype=np.int64) for k, v in cols.items()}


# --------------------------------------------------------------------------- #
# Truth
# --------------------------------------------------------------------------- #
def trim_spans(amplicons: list[Amplicon], start: np.ndarray, end: np.ndarray,
               reverse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The counted part [lo, hi) of aligned reads, trimmed as ``ivar trim`` and
    ``functions.core.primers.PrimerScheme.trim_bounds`` do: a forward read starting inside
    a primer counts from that primer's end, a reverse read ending inside one up to its start."""
    prim = sorted(p for a in amplicons for p in (a.left, a.right))
    ps = np.array([p[0] for p in prim], dtype=np.int64)
    pe = np.array([p[1] for p in prim], dtype=np.int64)
    lo, hi = start.copy(), end.copy()
    i = np.searchsorted(ps, start, side="right") - 1
    fin = (reverse == 0) & (i >= 0) & (start < pe[np.maximum(i, 0)])
    lo[fin] = np.maximum(lo[fin], pe[i[fin]])
    j = np.searchsorted(ps, end - 1, side="right") - 1
    rin = (reverse == 1) & (j >= 0) & (end - 1 < pe[np.maximum(j, 0)])
    hi[rin] = np.minimum(hi[rin], ps[j[rin]])
    return lo, hi


def realised_frequencies(variants: list[Any], amplicons: list[Amplicon], reads: dict[str, np.ndarray],
                         ) -> list[tuple[float, int, list[int]]]:
    """``(AF, DP, amplicons)`` of each allele among its informative reads.

    Informative: a primary mapped read whose counted part (:func:`trim_spans`) holds the
    SNV's base (aligned, not deleted), or the indel's window plus ``INDEL_FLANK`` bases on
    each side. It shows the allele when its haplotype (read name) carries it and its
    amplicon's primers do not cover it. ``amplicons`` lists (1-based) the amplicons of
    those reads with at least 1 % of DP.
    """
    lo, hi = trim_spans(amplicons, reads["start"], reads["end"], reads["reverse"])
    order = np.argsort(lo, kind="stable")
    lo_s, hi_s = lo[order], hi[order]
    hap_s, amp_s = reads["hap"][order], reads["amp"][order]
    max_span = int((hi - lo).max()) if lo.size else 0
    dread = reads["dread"]
    out: list[tuple[float, int, list[int]]] = []
    for v in variants:
        if v.kind == "SNV":
            need_lo, need_hi = v.pos - 1, v.pos
        else:
            need_lo, need_hi = v.window[0] - INDEL_FLANK, v.window[1] + INDEL_FLANK
        a = int(np.searchsorted(lo_s, need_hi - max_span, side="left"))
        b = int(np.searchsorted(lo_s, need_lo, side="right"))
        sel = np.flatnonzero(hi_s[a:b] >= need_hi) + a
        haps, amps = hap_s[sel], amp_s[sel]
        weight = np.ones(sel.size, dtype=np.int64)
        if v.kind == "SNV":
            gap = (reads["ds"] <= need_lo) & (reads["de"] > need_lo)
            r = dread[gap]
            covered = (lo[r] <= need_lo) & (hi[r] >= need_hi)
            r = r[covered]
            # remove reads with a deletion over the base
            gone = np.zeros(lo.size, dtype=bool)
            gone[r] = True
            weight = (~gone[order[sel]]).astype(np.int64)
        masked = np.array([amplicons[int(x)].masks(v.window) for x in range(len(amplicons))])
        carrying = np.isin(haps, list(v.haps)) & ~masked[amps]
        dp = int(weight.sum())
        alt = int((weight * carrying).sum())
        per_amp = np.bincount(amps, weights=weight, minlength=len(amplicons))
        amp_list = [i + 1 for i in np.flatnonzero(per_amp >= max(1.0, 0.01 * dp)).tolist()]
        out.append((alt / dp if dp else 0.0, dp, amp_list))
    return out


def write_truth_vcf(path_gz: Path, ref: str, variants: list[Any], amplicons: list[Amplicon],
                    realised: list[tuple[float, int, list[int]]], pop_fractions: list[float], params: str) -> None:
    """Sites-only, bgzipped, tabix-indexed VCFv4.2 of the true alleles."""
    haps = ",".join(f"h{i}:{f:g}" for i, f in enumerate(pop_fractions))
    lines = [
        "##fileformat=VCFv4.2",
        f"##source=test_data/amplicon.py {params}",
        "##reference=virus.fa",
        f"##contig=<ID={CONTIG},length={len(ref)},md5={hashlib.md5(ref.encode()).hexdigest()}>",
        f"##haplotypes={haps}",
        "##primers=scheme.primer.bed",
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Realised allele frequency: share of the informative reads '
        '(counted, primer-trimmed part covers the allele) that come from a carrying haplotype and from an amplicon '
        'whose primers do not cover it">',
        '##INFO=<ID=HF,Number=A,Type=Float,Description="Designed frequency: the carrying haplotype\'s fraction">',
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Informative primary mapped reads after primer trimming: '
        'an aligned base at POS (SNV), or a counted part covering the indel\'s placement window +-5 bp">',
        '##INFO=<ID=HAP,Number=.,Type=String,Description="Haplotypes carrying the allele">',
        '##INFO=<ID=VT,Number=1,Type=String,Description="Variant type: SNV, INS or DEL">',
        '##INFO=<ID=UNDER_PRIMER,Number=0,Type=Flag,Description="The allele lies under a primer of the scheme">',
        '##INFO=<ID=AMP,Number=.,Type=Integer,Description="Amplicons whose counted reads cover the allele">',
        '##INFO=<ID=MASKED,Number=.,Type=Integer,Description="Amplicons whose primers cover the allele (their '
        'reads show the reference there)">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    for v, (af, dp, amps) in zip(variants, realised, strict=True):
        hf = sum(pop_fractions[h] for h in v.haps)
        masked = [a.number for a in amplicons if a.masks(v.window)]
        info = f"AF={af:.5f};HF={hf:.5g};DP={dp};HAP={','.join(f'h{h}' for h in v.haps)};VT={v.kind}"
        if masked:
            info += ";UNDER_PRIMER"
        info += f";AMP={','.join(map(str, amps)) or '.'}"
        if masked:
            info += f";MASKED={','.join(map(str, masked))}"
        lines.append(f"{CONTIG}\t{v.pos}\t.\t{v.ref}\t{v.alt}\t.\tPASS\t{info}")
    plain = path_gz.with_suffix("")
    plain.write_text("\n".join(lines) + "\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True, keep_original=False)


def _bam_header(ref: str, params: str, mappy_version: str) -> dict[str, Any]:
    return {
        "HD": {"VN": "1.6", "SO": "unsorted"},
        "SQ": [{"SN": CONTIG, "LN": len(ref), "M5": hashlib.md5(ref.encode()).hexdigest()}],
        "RG": [{"ID": SAMPLE, "SM": SAMPLE, "PL": "ILLUMINA", "LB": "amplicons"}],
        "PG": [
            {"ID": "amplicon.py", "PN": "test_data/amplicon.py", "VN": "1", "CL": f"amplicon.py {params}"},
            {"ID": "minimap2", "PN": "minimap2", "PP": "amplicon.py", "VN": f"mappy-{mappy_version}",
             "CL": "mappy.Aligner('virus.fa', preset='sr').map(read1, read2)"},
        ],
    }


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #
def generate_amplicon_mixture(
    outdir: str | os.PathLike[str],
    seed: int = 7,
    length: int = 30_000,
    depth: float = 10_000.0,
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
    alleles_per_fraction: int = 20,
    indel_share: float = 0.2,
    under_primer: int = 3,
    amplicon_length: tuple[int, int] = (250, 400),
    read1_left_share: float = 0.5,
    dropouts: int | None = None,
    pcr_jitter: float = 0.1,
    primer_mismatch: bool = True,
    threads: int = 2,
    verify: bool = True,
    log: bool = True,
    reference_seed: int | None = None,
    artefacts: bool = True,
) -> AmpliconSummary:
    """Write reference, primer scheme, amplicon-library BAM, truth and artefact list into
    ``outdir`` (see the module's contract). ``dropouts`` None: one per 60 amplicons.
    ``pcr_jitter`` 0 and ``primer_mismatch`` False give every amplicon its haplotypes'
    designed fractions (AF then differs from HF by sampling only). ``threads`` changes
    only the speed, never the output. ``reference_seed``: draw the reference and the
    primer scheme from it instead of ``seed`` (samples of one run: one reference and
    scheme, each its own mixture). ``artefacts`` False: the library carries no error
    sites (no strand hotspots, PCR error sites or polymerase slippage; ``artefacts.tsv``
    is empty): only the sequencer's errors remain, as ART simulates them."""
    import mappy

    t0 = time.perf_counter()
    rest = 1.0 - sum(fractions)
    if rest < -1e-9 or any(f <= 0 for f in fractions):
        raise ValueError(f"fractions must be positive and sum to at most 1: {fractions}")
    pop_fractions = [max(rest, 0.0), *fractions]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    params = (
        f"--seed {seed} --length {length} --depth {depth:g} --fractions {','.join(f'{f:g}' for f in fractions)}"
        f" --alleles-per-fraction {alleles_per_fraction} --indel-share {indel_share:g} --under-primer {under_primer}"
        f" --amplicon-length {amplicon_length[0]},{amplicon_length[1]} --read1-left-share {read1_left_share:g}"
        f" --dropouts {'auto' if dropouts is None else dropouts} --pcr-jitter {pcr_jitter:g}"
        + ("" if primer_mismatch else " --no-primer-mismatch")
        + ("" if reference_seed is None else f" --reference-seed {reference_seed}")
        + ("" if artefacts else " --no-artefacts")
    )
    ref_seed = seed if reference_seed is None else reference_seed

    def say(msg: str) -> None:
        if log:
            print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    codes, repeats = gen._random_contig(np.random.default_rng([ref_seed, 1]), length)
    ref = gen._BASE_LUT[codes].tobytes().decode()
    ref_path = out / "virus.fa"
    gen.write_fasta(ref_path, {CONTIG: ref})

    amplicons = design_scheme(np.random.default_rng([ref_seed, 5]), ref, repeats, amplicon_length)
    bed = out / "scheme.primer.bed"
    write_primer_bed(bed, amplicons)
    parts = counted_intervals(amplicons)
    counted = np.zeros(length, dtype=bool)
    for lo, hi, _ in parts:
        counted[lo:hi] = True
    lay = _Layout(ref, amplicons, counted, parts, sorted(p for a in amplicons for p in (a.left, a.right)))

    rng = np.random.default_rng([seed, 2])
    occ = gen._Occupancy(MIN_GAP)
    variants = design_alleles(rng, lay, repeats, tuple(fractions), alleles_per_fraction, indel_share,
                              under_primer, occ)
    artefact_list, pcr = design_artefacts(rng, lay, variants, occ, READ_LENGTH)
    if not artefacts:  # designed all the same, so that every other draw stays as it was
        artefact_list, pcr = [], []
    n_haps = len(pop_fractions)
    haps = viral.haplotype_sequences(ref, variants, n_haps)
    mols = build_molecules(ref, haps, variants, amplicons)
    if not artefacts:
        mols.slip_total[:] = 0.0
    say(f"design: {len(amplicons)} amplicons, {len(variants)} alleles on {n_haps - 1} minor haplotypes "
        f"({sum(lay.under_primer(v.window) for v in variants)} under primers), {len(artefact_list)} artefact sites; "
        f"{1 - counted[END_MARGIN:-END_MARGIN].mean():.1%} of the genome unread")

    n_drop = round(len(amplicons) / 60) if dropouts is None else dropouts
    mult, counts = amplification(np.random.default_rng([seed, 4]), amplicons,
                                 variants if primer_mismatch else [], pop_fractions, depth, n_drop, pcr_jitter)
    pair_amp = np.repeat(np.repeat(np.arange(len(amplicons)), n_haps), counts.ravel())
    pair_hap = np.repeat(np.tile(np.arange(n_haps), len(amplicons)), counts.ravel())
    n_pairs = int(pair_amp.size)
    (out / "amplicons.tsv").write_text(
        "amplicon\tpool\tstart\tend\tinsert_start\tinsert_end\tmultiplier\tpairs\n" + "".join(
            f"{a.number}\t{a.pool}\t{a.start}\t{a.end}\t{a.insert[0]}\t{a.insert[1]}\t{m:.4f}\t{int(c.sum())}\n"
            for a, m, c in zip(amplicons, mult, counts, strict=True)))

    def site_offsets(p: int, only: list[int]) -> np.ndarray:
        j = np.full((len(amplicons), n_haps), -1, dtype=np.int64)
        for ai in only:
            for h in range(n_haps):
                j[ai, h] = molecule_offset(amplicons[ai], variants, h, p, int(mols.length[ai * n_haps + h]))
        return j

    hotspots = []
    for art in artefact_list:
        if art.kind == HOTSPOT:
            near = [i for i, a in enumerate(amplicons) if a.start <= art.pos - 1 < a.start + READ_LENGTH]
            hotspots.append((site_offsets(art.pos - 1, near), "ACGT".index(art.alt), art.rate))
    pcr_sites = [(ai, site_offsets(art.pos - 1, [ai])[ai], "ACGT".index(art.alt), art.rate) for ai, art in pcr]

    aligner = mappy.Aligner(str(ref_path), preset="sr")
    if not aligner:
        raise RuntimeError(f"failed to build the minimap2 index of {ref_path}")
    _STATE.clear()
    site_factor = np.exp(np.random.default_rng([seed, 6]).normal(0.0, SITE_ERROR_SD, (2, length)))
    site_factor /= np.exp(SITE_ERROR_SD**2 / 2)  # mean 1
    _STATE.update(seed=seed, ref=ref, molecules=mols, read_length=READ_LENGTH, read1_left_share=read1_left_share,
                  site_factor=site_factor, amp_start=np.array([a.start for a in amplicons]),
                  amp_end=np.array([a.end for a in amplicons]),
                  pcr_sites=pcr_sites, hotspots=hotspots, pair_amp=pair_amp, pair_hap=pair_hap, aligner=aligner,
                  header=_bam_header(ref, params, getattr(mappy, "__version__", "unknown")))
    bam = out / f"{SAMPLE}.bam"
    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp_amplicon_") as tmp:
        tasks = [(bi, bi * BATCH_PAIRS, min(BATCH_PAIRS, n_pairs - bi * BATCH_PAIRS),
                  os.path.join(tmp, f"b{bi:05d}.bam")) for bi in range(-(-n_pairs // BATCH_PAIRS))]
        say(f"simulating + aligning {n_pairs} pairs ({depth:g} per amplicon) in {len(tasks)} batches, "
            f"{threads} worker(s)")
        if threads > 1 and sys.modules.get(__name__) is None:
            say("module not registered in sys.modules (needed to pickle tasks): using 1 worker")
            threads = 1
        if threads > 1:
            with multiprocessing.get_context("fork").Pool(threads) as pool:
                results = pool.map(_run_batch, tasks, chunksize=1)
        else:
            results = [_run_batch(t) for t in tasks]
        say("aligned; merging")
        pysam.merge("--no-PG", "-c", "-p", "-l", "6", "-@", str(threads), "-f", str(bam),
                    *[r[0] for r in results])
        pysam.index(str(bam))
    _STATE.clear()
    say(f"{bam.name} written and indexed")

    offsets = np.cumsum([0] + [r[1]["start"].size for r in results])
    keys = ("start", "end", "reverse", "hap", "amp", "ds", "de")
    reads = {k: np.concatenate([r[1][k] for r in results]) for k in keys}
    reads["dread"] = np.concatenate([r[1]["dread"] + off for r, off in zip(results, offsets, strict=False)])
    realised = realised_frequencies(variants, amplicons, reads)
    truth = out / "truth.vcf.gz"
    write_truth_vcf(truth, ref, variants, amplicons, realised, pop_fractions, params)
    arte = out / "artefacts.tsv"
    viral.write_artefacts(arte, artefact_list)
    say("truth and artefacts written")

    flagstat = ""
    if verify:
        gen.check_truth_normalised(truth, ref_path)
        flagstat = gen.check_bam(bam)
        say("verification passed (bcftools norm, quickcheck, flagstat)")
    kinds = [v.kind for v in variants]
    return AmpliconSummary(
        outdir=out, reference=ref_path, scheme_bed=bed, bam=bam, truth_vcf=truth, artefacts_tsv=arte,
        amplicons_tsv=out / "amplicons.tsv", genome_length=length, depth=depth, n_amplicons=len(amplicons),
        read_pairs=n_pairs, fractions={f"h{i}": f for i, f in enumerate(pop_fractions)},
        variant_counts={k: kinds.count(k) for k in ("SNV", "INS", "DEL")} | {"total": len(kinds)},
        under_primer=sum(lay.under_primer(v.window) for v in variants),
        artefact_counts={k: sum(a.kind == k for a in artefact_list) for k in (HOTSPOT, PCR, SLIPPAGE)},
        unread_fraction=float(1 - counted[END_MARGIN:-END_MARGIN].mean()),
        flagstat=flagstat, seconds=time.perf_counter() - t0,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--outdir", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--length", type=int, default=30_000, help="genome length in bp")
    ap.add_argument("--depth", type=float, default=10_000.0, help="mean read pairs per amplicon")
    ap.add_argument("--fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
                    help="comma-separated fractions of h1, h2, ... (h0, the reference, gets the rest)")
    ap.add_argument("--alleles-per-fraction", type=int, default=20)
    ap.add_argument("--indel-share", type=float, default=0.2, help="share of each band's alleles that are indels")
    ap.add_argument("--under-primer", type=int, default=3, help="alleles per band put under a primer")
    ap.add_argument("--amplicon-length", default="250,400", help="min,max amplicon length (primers included)")
    ap.add_argument("--read1-left-share", type=float, default=0.5, help="pairs whose read 1 is the forward read")
    ap.add_argument("--dropouts", default="auto", help="amplicons at 1-5 %% depth ('auto': one per 60)")
    ap.add_argument("--pcr-jitter", type=float, default=0.1, help="sd of the per-amplicon haplotype jitter (log)")
    ap.add_argument("--no-primer-mismatch", action="store_true", help="primer mismatches do not lower efficiency")
    ap.add_argument("--threads", type=int, default=2, help="worker processes (does not change the output)")
    ap.add_argument("--no-verify", action="store_true", help="skip the post-generation checks")
    ap.add_argument("--reference-seed", type=int, default=None,
                    help="draw the reference and primer scheme from this seed (default: --seed)")
    ap.add_argument("--no-artefacts", action="store_true",
                    help="no library error sites (strand hotspots, PCR errors, slippage): sequencer errors only")
    args = ap.parse_args(argv)
    lo, hi = (int(x) for x in args.amplicon_length.split(","))
    s = generate_amplicon_mixture(
        args.outdir, seed=args.seed, length=args.length, depth=args.depth,
        fractions=tuple(float(f) for f in args.fractions.split(",")),
        alleles_per_fraction=args.alleles_per_fraction, indel_share=args.indel_share,
        under_primer=args.under_primer, amplicon_length=(lo, hi), read1_left_share=args.read1_left_share,
        dropouts=None if args.dropouts == "auto" else int(args.dropouts), pcr_jitter=args.pcr_jitter,
        primer_mismatch=not args.no_primer_mismatch, threads=args.threads, verify=not args.no_verify,
        reference_seed=args.reference_seed, artefacts=not args.no_artefacts,
    )
    print(f"{s.n_amplicons} amplicons, {s.read_pairs} pairs, alleles {s.variant_counts} ({s.under_primer} under "
          f"primers), artefacts {s.artefact_counts}, {s.unread_fraction:.1%} unread; done in {s.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
