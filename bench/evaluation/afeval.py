"""Evaluate low-frequency variant calls against a viral-mixture truth set.

Contract: :func:`read_truth` reads the truth VCF that ``test_data/viral.py`` writes
(one biallelic record per true allele, INFO ``AF`` realised and ``HF`` designed
frequency). :func:`read_vcf_calls` and :func:`read_ivar_tsv` turn a caller's output
into ``{(chrom, pos, ref, alt): AF}``, after splitting multi-allelic records and
left-aligning with ``bcftools norm`` against the reference, so that calls and truth
compare by key. :func:`evaluate` gives an :class:`Evaluation`: recall per designed
frequency bin (SNVs, indels, all), false positives (also per 30 kb and at known
artefact sites) and the AF error of the true positives, in percentage points.
"""

from __future__ import annotations

import csv
import os
import statistics
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pysam

from .vcfcompare import normalise

Key = tuple[str, int, str, str]  # chrom, pos, ref, alt after normalisation
DEFAULT_BINS: tuple[float, ...] = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
KINDS: tuple[str, ...] = ("snv", "indel", "all")
FP_SCALE = 30_000  # false positives are also reported per this many bases


@dataclass(frozen=True)
class TruthVariant:
    """A true allele: realised frequency ``af`` in the reads, designed frequency ``hf``."""

    chrom: str
    pos: int
    ref: str
    alt: str
    af: float
    hf: float
    kind: str  # 'snv' | 'indel'

    @property
    def key(self) -> Key:
        return (self.chrom, self.pos, self.ref, self.alt)


def _kind(ref: str, alt: str) -> str:
    return "snv" if len(ref) == len(alt) == 1 else "indel"


def read_truth(vcf: str) -> list[TruthVariant]:
    """The records of a truth VCF with INFO ``AF`` and ``HF``, in file order."""
    out: list[TruthVariant] = []
    with pysam.VariantFile(vcf) as fh:
        for rec in fh:
            if rec.ref is None or rec.alts is None or len(rec.alts) != 1:
                raise ValueError(f"{vcf}: truth records must be biallelic ({rec.chrom}:{rec.pos})")
            af, hf = rec.info["AF"], rec.info["HF"]
            ref, alt = rec.ref, rec.alts[0]
            out.append(TruthVariant(
                rec.chrom, rec.pos, ref, alt,
                float(af[0] if isinstance(af, tuple) else af),
                float(hf[0] if isinstance(hf, tuple) else hf),
                _kind(ref, alt),
            ))
    return out


def read_artefacts(tsv: str) -> frozenset[Key]:
    """The artefact sites of ``test_data/viral.py``'s ``artefacts.tsv`` as keys."""
    with open(tsv, newline="") as fh:
        return frozenset((r["chrom"], int(r["pos"]), r["ref"], r["alt"]) for r in csv.DictReader(fh, delimiter="\t"))


def _with_af(vcf: str, out: str) -> str:
    """Copy ``vcf`` making sure each record has INFO/AF per ALT: kept if present,
    else from the first sample's FORMAT/AD (ALT depth / sum of AD of the unsplit
    record), else left missing."""
    with pysam.VariantFile(vcf) as src:
        if "AF" not in src.header.info:
            src.header.add_line(
                '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency (from FORMAT/AD)">'
            )
        with pysam.VariantFile(out, "w", header=src.header) as dst:
            for rec in src:
                if "AF" not in rec.info and rec.alts and rec.samples and "AD" in rec.format:
                    ad = rec.samples[0]["AD"]
                    if ad is not None and None not in ad and sum(ad) > 0 and len(ad) == len(rec.alts) + 1:
                        rec.info["AF"] = tuple(a / sum(ad) for a in ad[1:])
                dst.write(rec)
    return out


