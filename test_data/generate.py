#!/usr/bin/env python3
"""Seeded, deterministic generator for the variant-calling pipeline's test data.

Contract
--------
``python test_data/generate.py [--outdir DIR] [--seed 42] [--genome-size 310000]
[--coverage 20] [--contigs 3] [--samples 2] [--threads N] [--fastq]`` (or
``generate(...)`` from Python) writes into ``DIR``:

* ``ref.fa`` + ``ref.fa.fai`` -- reference with contigs ``chr1`` .. ``chrN``
  (decreasing lengths summing to ``genome_size``), 60 bases per FASTA line,
  upper case, GC ~42 %, CpG-depleted, with short tandem repeats and
  homopolymers sprinkled in (no long exact repeats).
* ``truth/sampleA.vcf.gz`` / ``truth/sampleB.vcf.gz`` (+ ``.tbi``) -- VCFv4.2
  truth sets, one diploid sample each, unphased ``GT`` (``0/1`` or ``1/1``),
  biallelic SNVs and 1-10 bp insertions/deletions, some shared between the
  samples and some private.  Every indel is left-aligned and parsimonious with
  the anchor base included (i.e. already in ``bcftools norm -f ref.fa`` form).
  Every variant lies >= 500 bp from a contig end, and the windows in which the
  variants could be shifted are >= 25 bp apart, so the truth is unambiguous.
* ``sampleA.bam`` / ``sampleB.bam`` (+ ``.bai``) -- coordinate-sorted BAMs of
  simulated Illumina-like 2x150 bp paired-end reads (insert ~ N(350, 50)),
  ``coverage``-fold mean depth drawn equally from both haplotypes of the
  sample, aligned with minimap2 (``mappy``, preset ``sr``, paired mode).  The
  read group is ``ID=SM=<sample>, PL=ILLUMINA, LB=lib1``; every record has an
  ``RG`` tag, mapped records have ``NM``/``MD`` (and ``MC``/``SA`` where
  applicable).  Secondary alignments are dropped; supplementary alignments are
  kept (flag 0x800, soft-clipped).
* with ``--fastq`` (``fastq=True``) also ``fastq/sampleA_R1.fastq.gz`` /
  ``fastq/sampleA_R2.fastq.gz`` (and the same for sampleB) -- the same reads,
  unaligned: read 1 and read 2 as simulated (sequencing orientation), in
  generation order (not sorted by position), Casava 1.8 headers
  ``@<QNAME> 1:N:0:1`` / ``@<QNAME> 2:N:0:1`` with the BAM's ``QNAME``, phred+33
  qualities; gzip with mtime 0 and no file name.  It changes no other file.

Cohorts (``--samples N``, ``samples=N``; default 2)
---------------------------------------------------
``N >= 1`` samples share the one reference; each gets its own truth VCF, BAM (and FASTQs).
Sample ``i`` (0-based) is named ``sample`` + the ``i``-th capital letter for
``i < 26`` (``sampleA`` .. ``sampleZ``), then ``sample027``, ``sample028``, ...
(``sample{i + 1:03d}``).  Samples ``sampleA`` and ``sampleB`` are drawn exactly as
always: a pool of which 40 % is in both and the rest private to one of them.  Each
further sample ``i >= 2``, from its own random stream (``seed``, 3, ``i``), carries
about as many variants as they do: on each contig it takes each variant of the
earlier samples with the probability that makes about 40 % of its variants shared
with earlier samples, and draws the rest (about 60 %) as new variants of its own,
placed like the pool's (>= 25 bp between ambiguity windows, also from every earlier
sample's variants); a later sample may take some of them, so not all of them stay
private.  Its reads come from its own streams, as sampleA's and sampleB's do.

Guarantee: a sample's files depend only on its index and the other parameters,
never on ``N``.  So ``--samples 2`` is today's output byte for byte, the first two
samples of any cohort are byte-identical to it (and ``ref.fa`` too), and a cohort of
``N`` samples is the first ``N`` samples of any larger one with the same parameters.
The ``##source`` line of a truth VCF and the ``@PG`` command line of a BAM name
``--samples i + 1`` for samples ``i >= 2`` (the smallest cohort that has the sample)
and nothing for sampleA and sampleB.

Public API: ``generate(outdir, seed, genome_size, coverage, n_contigs, threads,
..., fastq, samples) -> GenerationSummary``; ``sample_names(n)``; ``main(argv)`` is
the command line.  Needs numpy, pysam and ``mappy`` (``pip install mappy``).

The output is a pure function of the parameters (``outdir`` excepted) and the
installed versions of numpy, pysam and mappy: running twice gives byte-identical
FASTA, VCF, BAM and FASTQ files, independently of ``threads``.
"""

import argparse
import array
import gzip
import hashlib
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pysam
import pysam.bcftools

SAMPLES: tuple[str, ...] = ("sampleA", "sampleB")  # the default cohort (``sample_names(2)``)
FASTA_LINE_WIDTH = 60
CONTIG_END_MARGIN = 500  # no variant closer than this to a contig end
MIN_VARIANT_GAP = 25  # minimum distance between variants' ambiguity windows
MAX_PROPER_TLEN = 1000  # |TLEN| above this -> not a proper pair
BATCH_PAIRS = 5000  # read pairs per simulation/alignment batch
BASES = "ACGTN"
_BASE_LUT = np.frombuffer(b"ACGTN", dtype=np.uint8)
_COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)
_QUAL_BINS = np.array([2, 12, 23, 37], dtype=np.uint8)  # NovaSeq-style binning
_CIGAR_CHARS = "MIDNSHP=X"


# --------------------------------------------------------------------------- #
# Data classes
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Variant:
    """A normalised biallelic variant (VCF coordinates: ``pos`` is 1-based)."""

    contig: str
    pos: int
    ref: str
    alt: str

    @property
    def kind(self) -> str:
        """``SNV``, ``INS`` or ``DEL``."""
        if len(self.ref) == len(self.alt) == 1:
            return "SNV"
        return "INS" if len(self.alt) > len(self.ref) else "DEL"


