"""Smoke test of bench/bench_viral_cohort.py at a tiny shape (2 samples, 6 kb, 300 pairs per
amplicon): the samples share one reference and scheme but not their alleles, a second
call reuses them, the iVar scripts hold the lab's commands, the scoring pools per band,
and (e2e) the whole benchmark runs both tools and writes its JSON. Nothing is timed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.bench_viral_cohort as bvc  # noqa: E402
from bench.evaluation.afeval import Evaluation  # noqa: E402

TINY = {"n": 2, "seed": 1000, "reference_seed": 7, "length": 6000, "depth": 300.0, "alleles_per_fraction": 5}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("viral-cohort")
    data, made = bvc.ensure_data(workdir, **TINY)
    assert made["generated"] == 2 and made["reused"] == 0
    return workdir, data


def test_samples_share_reference_and_scheme_not_alleles(cohort: tuple[Path, Path]) -> None:
    workdir, data = cohort
    a, b = (data / s for s in bvc.sample_names(2))
    assert bvc.sample_names(2) == ["S001", "S002"]
    for f in ("virus.fa", "scheme.primer.bed"):
        assert (a / f).read_bytes() == (b / f).read_bytes() == (data / f).read_bytes()
    assert (data / "virus.fa.fai").exists()
    truths = [bvc.read_truth(str(d / "truth.vcf.gz")) for d in (a, b)]
    assert {t.key for t in truths[0]} != {t.key for t in truths[1]}
    assert (a / "mixture.bam").read_bytes() != (b / "mixture.bam").read_bytes()
    # the generator's own functions are back in place after generating
    amp = bvc._amplicon()
    assert amp.design_scheme.__name__ == "design_scheme" and amp.gen._random_contig.__name__ == "_random_contig"
    _, again = bvc.ensure_data(workdir, **TINY)
    assert again["generated"] == 0 and again["reused"] == 2


def test_ivar_scripts_hold_the_lab_commands(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    _, data = cohort
    jobs = bvc.write_ivar_jobs(data, ["S001", "S002"], tmp_path / "ivar")
    lines = jobs.read_text().splitlines()
    assert lines == [f"bash {tmp_path / 'ivar' / s / 'run.sh'}" for s in ("S001", "S002")]
    script = (tmp_path / "ivar" / "S001" / "run.sh").read_text()
    assert f"ivar trim -e -i {data / 'S001' / 'mixture.bam'} -b {data / 'scheme.primer.bed'} -p trimmed -m 30 -q 0" \
        in script
    assert "samtools mpileup -aa -A -d 0 -B -Q 0 --reference" in script
    assert "ivar variants -p variants -q 20 -t 0.01 -r" in script
    assert "ivar consensus -p consensus -t 0.75 -m 10" in script


def test_tally_pools_bands_and_splits_false_positives() -> None:
    def ev(tp1: int, fps: int, arte: int) -> Evaluation:
        found = {k: {b: (0, 0) for b in bvc.FRACTIONS} for k in ("snv", "indel", "all")}
        found["all"][0.01] = (tp1, 4)
        keys = [("virus", i, "A", "C") for i in range(fps)]
        return Evaluation(bins=bvc.FRACTIONS, found=found, false_positives=keys, false_negatives=[],
                          af_errors={}, genome_length=30_000, artefact_false_positives=keys[:arte])

    t = bvc.Tally()
    t.add(ev(4, 3, 1))
    t.add(ev(1, 0, 0))
    assert t.recall(0.01) == 5 / 8 and t.recall(0.02) is None
    assert t.fp_mean() == 1.5 and t.fp_mean("artefact") == 0.5 and t.fp_mean("other") == 1.0
    assert bvc.compare_consensus("ACGTNN", "ACTTNA") == {"ours_n": 2, "ivar_n": 1, "ours_len": 6, "ivar_len": 6,
                                                         "differ": 1, "n_ours_only": 1, "n_ivar_only": 0}
    assert bvc.compare_consensus("ACGT", "ACG")["differ"] is None


@pytest.mark.e2e
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("ivar", "samtools", "parallel")),
                    reason="needs ivar, samtools and GNU parallel")
def test_benchmark_runs_both_tools(cohort: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    workdir, _ = cohort
    out = workdir / "result.json"
    code = bvc.main(["--samples", "2", "--length", "6000", "--depth", "300", "--alleles-per-fraction", "5",
                     "--workdir", str(workdir), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "ratio workflow wall / iVar wall:" in printed
    res = json.loads(out.read_text())
    assert res["data"]["samples"] == 2 and res["data"]["generated"] == 0
    rows = {r["tool"]: r for r in res["rows"]}
    for tool in ("workflow", "ivar"):
        assert rows[tool]["wall_s"] > 0 and rows[tool]["score"]["samples_scored"] == 2
        assert rows[tool]["score"]["recall"]["0.05"]["n"] == 10
    assert res["ratio_wall"] > 0 and res["consensus"]["summary"]["samples"] == 2
    assert rows["workflow"]["phases_s"]["call"] is not None