def _read_normalised(vcf: str, pass_only: bool) -> dict[Key, float | None]:
    """Keys and AF of a split, left-aligned VCF; called-reference genotypes and
    symbolic alleles are skipped. A key seen twice keeps its highest AF."""
    calls: dict[Key, float | None] = {}
    with pysam.VariantFile(vcf) as fh:
        for rec in fh:
            if rec.ref is None or (pass_only and any(f != "PASS" for f in rec.filter.keys())):
                continue
            if rec.samples and "GT" in rec.format:
                gt = rec.samples[0]["GT"] or ()
                if all(g in (0, None) for g in gt):
                    continue
            for i, alt in enumerate(rec.alts or ()):
                if alt in ("*", ".") or alt.startswith("<"):
                    continue
                af_field = rec.info.get("AF")
                af = af_field[i] if isinstance(af_field, tuple) else af_field
                af = None if af is None else round(float(af), 6)  # VCF floats are float32
                key = (rec.chrom, rec.pos, rec.ref, alt)
                old = calls.get(key)
                calls[key] = af if old is None or (af is not None and af > old) else old
    return calls


def read_vcf_calls(vcf: str, reference: str, pass_only: bool = True) -> dict[Key, float | None]:
    """A caller's VCF as ``{key: AF}``: INFO/AF, else FORMAT/AD, else ``None``.

    Multi-allelic records are split and indels left-aligned (``bcftools norm -f
    reference -m -any``) first. With ``pass_only``, records with a FILTER other than
    PASS (or ``.``) are dropped.
    """
    with tempfile.TemporaryDirectory() as tmp:
        annotated = _with_af(vcf, os.path.join(tmp, "af.vcf"))
        return _read_normalised(normalise(annotated, reference, os.path.join(tmp, "norm.vcf")), pass_only)


def ivar_to_vcf_alleles(ref_base: str, alt: str) -> tuple[str, str]:
    """iVar's REF/ALT to VCF alleles at the same POS.

    ``+ACG`` is an insertion after POS (``A`` -> ``AACG`` for REF ``A``), ``-ACG`` a
    deletion of the bases after POS (``AACG`` -> ``A``); anything else is a base.
    """
    if alt.startswith("+"):
        return ref_base, ref_base + alt[1:]
    if alt.startswith("-"):
        return ref_base + alt[1:], ref_base
    return ref_base, alt