@dataclass
class SampleTruth:
    """Genotypes of one sample: variant -> (hap0 carries alt, hap1 carries alt)."""

    name: str
    calls: dict[Variant, tuple[bool, bool]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Counts by class (``SNV``/``indel`` x ``het``/``hom``) and by type."""
        out: dict[str, int] = {
            "total": 0,
            "SNV": 0,
            "indel": 0,
            "INS": 0,
            "DEL": 0,
            "SNV_het": 0,
            "SNV_hom": 0,
            "indel_het": 0,
            "indel_hom": 0,
        }
        for var, (h0, h1) in self.calls.items():
            cls = "SNV" if var.kind == "SNV" else "indel"
            zyg = "hom" if (h0 and h1) else "het"
            out["total"] += 1
            out[cls] += 1
            out[f"{cls}_{zyg}"] += 1
            if cls == "indel":
                out[var.kind] += 1
        return out


@dataclass
class GenerationSummary:
    """What :func:`generate` produced (paths are inside ``outdir``)."""

    outdir: Path
    reference: Path
    contigs: dict[str, int]
    truth_vcfs: dict[str, Path]
    bams: dict[str, Path]
    variant_counts: dict[str, dict[str, int]]
    shared_variants: int
    read_pairs: dict[str, int]
    flagstat: dict[str, str]
    seconds: float
    fastqs: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # sample -> (R1, R2), with fastq=True
    private_variants: dict[str, int] = field(default_factory=dict)  # sample -> variants no other sample has


def sample_names(n: int) -> list[str]:
    """Names of a cohort of ``n`` samples: ``sampleA`` .. ``sampleZ``, then ``sample027``, ...

    The ``i``-th name does not depend on ``n``.
    """
    if n < 1:
        raise ValueError("need at least one sample")
    return [f"sample{chr(ord('A') + i)}" if i < 26 else f"sample{i + 1:03d}" for i in range(n)]


# --------------------------------------------------------------------------- #
# Reference
# --------------------------------------------------------------------------- #
def contig_lengths(genome_size: int, n_contigs: int) -> list[int]:
    """Split ``genome_size`` into ``n_contigs`` decreasing lengths (ratio 0.64).

    For the defaults (310 kb, 3 contigs) this gives 151 kb, 97 kb and 62 kb.
    """
    if n_contigs < 1:
        raise ValueError("need at least one contig")
    weights = 0.64 ** np.arange(n_contigs)
    raw = genome_size * weights / weights.sum()
    lengths = [round(float(x) / 1000.0) * 1000 or round(float(x)) for x in raw[:-1]]
    lengths.append(genome_size - sum(lengths))
    if min(lengths) < 5000:
        raise ValueError("contigs would be shorter than 5 kb; lower --contigs")
    return lengths


def _random_contig(rng: np.random.Generator, length: int) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """Random CpG-depleted sequence (codes 0-3) with tandem repeats inserted.

    Returns the sequence and a list of ``(start, end, unit)`` repeat tracts.
    """
    # base composition before CpG depletion and (AT-rich) repeats: GC 45.5 % -> ~42 % after
    p_gc = 0.455
    probs = np.array([(1 - p_gc) / 2, p_gc / 2, p_gc / 2, (1 - p_gc) / 2])
    seq = rng.choice(4, size=length, p=probs).astype(np.uint8)
    # CpG depletion (deamination of methylated C): turn 75 % of CG into TG/CA
    cg = np.flatnonzero((seq[:-1] == 1) & (seq[1:] == 2))
    cg = cg[rng.random(cg.size) < 0.75]
    to_tg = rng.random(cg.size) < 0.5
    seq[cg[to_tg]] = 3
    seq[cg[~to_tg] + 1] = 0

    # short tandem repeats and homopolymers, about one per 1.2 kb
    repeats: list[tuple[int, int, str]] = []
    n_rep = length // 1200
    grid = np.sort(rng.choice(np.arange(200, length - 250, 50), size=n_rep, replace=False))
    starts = grid + rng.integers(0, 20, size=n_rep)  # tracts are <= 24 bp: no overlaps
    for start in starts:
        kind = rng.random()
        if kind < 0.40:  # homopolymer 8-18 bp, mostly A/T
            unit = "ACGT"[rng.choice(4, p=[0.35, 0.15, 0.15, 0.35])]
            copies = int(rng.integers(8, 19))
        elif kind < 0.75:  # dinucleotide
            unit = ["AC", "CA", "AG", "GA", "AT", "TA", "TG", "GT", "CT", "TC"][int(rng.integers(10))]
            copies = int(rng.integers(5, 13))
        elif kind < 0.90:  # trinucleotide
            unit = "".join("ACGT"[int(b)] for b in rng.integers(0, 4, 3))
            copies = int(rng.integers(4, 9))
        else:  # tetranucleotide
            unit = "".join("ACGT"[int(b)] for b in rng.integers(0, 4, 4))
            copies = int(rng.integers(3, 7))
        if len(set(unit)) == 1 and len(unit) > 1:
            unit = unit[0]
            copies *= 2
        tract = unit * copies
        codes = np.frombuffer(tract.encode(), dtype=np.uint8)
        seq[start : start + len(tract)] = np.searchsorted(_BASE_LUT[:4], codes).astype(np.uint8)
        repeats.append((int(start), int(start) + len(tract), unit))
    return seq, repeats


def write_fasta(path: Path, contigs: dict[str, str]) -> None:
    """Write ``contigs`` as FASTA with 60-column lines and build the .fai."""
    with open(path, "w") as fh:
        for name, seq in contigs.items():
            fh.write(f">{name}\n")
            fh.writelines(seq[i : i + FASTA_LINE_WIDTH] + "\n" for i in range(0, len(seq), FASTA_LINE_WIDTH))
    pysam.faidx(str(path))


# --------------------------------------------------------------------------- #
# Variants
# --------------------------------------------------------------------------- #
def normalise_deletion(ref: str, start: int, length: int) -> tuple[int, int, int]:
    """Left-align a deletion of ``ref[start:start+length]`` (0-based).

    Returns ``(left, right, length)``: the leftmost and rightmost 0-based start
    at which the same haplotype is produced.
    """
    left = start
    while left > 0 and ref[left - 1] == ref[left + length - 1]:
        left -= 1
    right = start
    while right + length < len(ref) and ref[right + length] == ref[right]:
        right += 1
    return left, right, length


def normalise_insertion(ref: str, before: int, ins: str) -> tuple[int, int, str]:
    """Left-align an insertion of ``ins`` before ``ref[before]`` (0-based).

    Returns ``(left, right, left_ins)``: leftmost/rightmost insertion point
    and the inserted sequence at the leftmost point.
    """
    left, s = before, ins
    while left > 0 and ref[left - 1] == s[-1]:
        s = s[-1] + s[:-1]
        left -= 1
    left_ins = s
    right, s = before, ins
    while right < len(ref) and ref[right] == s[0]:
        s = s[1:] + s[0]
        right += 1
    return left, right, left_ins


class _Occupancy:
    """Sorted, non-overlapping intervals with a minimum gap between them."""

    def __init__(self, gap: int) -> None:
        self.gap = gap
        self.starts: list[int] = []
        self.ends: list[int] = []

    def try_add(self, start: int, end: int) -> bool:
        i = bisect_left(self.starts, start)
        if i > 0 and self.ends[i - 1] + self.gap > start:
            return False
        if i < len(self.starts) and end + self.gap > self.starts[i]:
            return False
        self.starts.insert(i, start)
        self.ends.insert(i, end)
        return True


def _indel_length(rng: np.random.Generator) -> int:
    weights = 0.65 ** np.arange(10)
    return int(rng.choice(np.arange(1, 11), p=weights / weights.sum()))


def make_variant_pool(
    rng: np.random.Generator,
    contig: str,
    ref: str,
    repeats: list[tuple[int, int, str]],
    n_variants: int,
    indel_fraction: float = 0.3,
    repeat_indel_fraction: float = 0.35,
    taken: list[tuple[int, int]] | None = None,
) -> list[tuple[Variant, int, int]]:
    """Draw ``n_variants`` normalised, well separated variants on one contig.

    Returns ``(variant, window_start, window_end)`` tuples, where the window
    (0-based, half-open) covers every equivalent placement of the variant.
    ``taken`` are windows of variants drawn before (well separated among
    themselves): the new ones keep the same distance from them.
    """
    occ = _Occupancy(MIN_VARIANT_GAP)
    for start, end in taken or ():
        if not occ.try_add(start, end):
            raise ValueError(f"{contig}: taken windows overlap at {start}-{end}")
    out: list[tuple[Variant, int, int]] = []
    lo, hi = CONTIG_END_MARGIN, len(ref) - CONTIG_END_MARGIN
    unused_repeats = [r for r in repeats if lo + 20 < r[0] and r[1] < hi - 20]
    order = rng.permutation(len(unused_repeats))
    rep_iter = iter(order.tolist())
    transitions = {"A": "G", "G": "A", "C": "T", "T": "C"}
    attempts = 0
    while len(out) < n_variants and attempts < n_variants * 200:
        attempts += 1
        u = rng.random()
        if u >= indel_fraction:  # SNV, Ti/Tv ~ 2
            p = int(rng.integers(lo, hi))
            rb = ref[p]
            if rng.random() < 2 / 3:
                alt = transitions[rb]
            else:
                alt = [b for b in "ACGT" if b != rb and b != transitions[rb]][int(rng.integers(2))]
            var = Variant(contig, p + 1, rb, alt)
            win = (p, p + 1)
        else:
            is_del = rng.random() < 0.5
            in_repeat = rng.random() < repeat_indel_fraction
            rep_idx = next(rep_iter, None) if in_repeat else None
            if rep_idx is not None:
                r_start, r_end, unit = unused_repeats[rep_idx]
                max_units = max(1, min(10 // len(unit), 3 if len(unit) == 1 else 2))
                m = int(rng.integers(1, max_units + 1))
                if is_del:
                    m = min(m, (r_end - r_start) // len(unit) - 1)
                p = r_start
                length = m * len(unit)
                ins = unit * m
            else:
                p = int(rng.integers(lo, hi))
                length = _indel_length(rng)
                ins = "".join("ACGT"[int(b)] for b in rng.integers(0, 4, length))
            if is_del:
                left, right, k = normalise_deletion(ref, p, length)
                var = Variant(contig, left, ref[left - 1 : left + k], ref[left - 1])
                win = (left - 1, right + k)
            else:
                left, right, s = normalise_insertion(ref, p, ins)
                var = Variant(contig, left, ref[left - 1], ref[left - 1] + s)
                win = (left - 1, right + 1)
        if win[0] < lo or win[1] > hi:
            continue
        if occ.try_add(*win):
            out.append((var, *win))
    out.sort(key=lambda t: t[0].pos)
    return out


def assign_genotypes(
    rng: np.random.Generator,
    pool: list[Variant],
    shared_fraction: float = 0.4,
    hom_fraction: float = 0.35,
) -> list[SampleTruth]:
    """Split a variant pool into shared/private sets and draw genotypes."""
    truths = [SampleTruth(name) for name in SAMPLES]
    # pool variant -> both samples (p = shared_fraction) or one of them ((1 - p) / 2 each)
    for var in pool:
        u = rng.random()
        carriers = [0, 1] if u < shared_fraction else [0] if u < (1 + shared_fraction) / 2 else [1]
        for ci in carriers:
            if rng.random() < hom_fraction:
                gt = (True, True)
            else:
                gt = (True, False) if rng.random() < 0.5 else (False, True)
            truths[ci].calls[var] = gt
    return truths


def _draw_genotype(rng: np.random.Generator, hom_fraction: float) -> tuple[bool, bool]:
    if rng.random() < hom_fraction:
        return (True, True)
    return (True, False) if rng.random() < 0.5 else (False, True)


def add_cohort_sample(
    rng: np.random.Generator,
    name: str,
    contigs: dict[str, str],
    repeats: dict[str, list[tuple[int, int, str]]],
    earlier: dict[str, list[tuple[Variant, int, int]]],
    variant_spacing: float,
    shared_fraction: float = 0.4,
    hom_fraction: float = 0.35,
) -> SampleTruth:
    """Draw the truth of a further cohort sample (the third and later).

    ``earlier`` holds, per contig, every variant of the earlier samples with its
    window, in position order; it is extended with the new sample's own variants.
    On each contig the sample carries each earlier variant with the probability that
    makes about ``shared_fraction`` of its variants shared, and draws the rest as new
    variants, well separated from all earlier ones.
    """
    truth = SampleTruth(name)
    for contig, seq in contigs.items():
        per_sample = (len(seq) - 2 * CONTIG_END_MARGIN) / variant_spacing
        old = earlier[contig]
        p_take = min(1.0, shared_fraction * per_sample / len(old)) if old else 0.0
        inherited = [v for (v, _, _), u in zip(old, rng.random(len(old)), strict=True) if u < p_take]
        n_new = round(per_sample * (1 - shared_fraction))
        new = make_variant_pool(rng, contig, seq, repeats[contig], n_new, taken=[(a, b) for _, a, b in old])
        for var in sorted(inherited + [v for v, _, _ in new], key=lambda v: v.pos):
            truth.calls[var] = _draw_genotype(rng, hom_fraction)
        earlier[contig] = sorted(old + new, key=lambda t: t[1])
    return truth


def write_truth_vcf(path_gz: Path, truth: SampleTruth, contigs: dict[str, str], params: str) -> None:
    """Write a bgzipped, tabix-indexed VCFv4.2 for one sample."""
    order = {name: i for i, name in enumerate(contigs)}
    lines = [
        "##fileformat=VCFv4.2",
        f"##source=test_data/generate.py {params}",
        "##reference=ref.fa",
    ]
    for name, seq in contigs.items():
        md5 = hashlib.md5(seq.encode()).hexdigest()
        lines.append(f"##contig=<ID={name},length={len(seq)},md5={md5}>")
    lines += [
        '##FILTER=<ID=PASS,Description="All filters passed">',
        '##INFO=<ID=VT,Number=1,Type=String,Description="Variant type: SNV, INS or DEL">',
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
        f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{truth.name}",
    ]
    for var in sorted(truth.calls, key=lambda v: (order[v.contig], v.pos)):
        h0, h1 = truth.calls[var]
        gt = "1/1" if (h0 and h1) else "0/1"
        lines.append(f"{var.contig}\t{var.pos}\t.\t{var.ref}\t{var.alt}\t.\tPASS\tVT={var.kind}\tGT\t{gt}")
    plain = path_gz.with_suffix("")  # strip .gz
    plain.write_text("\n".join(lines) + "\n")
    pysam.tabix_index(str(plain), preset="vcf", force=True, keep_original=False)


def apply_variants(ref: str, variants: list[Variant]) -> str:
    """Return ``ref`` with the (non-overlapping, sorted) ``variants`` applied."""
    parts: list[str] = []
    cur = 0
    for var in sorted(variants, key=lambda v: v.pos):
        p0 = var.pos - 1
        assert ref[p0 : p0 + len(var.ref)] == var.ref, var
        parts.append(ref[cur:p0])
        parts.append(var.alt)
        cur = p0 + len(var.ref)
    parts.append(ref[cur:])
    return "".join(parts)


# --------------------------------------------------------------------------- #
# Read simulation
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class ReadModel:
    """Parameters of the paired-end read simulator."""

    read_length: int = 150
    insert_mean: float = 350.0
    insert_sd: float = 50.0
    indel_error_rate: float = 5e-5  # per base
    n_fraction_q2: float = 0.25  # fraction of Q2 calls that are reported as N
    junk_fraction: float = 0.002  # pairs with an unmappable (random) read; 1/4 of them both reads
    chimera_fraction: float = 0.002  # pairs whose read 1 ends in a piece of another locus


def _quality_tables(read_length: int) -> np.ndarray:
    """Per-position probabilities of Q2, Q12, Q23 (rest is Q37); shape (L, 3)."""
    pos = np.arange(read_length, dtype=np.float64)
    x = pos / max(read_length - 1, 1)
    p2 = 0.0015 + 0.006 * x**3
    p12 = 0.004 + 0.03 * x**2
    p23 = 0.025 + 0.12 * x**1.5 + 0.03 * np.exp(-pos / 2.0)
    return np.stack([p2, p12, p23], axis=1)


def _draw_qualities(rng: np.random.Generator, n: int, table: np.ndarray) -> np.ndarray:
    """Binned qualities, shape (n, L): position-dependent, with per-read variation."""
    factor = np.clip(rng.lognormal(0.0, 0.6, size=n), 0.2, 6.0)
    probs = table[None, :, :] * factor[:, None, None]
    total = probs.sum(axis=2, keepdims=True)
    probs = np.where(total > 0.9, probs * (0.9 / np.maximum(total, 1e-12)), probs)
    cum = np.cumsum(probs, axis=2).astype(np.float32)
    u = rng.random((n, table.shape[0]), dtype=np.float32)
    idx = (u[:, :, None] >= cum).sum(axis=2)  # 0..3
    return _QUAL_BINS[idx]


def simulate_pairs(
    rng: np.random.Generator,
    haplotypes: list[tuple[int, np.ndarray]],
    n_pairs: int,
    model: ReadModel,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Simulate ``n_pairs`` read pairs from ``haplotypes`` (contig index, codes).

    Fragments are spread over the haplotype sequences proportionally to their
    length.  Returns ``(seq1, qual1, seq2, qual2)``, each of shape
    ``(n_pairs, read_length)``; sequences are base codes 0-4 (ACGTN) in
    sequencing orientation (read 2 is reverse-complemented w.r.t. read 1).
    """
    rl = model.read_length
    ext = rl + 10  # a few spare bases for indel errors
    min_ins = ext + 10
    lengths = np.array([len(h) for _, h in haplotypes], dtype=np.float64)
    counts = rng.multinomial(n_pairs, lengths / lengths.sum())
    ar = np.arange(ext)
    fwd_parts, rev_parts = [], []
    for (_, hap), cnt in zip(haplotypes, counts, strict=True):
        if cnt == 0:
            continue
        ins = np.rint(rng.normal(model.insert_mean, model.insert_sd, size=cnt)).astype(np.int64)
        ins = np.clip(ins, min_ins, min(len(hap), int(model.insert_mean + 6 * model.insert_sd)))
        starts = (rng.random(cnt) * (len(hap) - ins + 1)).astype(np.int64)
        fwd_parts.append(hap[starts[:, None] + ar])
        rev_parts.append(_COMPLEMENT[hap[(starts + ins - 1)[:, None] - ar]])
    fwd = np.concatenate(fwd_parts)
    rev = np.concatenate(rev_parts)
    flip = rng.random(n_pairs) < 0.5  # fragment sequenced from the reverse strand
    r1 = np.where(flip[:, None], rev, fwd)
    r2 = np.where(flip[:, None], fwd, rev)

    # chimeric fragments: read 1 switches to a random other locus after 25-125 bp
    all_seq = np.concatenate([h for _, h in haplotypes])
    chim = np.flatnonzero(rng.random(n_pairs) < model.chimera_fraction)
    for i in chim:
        k = int(rng.integers(25, 126))
        src = int(rng.integers(0, all_seq.size - ext))
        r1[i, k:] = all_seq[src : src + ext - k]
    # junk: one read (or, for a quarter of them, both reads) is random sequence
    junk = np.flatnonzero(rng.random(n_pairs) < model.junk_fraction)
    which = rng.choice(3, size=junk.size, p=[0.375, 0.375, 0.25])  # read 1, read 2, both
    for i, w in zip(junk, which, strict=True):
        if w != 1:
            r1[i] = rng.integers(0, 4, size=ext)
        if w != 0:
            r2[i] = rng.integers(0, 4, size=ext)

    table = _quality_tables(rl)
    out: list[np.ndarray] = []
    for reads, worse in ((r1, 1.0), (r2, 1.4)):
        # indel errors (rare; python loop over the affected reads only)
        p_read = 1.0 - (1.0 - model.indel_error_rate) ** rl
        hit = np.flatnonzero(rng.random(n_pairs) < p_read)
        for i in hit:
            pos = int(rng.integers(10, rl - 10))
            length = 1 if rng.random() < 0.85 else 2
            row = reads[i]
            if rng.random() < 0.5:  # deletion
                new = np.concatenate([row[:pos], row[pos + length :]])
            else:  # insertion (slippage: repeat the preceding base)
                new = np.concatenate([row[:pos], np.repeat(row[pos - 1], length), row[pos:]])
            new = new[:ext]
            reads[i, : new.size] = new
        seq = np.ascontiguousarray(reads[:, :rl])
        qual = _draw_qualities(rng, n_pairs, table * worse)
        perr = 10.0 ** (-qual.astype(np.float64) / 10.0)
        err = rng.random(seq.shape) < perr
        n_err = int(err.sum())
        seq[err] = (seq[err] + rng.integers(1, 4, size=n_err).astype(np.uint8)) % 4
        q2 = qual == 2
        seq[q2 & (rng.random(seq.shape) < model.n_fraction_q2)] = 4
        out += [seq, qual]
    return out[0], out[1], out[2], out[3]


# --------------------------------------------------------------------------- #
# Alignment (mappy) and BAM writing
# --------------------------------------------------------------------------- #
_STATE: dict[str, Any] = {}  # shared with forked workers


@dataclass(frozen=True)
class _Hit:
    """A mappy hit with query coordinates fixed and clips added to the CIGAR."""

    ctg: str
    r_st: int
    r_en: int
    reverse: bool
    mapq: int
    cigar: list[tuple[int, int]]  # pysam (op, length), soft clips included

    @property
    def pos5(self) -> int:
        return self.r_en - 1 if self.reverse else self.r_st


def _to_hit(h: Any, qlen: int) -> _Hit:
    """Convert a ``mappy.Alignment`` of a read of length ``qlen``.

    mappy maps read 2 as its reverse complement and flips only the strand, not
    ``q_st``/``q_en``, so for read 2 those are mirrored back here.  (For the
    same reason mappy's ``MD`` of clipped read-2 hits is wrong; MD/NM are
    therefore recomputed from the reference, see :func:`_nm_md`.)
    """
    q_st, q_en = (qlen - h.q_en, qlen - h.q_st) if h.read_num == 2 else (h.q_st, h.q_en)
    reverse = h.strand < 0
    left = qlen - q_en if reverse else q_st
    right = q_st if reverse else qlen - q_en
    cig = [(int(op), int(n)) for n, op in h.cigar]
    if left:
        cig.insert(0, (4, left))
    if right:
        cig.append((4, right))
    return _Hit(h.ctg, h.r_st, h.r_en, reverse, int(h.mapq), cig)


def _nm_md(ref: str, pos: int, query: str, cigar: list[tuple[int, int]]) -> tuple[int, str]:
    """NM and MD as ``samtools calmd`` computes them (N counts as a mismatch)."""
    nm = 0
    md: list[str] = []
    run = 0
    qi, ri = 0, pos
    for op, n in cigar:
        if op in (0, 7, 8):
            q = query[qi : qi + n]
            r = ref[ri : ri + n]
            if q == r and "N" not in q:
                run += n
            else:
                for a, b in zip(q, r, strict=False):
                    if a == b and a != "N":
                        run += 1
                    else:
                        md.append(f"{run}{b}")
                        run = 0
                        nm += 1
            qi += n
            ri += n
        elif op == 1:
            qi += n
            nm += n
        elif op == 2:
            md.append(f"{run}^{ref[ri : ri + n]}")
            run = 0
            ri += n
            nm += n
        elif op == 4:
            qi += n
        elif op == 3:
            ri += n
    md.append(str(run))
    return nm, "".join(md)


def _is_proper(a: _Hit, b: _Hit) -> bool:
    """Same contig, FR orientation (facing each other), fragment < MAX_PROPER_TLEN."""
    if a.ctg != b.ctg or a.reverse == b.reverse:
        return False
    f, r = (b, a) if a.reverse else (a, b)
    return f.r_st <= r.r_en and r.pos5 - f.pos5 < MAX_PROPER_TLEN


def _cigar_str(cig: list[tuple[int, int]]) -> str:
    return "".join(f"{n}{_CIGAR_CHARS[op]}" for op, n in cig)


_RC_TABLE = str.maketrans("ACGTN", "TGCAN")


def _pair_records(
    header: pysam.AlignmentHeader,
    contigs: dict[str, str],
    name: str,
    seqs: tuple[str, str],
    quals: tuple[np.ndarray, np.ndarray],
    hits: list[Any],
    rg: str,
) -> list[pysam.AlignedSegment]:
    """Build BAM records (primary + supplementary) for one read pair.

    Secondary hits are dropped.  Per read, mappy reports the primary hit
    first; further hits with ``id == parent`` are supplementary.
    """
    per_read: list[list[_Hit]] = [[], []]
    for h in hits:
        if h.is_primary:  # id == parent: primary or supplementary
            k = h.read_num - 1
            per_read[k].append(_to_hit(h, len(seqs[k])))
    # mappy does not expose minimap2's sam_pri; after pairing, the primary of
    # each read is the hit that pairs with the mate -- move such a pair first.
    pairs = [
        (i, j) for i, h1 in enumerate(per_read[0]) for j, h2 in enumerate(per_read[1]) if _is_proper(h1, h2)
    ]
    if pairs:
        for k, idx in zip((0, 1), pairs[0], strict=True):
            per_read[k].insert(0, per_read[k].pop(idx))
    prim = [r[0] if r else None for r in per_read]
    proper = prim[0] is not None and prim[1] is not None and _is_proper(prim[0], prim[1])

    records: list[pysam.AlignedSegment] = []
    for k in (0, 1):
        mate = prim[1 - k]
        seq, qual = seqs[k], quals[k]
        base_flag = 0x1 | (0x40 if k == 0 else 0x80)
        if proper:
            base_flag |= 0x2
        if mate is None:
            base_flag |= 0x8
        elif mate.reverse:
            base_flag |= 0x20
        if not per_read[k]:  # unmapped read: placed at its mate, if that is mapped
            a = pysam.AlignedSegment(header)
            a.query_name = name
            a.flag = base_flag | 0x4
            a.query_sequence = seq
            a.query_qualities = array.array("B", qual.tobytes())
            if mate is not None:
                a.reference_id = a.next_reference_id = header.get_tid(mate.ctg)
                a.reference_start = a.next_reference_start = mate.r_st
            a.mapping_quality = 0
            a.set_tag("RG", rg, "Z")
            records.append(a)
            continue
        hs = per_read[k]
        rc_seq = seq[::-1].translate(_RC_TABLE)
        nm_md = [_nm_md(contigs[h.ctg], h.r_st, rc_seq if h.reverse else seq, h.cigar) for h in hs]
        sa_items = [
            f"{h.ctg},{h.r_st + 1},{'-' if h.reverse else '+'},{_cigar_str(h.cigar)},{h.mapq},{nm};"
            for h, (nm, _) in zip(hs, nm_md, strict=True)
        ]
        for j, h in enumerate(hs):
            a = pysam.AlignedSegment(header)
            a.query_name = name
            flag = base_flag if j == 0 else (base_flag & ~0x2) | 0x800
            if h.reverse:
                flag |= 0x10
                a.query_sequence = rc_seq
                a.query_qualities = array.array("B", qual[::-1].tobytes())
            else:
                a.query_sequence = seq
                a.query_qualities = array.array("B", qual.tobytes())
            a.flag = flag
            a.reference_id = header.get_tid(h.ctg)
            a.reference_start = h.r_st
            a.mapping_quality = h.mapq
            a.cigartuples = h.cigar
            if mate is not None:
                a.next_reference_id = header.get_tid(mate.ctg)
                a.next_reference_start = mate.r_st
                if mate.ctg == h.ctg:  # minimap2's 5'-to-5' TLEN
                    d = mate.pos5 - h.pos5
                    a.template_length = d + 1 if d > 0 else d - 1 if d < 0 else 0
            else:  # mate unmapped: it takes this read's primary coordinates
                a.next_reference_id = header.get_tid(hs[0].ctg)
                a.next_reference_start = hs[0].r_st
            a.set_tag("NM", nm_md[j][0], "i")
            a.set_tag("MD", nm_md[j][1], "Z")
            if mate is not None:
                a.set_tag("MC", _cigar_str(mate.cigar), "Z")
            if len(hs) > 1:
                a.set_tag("SA", "".join(x for i, x in enumerate(sa_items) if i != j), "Z")
            a.set_tag("RG", rg, "Z")
            records.append(a)
    return records


def _fastq_text(names: list[str], seqs: list[str], quals: np.ndarray, read_num: int) -> str:
    """FASTQ records (Casava 1.8 style ``@name <read_num>:N:0:1``), phred+33 qualities."""
    rl = quals.shape[1]
    q = (quals.astype(np.uint8) + 33).tobytes().decode()
    return "".join(
        f"@{name} {read_num}:N:0:1\n{seq}\n+\n{q[i * rl : (i + 1) * rl]}\n"
        for i, (name, seq) in enumerate(zip(names, seqs, strict=True))
    )


def _run_batch(task: tuple[int, int, int, str, bool]) -> tuple[str, int, int]:
    """Simulate and align one batch; write an unsorted BAM chunk.

    ``task`` is ``(sample_index, batch_index, n_pairs, chunk_path, fastq)``.
    With ``fastq``, the batch's reads are also written, as simulated (sequencing
    orientation), to ``<chunk_path minus .bam>_R1.fastq`` and ``_R2.fastq``.
    Returns ``(chunk_path, n_pairs, n_pairs_both_mapped)``.
    """
    import mappy  # imported lazily: the module can be imported without mappy

    si, bi, n_pairs, chunk, fastq = task
    st = _STATE
    sample = st["samples"][si]
    rng = np.random.default_rng([st["seed"], 1000 + si, bi])
    s1, q1, s2, q2 = simulate_pairs(rng, st["haplotypes"][si], n_pairs, st["model"])
    rl = st["model"].read_length
    b1 = _BASE_LUT[s1].tobytes().decode()
    b2 = _BASE_LUT[s2].tobytes().decode()
    aligner = st["aligner"]
    contigs = st["contigs"]
    buf = mappy.ThreadBuffer()
    header = pysam.AlignmentHeader.from_dict(st["header"][si])
    both = 0
    names: list[str] = []
    reads: tuple[list[str], list[str]] = ([], [])
    with pysam.AlignmentFile(chunk, "wbu", header=header) as out:
        for i in range(n_pairs):
            r1 = b1[i * rl : (i + 1) * rl]
            r2 = b2[i * rl : (i + 1) * rl]
            hits = list(aligner.map(r1, r2, buf=buf))
            name = f"{sample}:{bi * BATCH_PAIRS + i:08d}"
            if fastq:
                names.append(name)
                reads[0].append(r1)
                reads[1].append(r2)
            recs = _pair_records(header, contigs, name, (r1, r2), (q1[i], q2[i]), hits, sample)
            if all(not (r.flag & 0xC) for r in recs):
                both += 1
            for rec in recs:
                out.write(rec)
    if fastq:
        stem = chunk.removesuffix(".bam")
        for k, quals in ((0, q1), (1, q2)):
            with open(f"{stem}_R{k + 1}.fastq", "w") as fh:
                fh.write(_fastq_text(names, reads[k], quals, k + 1))
    return chunk, n_pairs, both


def _join_fastq(job: tuple[list[str], str]) -> str:
    """Concatenate per-batch FASTQ files (in the given order) into one gzip file.

    The gzip header has mtime 0 and no file name, so the output is reproducible.
    """
    parts, fastq_gz = job
    with (
        open(fastq_gz, "wb") as fh,
        gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz,
    ):
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, gz, 1 << 20)
            os.remove(part)
    return fastq_gz


