#!/usr/bin/env python3
"""Seeded generator of deep viral mixtures: a reference, minor haplotypes, reads and truth.

Contract
--------
``python test_data/viral.py --outdir DIR [--seed 7] [--length 30000] [--depth 5000]
[--fractions 0.5,0.2,0.1,0.05,0.02,0.01] [--snvs 24] [--indels 10] [--multiallelic 6]
[--threads 2]`` (or :func:`generate_mixture` from Python) writes into ``DIR``:

* ``virus.fa`` (+ ``.fai``) -- one contig ``virus`` of random sequence with the
  features of ``generate.py``'s references (GC ~42 %, CpG-depleted, short tandem
  repeats and homopolymers).
* ``mixture.bam`` (+ ``.bai``) -- coordinate-sorted 2 x 150 bp pairs (insert ~ N(350,
  50)) at ``depth``-fold mean depth, aligned with minimap2 (``mappy``, preset ``sr``,
  paired), read group ``ID=SM=mixture``. Each pair comes from one haplotype, drawn
  with probability equal to its fraction; the read name says which: ``h3:00001234``
  is pair 1234 of haplotype ``h3``. ``h0`` is the reference itself and carries the
  rest of the population (1 - sum of ``fractions``); ``h1`` .. ``hN`` have the given
  fractions (by default 50, 20, 10, 5, 2 and 1 %).
* ``truth.vcf.gz`` (+ ``.tbi``) -- VCFv4.2, sites only, one biallelic record per true
  allele, left-aligned and parsimonious (``bcftools norm -f virus.fa`` form). Each
  minor haplotype carries private SNVs and 1-5 bp insertions/deletions; at
  ``multiallelic_sites`` positions two haplotypes carry different alternative bases
  (two records at one POS). INFO: ``AF`` realised frequency in the reads, ``HF``
  designed fraction, ``DP`` informative reads, ``HAP`` carrying haplotypes, ``VT``
  SNV/INS/DEL (see :func:`realised_frequencies` for "informative").
* ``artefacts.tsv`` -- systematic errors put into the reads that are NOT variants
  (columns ``chrom pos ref alt kind rate``, ``pos`` 1-based): ``strand_hotspot`` (a
  base after a ``GG`` motif miscalled at Q37 in a fraction ``rate`` of the reads
  aligned on the forward strand, about one site per kb) and ``pcr`` (a substitution
  copied into both strands of a fraction ``rate`` of the fragments, as an early-cycle
  PCR error would be, about one site per 1.5 kb).

Besides these artefacts the reads carry ``generate.py``'s errors: quality-calibrated
substitutions (binned Q2/12/23/37), 1-2 bp slippage indels, chimeras and junk reads.
Every variant and artefact lies >= 300 bp from the contig ends, and the windows in
which they could be placed equivalently are >= 40 bp apart.

``--true-alignment`` writes each read where it was drawn from instead of aligning it
(SNV-only mixtures; for very deep data, see :func:`generate_mixture`).

The output is a pure function of the parameters (``outdir`` and ``threads`` excepted)
and of the installed numpy, pysam and mappy: same seed, same bytes. Needs
``test_data/generate.py`` next to this file, numpy, pysam and ``mappy``.
"""

from __future__ import annotations

import argparse
import array
import hashlib
import importlib.util
import itertools
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pysam

CONTIG = "virus"
SAMPLE = "mixture"
DEFAULT_FRACTIONS: tuple[float, ...] = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
DEFAULT_DEPTH = 5000.0
END_MARGIN = 300  # no variant or artefact closer than this to a contig end
MIN_GAP = 40  # bp between the ambiguity windows of any two variants / artefacts
INDEL_FLANK = 5  # an indel's informative reads span its window plus this on each side
BATCH_PAIRS = 5000  # read pairs per simulation/alignment batch (and per seed)
HOTSPOT_SPACING = 1000.0  # bp per strand-specific error hotspot
PCR_SPACING = 1500.0  # bp per early-cycle PCR error site
HOTSPOT = "strand_hotspot"
PCR = "pcr"
_SKIP = 0x4 | 0x100 | 0x800  # unmapped, secondary, supplementary: not informative


def _load_generate() -> ModuleType:
    """``test_data/generate.py``, imported once and registered as ``generate``."""
    mod = sys.modules.get("generate")
    here = Path(__file__).resolve().parent / "generate.py"
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve() == here:
        return mod
    spec = importlib.util.spec_from_file_location("generate", here)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {here}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["generate"] = mod
    spec.loader.exec_module(mod)
    return mod


gen = _load_generate()


# --------------------------------------------------------------------------- #
# Data classes
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class MixtureVariant:
    """One true allele (VCF coordinates) and the haplotypes that carry it.

    ``window`` is 0-based half-open: every reference base an aligner needs to place
    the allele, from the anchor base to the first base after its rightmost equivalent
    placement (for an SNV, the base itself).
    """

    pos: int
    ref: str
    alt: str
    haps: tuple[int, ...]
    window: tuple[int, int]

    @property
    def kind(self) -> str:
        """``SNV``, ``INS`` or ``DEL``."""
        if len(self.ref) == len(self.alt) == 1:
            return "SNV"
        return "INS" if len(self.alt) > len(self.ref) else "DEL"


