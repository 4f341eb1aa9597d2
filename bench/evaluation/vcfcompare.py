"""Compare VCFs: record-for-record bodies, and calls against a truth set.

Contract: :func:`vcf_body` returns the data lines of a VCF (plain or gzipped), the
header dropped, so two runs can be compared record for record. :func:`accuracy`
matches calls to truth by (CHROM, POS, REF, ALT allele) after splitting
multi-allelic records, ignoring genotype, and returns precision and recall per
variant class (SNV, indel).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass


def _open(path: str):  # type: ignore[no-untyped-def]
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path)


def vcf_body(path: str) -> list[str]:
    with _open(path) as fh:
        return [line for line in fh if not line.startswith("#")]


def _alleles(path: str, min_qual: float = 0.0) -> dict[str, set[tuple[str, int, str, str]]]:
    out: dict[str, set[tuple[str, int, str, str]]] = {"snv": set(), "indel": set()}
    for line in vcf_body(path):
        f = line.rstrip("\n").split("\t")
        chrom, pos, ref, alts, qual = f[0], int(f[1]), f[3], f[4], f[5]
        if qual != "." and float(qual) < min_qual:
            continue
        if len(f) > 9:
            gt = f[9].split(":")[0].replace("|", "/")
            if set(gt.split("/")) <= {"0", "."}:
                continue  # called reference or no-call
        for alt in alts.split(","):
            if alt in (".", "*", "<*>"):
                continue
            kind = "snv" if len(ref) == 1 and len(alt) == 1 else "indel"
            out[kind].add((chrom, pos, ref, alt))
    return out


@dataclass(frozen=True)
class Accuracy:
    kind: str
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __str__(self) -> str:
        return (
            f"{self.kind:5s} TP={self.tp:4d} FP={self.fp:3d} FN={self.fn:3d} "
            f"precision={self.precision:.4f} recall={self.recall:.4f} F1={self.f1:.4f}"
        )


def normalise(vcf: str, reference: str, out: str) -> str:
    """``bcftools norm``: left-align, trim and split multi-allelic records."""
    import pysam.bcftools

    pysam.bcftools.norm(
        "--fasta-ref", reference, "--multiallelics", "-any", "-Ov", "-o", out, vcf,
        catch_stdout=False,
    )
    return out


def accuracy(called: str, truth: str, reference: str, min_qual: float = 0.0) -> dict[str, Accuracy]:
    """Precision/recall of ``called`` against ``truth``, both normalised first."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        c = _alleles(normalise(called, reference, f"{tmp}/called.vcf"), min_qual)
        t = _alleles(normalise(truth, reference, f"{tmp}/truth.vcf"))
    return {k: Accuracy(k, len(c[k] & t[k]), len(c[k] - t[k]), len(t[k] - c[k])) for k in ("snv", "indel")}