def _sort_and_index(job: tuple[list[str], str, str]) -> str:
    """Concatenate the chunk BAMs of one sample, coordinate-sort and index.

    Single-threaded, no ``@PG`` line added: the result is deterministic.
    """
    chunks, bam, tmp_prefix = job
    unsorted = tmp_prefix + ".unsorted.bam"
    if len(chunks) == 1:
        shutil.move(chunks[0], unsorted)
    else:
        pysam.cat("--no-PG", "-o", unsorted, *chunks)
    for chunk in chunks:
        if os.path.exists(chunk):
            os.remove(chunk)
    pysam.sort("--no-PG", "-l", "6", "-m", "1G", "-T", tmp_prefix, "-o", bam, unsorted)
    os.remove(unsorted)
    pysam.index(bam)
    return bam


def _bam_header(sample: str, contigs: dict[str, str], params: str, mappy_version: str) -> dict[str, Any]:
    return {
        "HD": {"VN": "1.6", "SO": "unsorted"},
        "SQ": [
            {"SN": n, "LN": len(s), "M5": hashlib.md5(s.encode()).hexdigest()} for n, s in contigs.items()
        ],
        "RG": [{"ID": sample, "SM": sample, "PL": "ILLUMINA", "LB": "lib1"}],
        "PG": [
            {
                "ID": "generate.py",
                "PN": "test_data/generate.py",
                "VN": "1",
                "CL": f"generate.py {params}",
            },
            {
                "ID": "minimap2",
                "PN": "minimap2",
                "PP": "generate.py",
                "VN": f"mappy-{mappy_version}",
                "CL": "mappy.Aligner('ref.fa', preset='sr').map(read1, read2)",
            },
        ],
    }