def read_ivar_tsv(tsv: str, reference: str, pass_only: bool = True) -> dict[Key, float | None]:
    """``ivar variants`` output as ``{key: ALT_FREQ}``, normalised like a VCF.

    With ``pass_only``, rows whose ``PASS`` column is not ``TRUE`` are dropped. Rows
    repeated for several GFF features count once.
    """
    rows: dict[tuple[str, int, str, str], float] = {}
    with open(tsv, newline="") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            if pass_only and r["PASS"].upper() != "TRUE":
                continue
            ref, alt = ivar_to_vcf_alleles(r["REF"], r["ALT"])
            rows[(r["REGION"], int(r["POS"]), ref, alt)] = float(r["ALT_FREQ"])
    with pysam.FastaFile(reference) as fa:
        contigs = list(zip(fa.references, fa.lengths, strict=True))
    order = {name: i for i, (name, _) in enumerate(contigs)}
    lines = ["##fileformat=VCFv4.2"]
    lines += [f"##contig=<ID={name},length={length}>" for name, length in contigs]
    lines += [
        '##INFO=<ID=AF,Number=A,Type=Float,Description="iVar ALT_FREQ">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    for (chrom, pos, ref, alt), af in sorted(rows.items(), key=lambda kv: (order[kv[0][0]], kv[0][1:])):
        lines.append(f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\tAF={af:.6g}")
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "ivar.vcf")
        with open(raw, "w") as out:
            out.write("\n".join(lines) + "\n")
        return _read_normalised(normalise(raw, reference, os.path.join(tmp, "norm.vcf")), pass_only=False)


def frequency_bin(hf: float, bins: tuple[float, ...] = DEFAULT_BINS) -> float:
    """The bin of a designed frequency: the largest bin edge <= ``hf`` (within 1e-6
    relative), or the smallest edge when ``hf`` is below all of them."""
    edges = sorted(bins, reverse=True)
    for edge in edges:
        if hf >= edge * (1 - 1e-6):
            return edge
    return edges[-1]


@dataclass
class Evaluation:
    """Calls against truth; ``found[kind][bin] = (true positives, true alleles)``."""

    bins: tuple[float, ...]
    found: dict[str, dict[float, tuple[int, int]]]
    false_positives: list[Key]
    false_negatives: list[Key]
    af_errors: dict[Key, float]  # true positives with an AF: (called - truth AF) x 100
    genome_length: int
    artefact_false_positives: list[Key] = field(default_factory=list)

    def recall(self, kind: str, bin_: float) -> float | None:
        tp, n = self.found[kind][bin_]
        return tp / n if n else None

    @property
    def fp_per_30kb(self) -> float:
        return len(self.false_positives) * FP_SCALE / self.genome_length

    def af_error_summary(self) -> dict[str, float | int | None]:
        errs = list(self.af_errors.values())
        if not errs:
            return {"n": 0, "median_abs": None, "max_abs": None, "mean": None}
        return {
            "n": len(errs),
            "median_abs": statistics.median(abs(e) for e in errs),
            "max_abs": max(abs(e) for e in errs),
            "mean": statistics.fmean(errs),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "bins": list(self.bins),
            "recall": {
                kind: {f"{b:g}": {"tp": tp, "n": n, "recall": tp / n if n else None} for b, (tp, n) in per.items()}
                for kind, per in self.found.items()
            },
            "false_positives": len(self.false_positives),
            "fp_per_30kb": self.fp_per_30kb,
            "artefact_false_positives": len(self.artefact_false_positives),
            "false_positive_keys": [list(k) for k in self.false_positives],
            "false_negative_keys": [list(k) for k in self.false_negatives],
            "af_error_pp": self.af_error_summary(),
        }

    def table(self) -> str:
        head = f"{'recall':8s}" + "".join(f"{f'HF {b * 100:g}%':>14s}" for b in self.bins)
        rows = [head]
        for kind in KINDS:
            cells = []
            for b in self.bins:
                tp, n = self.found[kind][b]
                cells.append(f"{tp}/{n} {tp / n:.2f}" if n else "-")
            rows.append(f"{kind:8s}" + "".join(f"{c:>14s}" for c in cells))
        rows.append(
            f"false positives: {len(self.false_positives)} ({self.fp_per_30kb:.1f} per 30 kb; "
            f"{len(self.artefact_false_positives)} at artefact sites)"
        )
        s = self.af_error_summary()
        if s["n"]:
            rows.append(
                f"AF error of true positives (called - truth, pp): median |e| {s['median_abs']:.2f}, "
                f"max |e| {s['max_abs']:.2f}, mean {s['mean']:+.2f} (n={s['n']})"
            )
        return "\n".join(rows)


def evaluate(
    calls: dict[Key, float | None],
    truth: list[TruthVariant],
    genome_length: int,
    bins: tuple[float, ...] = DEFAULT_BINS,
    artefacts: Iterable[Key] = (),
) -> Evaluation:
    """Match ``calls`` to ``truth`` by key; see :class:`Evaluation`."""
    found: dict[str, dict[float, tuple[int, int]]] = {k: {b: (0, 0) for b in bins} for k in KINDS}
    truth_keys = {t.key for t in truth}
    af_errors: dict[Key, float] = {}
    missed: list[Key] = []
    for t in truth:
        hit = t.key in calls
        b = frequency_bin(t.hf, bins)
        for kind in (t.kind, "all"):
            tp, n = found[kind][b]
            found[kind][b] = (tp + hit, n + 1)
        if not hit:
            missed.append(t.key)
        elif (af := calls[t.key]) is not None:
            af_errors[t.key] = (af - t.af) * 100.0
    arte = set(artefacts)
    fps = sorted(k for k in calls if k not in truth_keys)
    return Evaluation(
        bins=tuple(bins),
        found=found,
        false_positives=fps,
        false_negatives=missed,
        af_errors=af_errors,
        genome_length=genome_length,
        artefact_false_positives=[k for k in fps if k in arte],
    )