@dataclass(frozen=True)
class Artefact:
    """A systematic error site (not a variant): 1-based ``pos``, one substitution."""

    pos: int
    ref: str
    alt: str
    kind: str  # HOTSPOT or PCR
    rate: float


@dataclass
class MixtureSummary:
    """What :func:`generate_mixture` wrote (paths inside ``outdir``) and how long it took."""

    outdir: Path
    reference: Path
    bam: Path
    truth_vcf: Path
    artefacts_tsv: Path
    genome_length: int
    depth: float
    fractions: dict[str, float]  # haplotype id -> designed fraction, h0 included
    read_pairs: int
    variant_counts: dict[str, int]
    artefact_counts: dict[str, int]
    flagstat: str
    seconds: float


@dataclass(frozen=True)
class _Population:
    """Everything a read-simulation batch needs, in haplotype coordinates."""

    seq: np.ndarray  # all haplotypes' base codes, concatenated
    offsets: np.ndarray  # start of each haplotype in ``seq``
    lengths: np.ndarray
    fractions: np.ndarray  # probability of each haplotype, h0 first
    artefacts: tuple[Artefact, ...]
    artefact_hpos: np.ndarray  # (artefact, haplotype) -> 0-based position in that haplotype


@dataclass
class SimulatedPairs:
    """A batch of simulated pairs. ``seq*``/``qual*`` are ``(n, read_length)`` base codes
    0-4 (ACGTN) and qualities in sequencing orientation; per pair, ``hap`` is the
    haplotype, ``start``/``insert`` the fragment in haplotype coordinates and
    ``reverse`` whether read 1 was read from the fragment's reverse strand."""

    seq1: np.ndarray
    qual1: np.ndarray
    seq2: np.ndarray
    qual2: np.ndarray
    hap: np.ndarray
    start: np.ndarray
    insert: np.ndarray
    reverse: np.ndarray


@dataclass
class _ReadSpans:
    """Primary mapped reads: aligned reference span, haplotype, deletions (0-based)."""

    start: np.ndarray
    end: np.ndarray
    hap: np.ndarray
    del_start: np.ndarray
    del_end: np.ndarray
    del_hap: np.ndarray


# --------------------------------------------------------------------------- #
# Design: variants and artefacts
# --------------------------------------------------------------------------- #
_TRANSITION = {"A": "G", "G": "A", "C": "T", "T": "C"}


def _snv_alt(rng: np.random.Generator, ref_base: str, avoid: str = "") -> str:
    """An alternative base, transitions twice as likely as each transversion pair."""
    if rng.random() < 2 / 3 and _TRANSITION[ref_base] not in avoid:
        return _TRANSITION[ref_base]
    choices = [b for b in "ACGT" if b != ref_base and b != _TRANSITION[ref_base] and b not in avoid]
    if not choices:
        choices = [b for b in "ACGT" if b != ref_base and b not in avoid]
    return choices[int(rng.integers(len(choices)))]


def _indel_length(rng: np.random.Generator) -> int:
    weights = 0.6 ** np.arange(5)
    return int(rng.choice(np.arange(1, 6), p=weights / weights.sum()))


