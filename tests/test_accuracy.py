"""Accuracy against truth: the pipeline's calls on the bundled samples, scored
against the simulation's truth VCFs (both normalised with bcftools norm).

Floors are set from what bcftools itself achieves on this data (precision and
recall 1.000 for SNVs and indels on both samples, see test_data/README.md), with a
small margin: they catch a pipeline that loses or invents calls, not caller noise.
"""

from __future__ import annotations

import pytest
from conftest import SAMPLES
from helpers import DATA, run_core, serial

from bench.evaluation.vcfcompare import accuracy

FLOORS = {"snv": (0.99, 0.99), "indel": (0.98, 0.98)}  # (precision, recall)


@pytest.mark.parametrize("sample", SAMPLES)
def test_precision_recall_against_truth(store, tmp_path, sample: str, capsys) -> None:
    vcf, _, _ = run_core(store, sample, tmp_path, serial(store), 7)
    scores = accuracy(vcf, str(DATA / "truth" / f"{sample}.vcf.gz"), str(DATA / "ref.fa"))
    with capsys.disabled():
        for s in scores.values():
            print(f"\n[accuracy] {sample} {s}", end="")
    for kind, (p_min, r_min) in FLOORS.items():
        s = scores[kind]
        assert s.tp + s.fn > 40, f"truth should hold plenty of {kind}s"
        assert s.precision >= p_min, str(s)
        assert s.recall >= r_min, str(s)