# --------------------------------------------------------------------------- #
# Verification
# --------------------------------------------------------------------------- #
def check_truth_normalised(vcf: Path, reference: Path) -> None:
    """Fail unless ``bcftools norm -f ref -c e`` leaves the VCF unchanged."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "norm.vcf")
        pysam.bcftools.norm("-f", str(reference), "-c", "e", "-o", out, str(vcf), catch_stdout=False)
        messages = pysam.bcftools.norm.get_messages() or ""
        with pysam.VariantFile(str(vcf)) as a, pysam.VariantFile(out) as b:
            before = [(r.chrom, r.pos, r.ref, r.alts) for r in a]
            after = [(r.chrom, r.pos, r.ref, r.alts) for r in b]
    m = re.search(r"total/split/joined/realigned\S*:\s*(\d+)/(\d+)/(\d+)/(\d+)", messages)
    if before != after or (m is not None and int(m.group(4)) != 0):
        raise AssertionError(f"{vcf}: bcftools norm changed records: {messages}")


def check_bam(bam: Path) -> str:
    """Run ``samtools quickcheck`` and return the ``flagstat`` report."""
    pysam.quickcheck(str(bam))
    report = pysam.flagstat(str(bam))
    m = re.search(r"properly paired \(([\d.]+)%", report)
    if not m or float(m.group(1)) < 90.0:
        raise AssertionError(f"{bam}: too few properly paired reads:\n{report}")
    return report


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #
def generate(
    outdir: str | os.PathLike[str],
    seed: int = 42,
    genome_size: int = 310_000,
    coverage: float = 20.0,
    n_contigs: int = 3,
    threads: int = 1,
    variant_spacing: float = 1500.0,
    read_model: ReadModel | None = None,
    verify: bool = True,
    log: bool = True,
    fastq: bool = False,
    samples: int = 2,
) -> GenerationSummary:
    """Generate reference, truth VCFs and aligned BAMs into ``outdir``.

    ``variant_spacing`` is the mean number of reference bases per variant per
    sample.  ``fastq`` also writes the BAMs' reads, unaligned and in generation
    order, to ``fastq/<sample>_R1.fastq.gz`` and ``_R2.fastq.gz``; it changes no
    other file.  ``samples`` is the cohort size (names: :func:`sample_names`); a
    sample's files do not depend on it.  ``threads`` only changes speed, never the
    output.
    """
    import mappy

    t0 = time.time()
    model = read_model or ReadModel()
    out = Path(outdir)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    if fastq:
        (out / "fastq").mkdir(exist_ok=True)
    params = (
        f"--seed {seed} --genome-size {genome_size} --coverage {coverage:g} --contigs {n_contigs}"
        f" --variant-spacing {variant_spacing:g}"
    )
    names = sample_names(samples)
    # what a sample's files say made them: the smallest cohort that has the sample
    sample_params = [params if i < len(SAMPLES) else f"{params} --samples {i + 1}" for i in range(samples)]

    def say(msg: str) -> None:
        if log:
            print(f"[{time.time() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    # reference
    rng_ref = np.random.default_rng([seed, 1])
    contigs: dict[str, str] = {}
    repeats: dict[str, list[tuple[int, int, str]]] = {}
    for i, length in enumerate(contig_lengths(genome_size, n_contigs)):
        codes, reps = _random_contig(rng_ref, length)
        contigs[f"chr{i + 1}"] = _BASE_LUT[codes].tobytes().decode()
        repeats[f"chr{i + 1}"] = reps
    ref_path = out / "ref.fa"
    write_fasta(ref_path, contigs)
    say(f"reference: {len(contigs)} contigs, {genome_size} bp")

    # variants: pool size P gives each sample (1+s)/2 * P variants (s = shared fraction)
    rng_var = np.random.default_rng([seed, 2])
    shared_fraction = 0.4
    pool: list[Variant] = []
    drawn: dict[str, list[tuple[Variant, int, int]]] = {}  # per contig, with windows, in position order
    for name, seq in contigs.items():
        per_sample = (len(seq) - 2 * CONTIG_END_MARGIN) / variant_spacing
        n_pool = round(per_sample * 2 / (1 + shared_fraction))
        drawn[name] = make_variant_pool(rng_var, name, seq, repeats[name], n_pool)
        pool += [v for v, _, _ in drawn[name]]
    truths = assign_genotypes(rng_var, pool, shared_fraction=shared_fraction)[:samples]
    # further samples: each from its own stream, so none depends on the cohort size
    for i in range(len(truths), samples):
        rng_i = np.random.default_rng([seed, 3, i])
        truths.append(add_cohort_sample(rng_i, names[i], contigs, repeats, drawn, variant_spacing, shared_fraction))
    vcfs: dict[str, Path] = {}
    for truth, sp in zip(truths, sample_params, strict=True):
        vcf = out / "truth" / f"{truth.name}.vcf.gz"
        write_truth_vcf(vcf, truth, contigs, sp)
        vcfs[truth.name] = vcf
    carriers: dict[Variant, int] = {}
    for truth in truths:
        for var in truth.calls:
            carriers[var] = carriers.get(var, 0) + 1
    shared = sum(1 for c in carriers.values() if c > 1)
    private = {t.name: sum(1 for v in t.calls if carriers[v] == 1) for t in truths}
    say(f"truth: {[t.counts()['total'] for t in truths]} variants, {shared} shared")

    # haplotypes
    haplotypes: list[list[tuple[int, np.ndarray]]] = []
    for truth in truths:
        haps: list[tuple[int, np.ndarray]] = []
        for ci, (name, seq) in enumerate(contigs.items()):
            for h in (0, 1):
                vs = [v for v, gt in truth.calls.items() if v.contig == name and gt[h]]
                hap = apply_variants(seq, vs)
                codes = np.searchsorted(_BASE_LUT[:4], np.frombuffer(hap.encode(), dtype=np.uint8))
                haps.append((ci, codes.astype(np.uint8)))
        haplotypes.append(haps)

    # simulate + align, in batches (deterministic per batch, any thread count)
    aligner = mappy.Aligner(str(ref_path), preset="sr", n_threads=max(1, threads))
    if not aligner:
        raise RuntimeError("failed to build the minimap2 index")
    n_pairs_total = round(coverage * genome_size / (2 * model.read_length))
    mv = getattr(mappy, "__version__", "unknown")
    _STATE.clear()
    _STATE.update(
        seed=seed,
        haplotypes=haplotypes,
        model=model,
        aligner=aligner,
        contigs=contigs,
        header=[_bam_header(s, contigs, sp, mv) for s, sp in zip(names, sample_params, strict=True)],
        samples=names,
    )
    bams: dict[str, Path] = {}
    pairs: dict[str, int] = {}
    flagstats: dict[str, str] = {}
    fastqs: dict[str, tuple[Path, Path]] = {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp_generate_") as tmp:
        tasks: list[tuple[int, int, int, str, bool]] = []
        for si in range(len(names)):
            n_batches = -(-n_pairs_total // BATCH_PAIRS)
            for bi in range(n_batches):
                n = min(BATCH_PAIRS, n_pairs_total - bi * BATCH_PAIRS)
                tasks.append((si, bi, n, os.path.join(tmp, f"s{si}_b{bi:05d}.bam"), fastq))
        say(
            f"simulating + aligning {n_pairs_total} pairs/sample in {len(tasks)} batches, {threads} worker(s)"
        )
        jobs: list[tuple[list[str], str, str]] = [
            (
                [t[3] for t in tasks if t[0] == si],
                str(out / f"{sample}.bam"),
                os.path.join(tmp, sample),
            )
            for si, sample in enumerate(names)
        ]
        # FASTQ: per sample and read, the batches' files joined in batch order (tasks are in that order)
        fastq_jobs: list[tuple[list[str], str]] = [
            (
                [t[3].removesuffix(".bam") + f"_R{k}.fastq" for t in tasks if t[0] == si],
                str(out / "fastq" / f"{sample}_R{k}.fastq.gz"),
            )
            for si, sample in enumerate(names)
            for k in (1, 2)
            if fastq
        ]
        if threads > 1 and sys.modules.get(__name__) is None:
            say("module not registered in sys.modules (needed to pickle tasks): using 1 worker")
            threads = 1
        if threads > 1:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(threads) as pool_:
                results = pool_.map(_run_batch, tasks, chunksize=1)
                say("alignment done; sorting")
                pool_.map(_sort_and_index, jobs, chunksize=1)
                if fastq:
                    say("BAMs sorted; compressing FASTQs")
                pool_.map(_join_fastq, fastq_jobs, chunksize=1)
        else:
            results = [_run_batch(t) for t in tasks]
            say("alignment done; sorting")
            for job in jobs:
                _sort_and_index(job)
            if fastq:
                say("BAMs sorted; compressing FASTQs")
            for fq_job in fastq_jobs:
                _join_fastq(fq_job)
        for si, sample in enumerate(names):
            pairs[sample] = sum(r[1] for t, r in zip(tasks, results, strict=True) if t[0] == si)
            bams[sample] = out / f"{sample}.bam"
            if fastq:
                fq = out / "fastq"
                fastqs[sample] = (fq / f"{sample}_R1.fastq.gz", fq / f"{sample}_R2.fastq.gz")
        say("BAMs and FASTQs written" if fastq else "BAMs written")
    _STATE.clear()

    if verify:
        for sample in names:
            check_truth_normalised(vcfs[sample], ref_path)
            flagstats[sample] = check_bam(bams[sample])
        say("verification passed (bcftools norm, quickcheck, flagstat)")

    return GenerationSummary(
        outdir=out,
        reference=ref_path,
        contigs={n: len(s) for n, s in contigs.items()},
        truth_vcfs=vcfs,
        bams=bams,
        variant_counts={t.name: t.counts() for t in truths},
        shared_variants=shared,
        read_pairs=pairs,
        flagstat=flagstats,
        seconds=time.time() - t0,
        fastqs=fastqs,
        private_variants=private,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outdir", default=str(here), help="output directory (default: this script's directory)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--genome-size", type=int, default=310_000, help="total reference length in bp")
    ap.add_argument("--coverage", type=float, default=20.0, help="mean depth per sample")
    ap.add_argument("--contigs", type=int, default=3, help="number of contigs")
    ap.add_argument(
        "--samples",
        type=int,
        default=2,
        help="cohort size: sampleA, sampleB, ... sampleZ, then sample027, ... (a sample's files do not depend on it)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="worker processes (does not change the output)",
    )
    ap.add_argument("--variant-spacing", type=float, default=1500.0, help="mean bp per variant per sample")
    ap.add_argument("--no-verify", action="store_true", help="skip the post-generation checks")
    ap.add_argument(
        "--fastq",
        action="store_true",
        help="also write the reads as fastq/<sample>_R1.fastq.gz and _R2.fastq.gz (changes no other file)",
    )
    args = ap.parse_args(argv)
    if args.samples < 1:
        ap.error("--samples: need at least one sample")
    summary = generate(
        args.outdir,
        seed=args.seed,
        genome_size=args.genome_size,
        coverage=args.coverage,
        n_contigs=args.contigs,
        threads=args.threads,
        variant_spacing=args.variant_spacing,
        verify=not args.no_verify,
        fastq=args.fastq,
        samples=args.samples,
    )
    for sample, counts in summary.variant_counts.items():
        print(f"{sample}: {counts}  private: {summary.private_variants[sample]}  "
              f"read pairs: {summary.read_pairs[sample]}")
    print(f"shared variants: {summary.shared_variants}; done in {summary.seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