def _draw_indel(
    rng: np.random.Generator, ref: str, lo: int, hi: int, repeat: tuple[int, int, str] | None
) -> tuple[int, str, str, tuple[int, int]]:
    """One left-normalised 1-5 bp insertion or deletion: ``(pos, ref, alt, window)``.

    With ``repeat``, the indel adds or removes whole units of that tandem repeat.
    """
    is_del = rng.random() < 0.5
    if repeat is not None:
        r_start, r_end, unit = repeat
        max_units = max(1, 5 // len(unit))
        m = int(rng.integers(1, max_units + 1))
        if is_del:
            m = max(1, min(m, (r_end - r_start) // len(unit) - 1))
        p, length, ins = r_start, m * len(unit), unit * m
    else:
        p = int(rng.integers(lo, hi))
        length = _indel_length(rng)
        ins = "".join("ACGT"[int(b)] for b in rng.integers(0, 4, length))
    if is_del:
        left, right, k = gen.normalise_deletion(ref, p, length)
        return left, ref[left - 1 : left + k], ref[left - 1], (left - 1, right + k + 1)
    left, right, s = gen.normalise_insertion(ref, p, ins)
    return left, ref[left - 1], ref[left - 1] + s, (left - 1, right + 1)


def _multiallelic_pairs(fractions: tuple[float, ...], n: int) -> list[tuple[int, int]]:
    """Haplotype pairs for the multi-allelic sites: pairs among the haplotypes at
    <= 10 % first (all of them when there are enough), then the others, cycled."""
    haps = list(range(1, len(fractions) + 1))
    low = [h for h in haps if fractions[h - 1] <= 0.1 + 1e-12]
    pairs = list(itertools.combinations(low, 2))
    pairs += [p for p in itertools.combinations(haps, 2) if p not in pairs]
    if n and not pairs:
        raise ValueError("multi-allelic sites need at least two minor haplotypes")
    return [pairs[i % len(pairs)] for i in range(n)]


def design_mixture(
    rng: np.random.Generator,
    ref: str,
    repeats: list[tuple[int, int, str]],
    fractions: tuple[float, ...],
    snvs_per_haplotype: int,
    indels_per_haplotype: int,
    multiallelic_sites: int,
    hotspot_rates: tuple[float, float] = (0.005, 0.04),
    pcr_rates: tuple[float, float] = (0.001, 0.004),
    repeat_indel_fraction: float = 0.3,
) -> tuple[list[MixtureVariant], list[Artefact]]:
    """Draw the haplotypes' variants and the artefact sites on ``ref``.

    Haplotype ``h`` (1-based) carries ``snvs_per_haplotype`` SNVs and
    ``indels_per_haplotype`` indels of its own; each multi-allelic site gives two
    haplotypes different alternative bases. Artefact rates are uniform in
    ``hotspot_rates`` / ``pcr_rates``. Returns both lists sorted by position.
    """
    lo, hi = END_MARGIN, len(ref) - END_MARGIN
    occ = gen._Occupancy(MIN_GAP)
    requests: list[tuple[str, tuple[int, ...]]] = []
    for h in range(1, len(fractions) + 1):
        requests += [("snv", (h,))] * snvs_per_haplotype + [("indel", (h,))] * indels_per_haplotype
    requests += [("multi", pair) for pair in _multiallelic_pairs(fractions, multiallelic_sites)]
    order = rng.permutation(len(requests))
    usable = [r for r in repeats if lo + 20 < r[0] and r[1] + 20 < hi]
    rep_iter = iter(rng.permutation(len(usable)).tolist())

    variants: list[MixtureVariant] = []
    for idx in order.tolist():
        kind, haps = requests[idx]
        for _attempt in range(2000):
            if kind == "indel":
                rep = next(rep_iter, None) if rng.random() < repeat_indel_fraction else None
                pos, r, a, win = _draw_indel(rng, ref, lo, hi, usable[rep] if rep is not None else None)
                alleles = [(r, a)]
            else:
                p = int(rng.integers(lo, hi))
                pos, r, win = p + 1, ref[p], (p, p + 1)
                first = _snv_alt(rng, r)
                alleles = [(r, first)] if kind == "snv" else [(r, first), (r, _snv_alt(rng, r, avoid=first))]
            if win[0] >= lo and win[1] <= hi and occ.try_add(*win):
                if kind == "multi":
                    variants += [MixtureVariant(pos, r, a, (h,), win) for (r, a), h in zip(alleles, haps, strict=True)]
                else:
                    variants.append(MixtureVariant(pos, alleles[0][0], alleles[0][1], haps, win))
                break
        else:
            raise ValueError(
                f"cannot place {len(requests)} variants {MIN_GAP} bp apart on {len(ref)} bp: "
                "use a longer genome or fewer variants per haplotype"
            )

    usable_len = hi - lo
    n_hot = max(1, round(usable_len / HOTSPOT_SPACING))
    n_pcr = max(1, round(usable_len / PCR_SPACING))
    gg = [p for p in range(max(lo, 2), hi) if ref[p - 2 : p] == "GG"]
    artefacts: list[Artefact] = []
    for kind, n in ((HOTSPOT, n_hot), (PCR, n_pcr)):
        placed = 0
        for _attempt in range(2000 * n):
            if placed == n:
                break
            p = gg[int(rng.integers(len(gg)))] if kind == HOTSPOT else int(rng.integers(lo, hi))
            alt = "ACGT"[(("ACGT".index(ref[p])) + int(rng.integers(1, 4))) % 4]
            rate = float(rng.uniform(*(hotspot_rates if kind == HOTSPOT else pcr_rates)))
            if occ.try_add(p, p + 1):
                artefacts.append(Artefact(p + 1, ref[p], alt, kind, round(rate, 5)))
                placed += 1
        if placed < n:
            raise ValueError(f"cannot place {n} {kind} artefact sites on {len(ref)} bp")
    variants.sort(key=lambda v: (v.pos, v.alt))
    artefacts.sort(key=lambda a: a.pos)
    return variants, artefacts


def haplotype_sequences(ref: str, variants: list[MixtureVariant], n_haps: int) -> list[str]:
    """The sequences of ``h0`` (the reference) .. ``h<n_haps - 1>``."""
    out = [ref]
    for h in range(1, n_haps):
        mine = [gen.Variant(CONTIG, v.pos, v.ref, v.alt) for v in variants if h in v.haps]
        out.append(gen.apply_variants(ref, mine))
    return out


def _hap_position(p: int, variants: list[MixtureVariant], h: int) -> int:
    """0-based reference position ``p`` (not inside a variant) in haplotype ``h``."""
    shift = sum(len(v.alt) - len(v.ref) for v in variants if h in v.haps and v.pos - 1 < p)
    return p + shift


# --------------------------------------------------------------------------- #
# Reads
# --------------------------------------------------------------------------- #
def simulate_batch(rng: np.random.Generator, pop: _Population, n_pairs: int, model: Any) -> SimulatedPairs:
    """Simulate ``n_pairs`` pairs from the mixture ``pop`` with a ``generate.ReadModel``.

    Artefact bases are forced to Q37 and are never overwritten by random errors.
    """
    rl = model.read_length
    ext = rl + 10  # spare bases for indel errors
    ar = np.arange(ext)
    hap = rng.choice(pop.fractions.size, size=n_pairs, p=pop.fractions)
    hlen = pop.lengths[hap]
    ins = np.rint(rng.normal(model.insert_mean, model.insert_sd, size=n_pairs)).astype(np.int64)
    ins = np.clip(ins, ext + 10, min(int(pop.lengths.min()), int(model.insert_mean + 6 * model.insert_sd)))
    starts = (rng.random(n_pairs) * (hlen - ins + 1)).astype(np.int64)
    base = pop.offsets[hap] + starts
    fwd = pop.seq[base[:, None] + ar]  # forward-strand end of the fragment
    rev = gen._COMPLEMENT[pop.seq[(base + ins - 1)[:, None] - ar]]  # reverse-strand end
    forced_f = np.zeros(fwd.shape, dtype=bool)
    forced_r = np.zeros(rev.shape, dtype=bool)

    codes = {b: i for i, b in enumerate("ACGT")}
    for k, art in enumerate(pop.artefacts):
        j = pop.artefact_hpos[k][hap] - starts  # offset of the site in the fragment
        u = rng.random(n_pairs)
        alt = codes[art.alt]
        if art.kind == HOTSPOT:  # forward-strand reads only
            rows = np.flatnonzero((j >= 0) & (j < ext) & (u < art.rate))
            fwd[rows, j[rows]] = alt
            forced_f[rows, j[rows]] = True
        else:  # the fragment itself carries the error: both strands
            rows = np.flatnonzero((j >= 0) & (j < ins) & (u < art.rate))
            jf, jr = j[rows], (ins - 1 - j)[rows]
            rf, rr = rows[jf < ext], rows[jr < ext]
            fwd[rf, jf[jf < ext]] = alt
            forced_f[rf, jf[jf < ext]] = True
            rev[rr, jr[jr < ext]] = 3 - alt
            forced_r[rr, jr[jr < ext]] = True

    reverse = rng.random(n_pairs) < 0.5  # fragment read from the reverse strand
    flip = reverse[:, None]
    r1, r2 = np.where(flip, rev, fwd), np.where(flip, fwd, rev)
    f1, f2 = np.where(flip, forced_r, forced_f), np.where(flip, forced_f, forced_r)

    # chimeras: read 1 switches to another locus of the same haplotype after 25-125 bp
    for i in np.flatnonzero(rng.random(n_pairs) < model.chimera_fraction):
        k = int(rng.integers(25, 126))
        src = pop.offsets[hap[i]] + int(rng.integers(0, hlen[i] - ext))
        r1[i, k:] = pop.seq[src : src + ext - k]
        f1[i, k:] = False
    # junk: read 1, read 2 or both are random sequence
    junk = np.flatnonzero(rng.random(n_pairs) < model.junk_fraction)
    which = rng.choice(3, size=junk.size, p=[0.375, 0.375, 0.25])
    for i, w in zip(junk, which, strict=True):
        if w != 1:
            r1[i] = rng.integers(0, 4, size=ext)
            f1[i] = False
        if w != 0:
            r2[i] = rng.integers(0, 4, size=ext)
            f2[i] = False

    table = gen._quality_tables(rl)
    out: list[np.ndarray] = []
    for reads, forced, worse in ((r1, f1, 1.0), (r2, f2, 1.4)):
        p_read = 1.0 - (1.0 - model.indel_error_rate) ** rl
        for i in np.flatnonzero(rng.random(n_pairs) < p_read):
            pos = int(rng.integers(10, rl - 10))
            length = 1 if rng.random() < 0.85 else 2
            if rng.random() < 0.5:  # deletion
                keep = np.r_[0:pos, pos + length : ext]
            else:  # insertion: slippage repeats the preceding base
                keep = np.r_[0:pos, np.repeat(pos - 1, length), pos:ext][:ext]
            reads[i, : keep.size] = reads[i, keep]
            forced[i, : keep.size] = forced[i, keep]
        seq = np.ascontiguousarray(reads[:, :rl])
        fz = forced[:, :rl]
        qual = gen._draw_qualities(rng, n_pairs, table * worse)
        qual[fz] = 37
        err = (rng.random(seq.shape) < 10.0 ** (-qual.astype(np.float64) / 10.0)) & ~fz
        seq[err] = (seq[err] + rng.integers(1, 4, size=int(err.sum())).astype(np.uint8)) % 4
        seq[(qual == 2) & (rng.random(seq.shape) < model.n_fraction_q2)] = 4
        out += [seq, qual]
    return SimulatedPairs(out[0], out[1], out[2], out[3], hap, starts, ins, reverse)


_STATE: dict[str, Any] = {}  # shared with forked workers


def _mapped_pairs(
    sp: SimulatedPairs, header: pysam.AlignmentHeader, names: list[str]
) -> Iterator[list[pysam.AlignedSegment]]:
    """The records of each pair, aligned with minimap2 (``mappy``) like ``generate.py``."""
    import mappy

    rl = sp.seq1.shape[1]
    b1 = gen._BASE_LUT[sp.seq1].tobytes().decode()
    b2 = gen._BASE_LUT[sp.seq2].tobytes().decode()
    aligner, contigs = _STATE["aligner"], _STATE["contigs"]
    buf = mappy.ThreadBuffer()
    for i, name in enumerate(names):
        r1, r2 = b1[i * rl : (i + 1) * rl], b2[i * rl : (i + 1) * rl]
        hits = list(aligner.map(r1, r2, buf=buf))
        yield gen._pair_records(header, contigs, name, (r1, r2), (sp.qual1[i], sp.qual2[i]), hits, SAMPLE)


def _true_pairs(
    sp: SimulatedPairs, header: pysam.AlignmentHeader, names: list[str]
) -> Iterator[list[pysam.AlignedSegment]]:
    """The records of each pair at the place it was drawn from: for mixtures without
    indels, simulated without indel errors, chimeras or junk (every read is ``150M``)."""
    ref = _STATE["ref_codes"]
    n, rl = sp.seq1.shape
    fwd_start = sp.start
    rev_start = sp.start + sp.insert - rl
    # reads as they lie on the reference: forward reads as sequenced, reverse ones complemented back
    fwd_seq = np.where(sp.reverse[:, None], sp.seq2, sp.seq1)
    fwd_qual = np.where(sp.reverse[:, None], sp.qual2, sp.qual1)
    rev_seq = gen._COMPLEMENT[np.where(sp.reverse[:, None], sp.seq1, sp.seq2)[:, ::-1]]
    rev_qual = np.where(sp.reverse[:, None], sp.qual1, sp.qual2)[:, ::-1]
    cigar = [(0, rl)]
    for i, name in enumerate(names):
        pair = []
        for is_rev, st, seq, qual in (
            (False, int(fwd_start[i]), fwd_seq[i], fwd_qual[i]),
            (True, int(rev_start[i]), rev_seq[i], rev_qual[i]),
        ):
            a = pysam.AlignedSegment(header)
            a.query_name = name
            first = is_rev == bool(sp.reverse[i])  # read 1 is the reverse read iff the pair is flipped
            a.flag = 0x1 | 0x2 | (0x40 if first else 0x80) | (0x10 if is_rev else 0x20)
            a.reference_id = a.next_reference_id = 0
            a.reference_start = st
            a.next_reference_start = int(fwd_start[i] if is_rev else rev_start[i])
            a.template_length = -int(sp.insert[i]) if is_rev else int(sp.insert[i])
            a.mapping_quality = 60
            a.cigartuples = cigar
            a.query_sequence = gen._BASE_LUT[seq].tobytes().decode()
            a.query_qualities = array.array("B", qual.tobytes())
            nm, md = _ungapped_nm_md(seq, ref[st : st + rl])
            a.set_tag("NM", nm, "i")
            a.set_tag("MD", md, "Z")
            a.set_tag("MC", f"{rl}M", "Z")
            a.set_tag("RG", SAMPLE, "Z")
            pair.append(a)
        yield pair


def _ungapped_nm_md(seq: np.ndarray, ref: np.ndarray) -> tuple[int, str]:
    """``NM`` and ``MD`` of an alignment without gaps (base codes; N is a mismatch)."""
    mismatches = np.flatnonzero((seq != ref) | (seq == 4)).tolist()
    md: list[str] = []
    last = 0
    for p in mismatches:
        md.append(f"{p - last}{'ACGT'[ref[p]]}")
        last = p + 1
    md.append(str(len(seq) - last))
    return len(mismatches), "".join(md)


def _run_batch(task: tuple[int, int, str]) -> tuple[str, _ReadSpans]:
    """Simulate, align and sort one batch into a BAM chunk; ``task`` is
    ``(batch_index, n_pairs, chunk_path)``. Returns the chunk and its primary reads."""
    bi, n_pairs, chunk = task
    st = _STATE
    rng = np.random.default_rng([st["seed"], 3, bi])
    sp = simulate_batch(rng, st["population"], n_pairs, st["model"])
    header = pysam.AlignmentHeader.from_dict(st["header"])
    names = [f"h{h}:{bi * BATCH_PAIRS + i:08d}" for i, h in enumerate(sp.hap.tolist())]
    pairs = _true_pairs(sp, header, names) if st["true_alignment"] else _mapped_pairs(sp, header, names)
    starts: list[int] = []
    ends: list[int] = []
    haps: list[int] = []
    dels: list[tuple[int, int, int]] = []
    unsorted = chunk + ".unsorted.bam"
    with pysam.AlignmentFile(unsorted, "wbu", header=header) as out:
        for h, records in zip(sp.hap.tolist(), pairs, strict=True):
            for rec in records:
                out.write(rec)
                if rec.flag & _SKIP:
                    continue
                cigar = rec.cigartuples or []
                starts.append(rec.reference_start)
                ends.append(rec.reference_end or rec.reference_start)
                haps.append(h)
                if len(cigar) > 1 and any(op in (2, 3) for op, _ in cigar):
                    p = rec.reference_start
                    for op, n in cigar:
                        if op in (2, 3):
                            dels.append((p, p + n, h))
                        if op in (0, 2, 3, 7, 8):
                            p += n
    pysam.sort("--no-PG", "-l", "1", "-m", "512M", "-T", chunk + ".tmp", "-o", chunk, unsorted)
    os.remove(unsorted)
    d = np.array(dels, dtype=np.int64).reshape(-1, 3)
    spans = _ReadSpans(
        np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64), np.array(haps, dtype=np.int64),
        d[:, 0], d[:, 1], d[:, 2],
    )
    return chunk, spans


# --------------------------------------------------------------------------- #
# Truth
# --------------------------------------------------------------------------- #
def realised_frequencies(
    variants: list[MixtureVariant], spans: _ReadSpans, n_haps: int
) -> list[tuple[float, int]]:
    """``(AF, DP)`` of each variant among its informative primary mapped reads.

    Informative for an SNV: the read has an aligned base at POS (no deletion there,
    not soft-clipped). For an indel: the read's aligned span covers the allele's whole
    window plus ``INDEL_FLANK`` bases on each side, i.e. 1-based
    [POS - 5, POS + len(REF) + 5] when the indel cannot be shifted. AF is the fraction
    of those reads whose haplotype (from the read name) carries the allele.
    """
    order = np.argsort(spans.start, kind="stable")
    start, end, hap = spans.start[order], spans.end[order], spans.hap[order]
    max_span = int((end - start).max()) if start.size else 0
    out: list[tuple[float, int]] = []
    for v in variants:
        if v.kind == "SNV":
            lo_pos, hi_pos = v.pos - 1, v.pos  # [lo_pos, hi_pos) must be aligned
        else:
            lo_pos, hi_pos = v.window[0] - INDEL_FLANK, v.window[1] + INDEL_FLANK
        a = int(np.searchsorted(start, hi_pos - max_span, side="left"))
        b = int(np.searchsorted(start, lo_pos, side="right"))
        sel = end[a:b] >= hi_pos
        counts = np.bincount(hap[a:b][sel], minlength=n_haps)
        if v.kind == "SNV":
            gap = (spans.del_start <= lo_pos) & (spans.del_end > lo_pos)
            counts -= np.bincount(spans.del_hap[gap], minlength=n_haps)
        dp = int(counts.sum())
        alt = int(counts[list(v.haps)].sum())
        out.append((alt / dp if dp else 0.0, dp))
    return out


def write_truth_vcf(
    path_gz: Path,
    ref: str,
    variants: list[MixtureVariant],
    realised: list[tuple[float, int]],
    fractions: list[float],
    params: str,
) -> None:
    """Sites-only, bgzipped and tabix-indexed VCFv4.2 of the true alleles."""
    haps = ",".join(f"h{i}:{f:g}" for i, f in enumerate(fractions))
    lines = [
        "##fileformat=VCFv4.2",
        f"##source=test_data/viral.py {params}",
        "##reference=virus.fa",
        f"##contig=<ID={CONTIG},length={len(ref)},md5={hashlib.md5(ref.encode()).hexdigest()}>",
        f"##haplotypes={haps}",
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##INFO=<ID=AF,Number=A,Type=Float,Description="Realised allele frequency: fraction of the informative '
        'primary reads that come from a carrying haplotype (read names)">',
        '##INFO=<ID=HF,Number=A,Type=Float,Description="Designed frequency: sum of the carrying haplotypes\' '
        'fractions">',
        '##INFO=<ID=DP,Number=1,Type=Integer,Description="Informative primary mapped reads: an aligned base at POS '
        '(SNV), or an aligned span covering the indel\'s placement window +-5 bp">',
        '##INFO=<ID=HAP,Number=.,Type=String,Description="Haplotypes carrying the allele">',
        '##INFO=<ID=VT,Number=1,Type=String,Description="Variant type: SNV, INS or DEL">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    for v, (af, dp) in zip(variants, realised, strict=True):
        hf = sum(fractions[h] for h in v.haps)
        info = f"AF={af:.5f};HF={hf:.5g};DP={dp};HAP={','.join(f'h{h}' for h in v.haps)};VT={v.kind}"
        lines.append(f"{CONTIG}\t{v.pos}\t.\t{v.ref}\t{v.alt}\t.\tPASS\t{info}")
    plain = path_gz.with_suffix("")
    plain.write_text("\n".join(lines) + "\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True, keep_original=False)


def write_artefacts(path: Path, artefacts: list[Artefact]) -> None:
    lines = ["chrom\tpos\tref\talt\tkind\trate"]
    lines += [f"{CONTIG}\t{a.pos}\t{a.ref}\t{a.alt}\t{a.kind}\t{a.rate:.5f}" for a in artefacts]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #
def _bam_header(ref: str, params: str, mappy_version: str | None) -> dict[str, Any]:
    """Header without timestamps or paths; ``mappy_version`` None: true alignments."""
    pg: list[dict[str, str]] = [{"ID": "viral.py", "PN": "test_data/viral.py", "VN": "1", "CL": f"viral.py {params}"}]
    if mappy_version is not None:
        pg.append({
            "ID": "minimap2",
            "PN": "minimap2",
            "PP": "viral.py",
            "VN": f"mappy-{mappy_version}",
            "CL": "mappy.Aligner('virus.fa', preset='sr').map(read1, read2)",
        })
    return {
        "HD": {"VN": "1.6", "SO": "unsorted"},
        "SQ": [{"SN": CONTIG, "LN": len(ref), "M5": hashlib.md5(ref.encode()).hexdigest()}],
        "RG": [{"ID": SAMPLE, "SM": SAMPLE, "PL": "ILLUMINA", "LB": "lib1"}],
        "PG": pg,
    }


def generate_mixture(
    outdir: str | os.PathLike[str],
    seed: int = 7,
    genome_length: int = 30_000,
    depth: float = DEFAULT_DEPTH,
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
    snvs_per_haplotype: int = 24,
    indels_per_haplotype: int = 10,
    multiallelic_sites: int = 6,
    hotspot_rates: tuple[float, float] = (0.005, 0.04),
    pcr_rates: tuple[float, float] = (0.001, 0.004),
    threads: int = 2,
    true_alignment: bool = False,
    verify: bool = True,
    log: bool = True,
) -> MixtureSummary:
    """Write reference, mixture BAM, truth VCF and artefact list into ``outdir``.

    ``hotspot_rates`` and ``pcr_rates`` bound the uniform draw of each artefact
    site's rate. ``true_alignment`` writes each read where it was drawn from instead of
    aligning it with minimap2, several times faster, for SNV-only mixtures
    (``indels_per_haplotype=0``); the reads then have no indel errors, chimeras or junk.
    ``threads`` changes only the speed, never the output.
    """
    import mappy

    if true_alignment and indels_per_haplotype:
        raise ValueError("true_alignment needs a mixture without indels (indels_per_haplotype=0)")

    t0 = time.perf_counter()
    rest = 1.0 - sum(fractions)
    if rest < -1e-9 or any(f <= 0 for f in fractions):
        raise ValueError(f"fractions must be positive and sum to at most 1: {fractions}")
    pop_fractions = [max(rest, 0.0), *fractions]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    params = (
        f"--seed {seed} --length {genome_length} --depth {depth:g} --fractions {','.join(f'{f:g}' for f in fractions)}"
        f" --snvs {snvs_per_haplotype} --indels {indels_per_haplotype} --multiallelic {multiallelic_sites}"
        f" --hotspot-rates {hotspot_rates[0]:g},{hotspot_rates[1]:g} --pcr-rates {pcr_rates[0]:g},{pcr_rates[1]:g}"
        + (" --true-alignment" if true_alignment else "")
    )

    def say(msg: str) -> None:
        if log:
            print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    codes, repeats = gen._random_contig(np.random.default_rng([seed, 1]), genome_length)
    ref = gen._BASE_LUT[codes].tobytes().decode()
    ref_path = out / "virus.fa"
    gen.write_fasta(ref_path, {CONTIG: ref})

    variants, artefacts = design_mixture(
        np.random.default_rng([seed, 2]), ref, repeats, tuple(fractions),
        snvs_per_haplotype, indels_per_haplotype, multiallelic_sites, hotspot_rates, pcr_rates,
    )
    n_haps = len(pop_fractions)
    haps = haplotype_sequences(ref, variants, n_haps)
    hap_codes = [np.searchsorted(gen._BASE_LUT[:4], np.frombuffer(h.encode(), dtype=np.uint8)) for h in haps]
    lengths = np.array([len(h) for h in haps], dtype=np.int64)
    population = _Population(
        seq=np.concatenate(hap_codes).astype(np.uint8),
        offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        lengths=lengths,
        fractions=np.array(pop_fractions) / sum(pop_fractions),
        artefacts=tuple(artefacts),
        artefact_hpos=np.array(
            [[_hap_position(a.pos - 1, variants, h) for h in range(n_haps)] for a in artefacts], dtype=np.int64
        ).reshape(len(artefacts), n_haps),
    )
    say(f"design: {len(variants)} true alleles on {n_haps - 1} minor haplotypes, {len(artefacts)} artefact sites")

    if true_alignment:  # every read is an exact 150M placement: no indel errors, chimeras or junk
        model = gen.ReadModel(indel_error_rate=0.0, junk_fraction=0.0, chimera_fraction=0.0)
        aligner, mappy_version = None, None
    else:
        model = gen.ReadModel()
        aligner = mappy.Aligner(str(ref_path), preset="sr")
        if not aligner:
            raise RuntimeError(f"failed to build the minimap2 index of {ref_path}")
        mappy_version = getattr(mappy, "__version__", "unknown")
    n_pairs = round(depth * genome_length / (2 * model.read_length))
    _STATE.clear()
    _STATE.update(
        seed=seed, population=population, model=model, aligner=aligner, contigs={CONTIG: ref},
        ref_codes=codes.astype(np.uint8), true_alignment=true_alignment,
        header=_bam_header(ref, params, mappy_version),
    )
    bam = out / f"{SAMPLE}.bam"
    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp_viral_") as tmp:
        tasks = [
            (bi, min(BATCH_PAIRS, n_pairs - bi * BATCH_PAIRS), os.path.join(tmp, f"b{bi:05d}.bam"))
            for bi in range(-(-n_pairs // BATCH_PAIRS))
        ]
        say(f"simulating + aligning {n_pairs} pairs ({depth:g}x) in {len(tasks)} batches, {threads} worker(s)")
        if threads > 1 and sys.modules.get(__name__) is None:
            say("module not registered in sys.modules (needed to pickle tasks): using 1 worker")
            threads = 1
        if threads > 1:
            with multiprocessing.get_context("fork").Pool(threads) as pool:
                results = pool.map(_run_batch, tasks, chunksize=1)
        else:
            results = [_run_batch(t) for t in tasks]
        say("aligned; merging")
        chunks = [r[0] for r in results]
        # samtools merge breaks ties by input order; its -@ threads only compress: same bytes for any -@
        pysam.merge("--no-PG", "-c", "-p", "-l", "6", "-@", str(threads), "-f", str(bam), *chunks)
        pysam.index(str(bam))
    _STATE.clear()
    say(f"{bam.name} written and indexed")

    spans = _ReadSpans(*(np.concatenate([getattr(r[1], f.name) for r in results]) for f in fields(_ReadSpans)))
    realised = realised_frequencies(variants, spans, n_haps)
    truth = out / "truth.vcf.gz"
    write_truth_vcf(truth, ref, variants, realised, pop_fractions, params)
    arte = out / "artefacts.tsv"
    write_artefacts(arte, artefacts)
    say("truth and artefacts written")

    flagstat = ""
    if verify:
        gen.check_truth_normalised(truth, ref_path)
        flagstat = gen.check_bam(bam)
        say("verification passed (bcftools norm, quickcheck, flagstat)")

    kinds = [v.kind for v in variants]
    return MixtureSummary(
        outdir=out,
        reference=ref_path,
        bam=bam,
        truth_vcf=truth,
        artefacts_tsv=arte,
        genome_length=genome_length,
        depth=depth,
        fractions={f"h{i}": f for i, f in enumerate(pop_fractions)},
        read_pairs=n_pairs,
        variant_counts={k: kinds.count(k) for k in ("SNV", "INS", "DEL")} | {"total": len(kinds)},
        artefact_counts={k: sum(a.kind == k for a in artefacts) for k in (HOTSPOT, PCR)},
        flagstat=flagstat,
        seconds=time.perf_counter() - t0,
    )


def _pair(text: str) -> tuple[float, float]:
    lo, hi = (float(x) for x in text.split(","))
    return lo, hi


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--outdir", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--length", type=int, default=30_000, help="genome length in bp")
    ap.add_argument("--depth", type=float, default=DEFAULT_DEPTH, help="mean read depth")
    ap.add_argument("--fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
                    help="comma-separated fractions of h1, h2, ... (h0, the reference, gets the rest)")
    ap.add_argument("--snvs", type=int, default=24, help="SNVs per minor haplotype")
    ap.add_argument("--indels", type=int, default=10, help="1-5 bp indels per minor haplotype")
    ap.add_argument("--multiallelic", type=int, default=6, help="sites where two haplotypes carry different SNVs")
    ap.add_argument("--hotspot-rates", default="0.005,0.04", help="bounds of the strand hotspots' error rates")
    ap.add_argument("--pcr-rates", default="0.001,0.004", help="bounds of the PCR errors' fragment fractions")
    ap.add_argument("--threads", type=int, default=2, help="worker processes (does not change the output)")
    ap.add_argument("--true-alignment", action="store_true",
                    help="write reads at their true place instead of aligning them (needs --indels 0)")
    ap.add_argument("--no-verify", action="store_true", help="skip the post-generation checks")
    args = ap.parse_args(argv)
    s = generate_mixture(
        args.outdir, seed=args.seed, genome_length=args.length, depth=args.depth,
        fractions=tuple(float(f) for f in args.fractions.split(",")),
        hotspot_rates=_pair(args.hotspot_rates), pcr_rates=_pair(args.pcr_rates),
        snvs_per_haplotype=args.snvs, indels_per_haplotype=args.indels, multiallelic_sites=args.multiallelic,
        threads=args.threads, true_alignment=args.true_alignment, verify=not args.no_verify,
    )
    print(f"{s.read_pairs} pairs, variants {s.variant_counts}, artefacts {s.artefact_counts}; "
          f"done in {s.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
