"""Cohorts: joint calling of every sample together (bcftools engine), and the cluster
scatter mode (executor.runner: snakemake) that runs the same calls as Snakemake jobs.

The joint VCF must equal one whole-genome ``bcftools mpileup`` of all BAMs piped into
``bcftools call -m``, record for record, however the genome is cut."""

from __future__ import annotations

from pathlib import Path

import pysam
import pytest
from conftest import SAMPLES
from helpers import DATA, serial
from test_e2e import make_workdir, snakemake

from bench.evaluation.vcfcompare import vcf_body
from functions.bcftools_engine import BcftoolsParams
from functions.core.cram import is_cram
from functions.core.storage import ObjectStore
from functions.engines import run_engine
from pipeline.call import CallError, CallInputs, call_samples, share
from pipeline.config import ConfigError, load_settings
from pipeline.executor import SerialRunner
from pipeline.manifests import CallResults, ScatterShare
from pipeline.merge import merge_sample
from pipeline.plan import PlanError, PlanInput, PlanSettings, plan_input, plan_joint
from pipeline.stage import stage_reference, stage_sample

REF = DATA / "ref.fa"


def whole_joint(bams: list[Path], out: Path) -> list[str]:
    """The single whole-genome joint run: ``bcftools mpileup`` of all BAMs | ``bcftools call -m``."""
    path = out / ("whole." + "+".join(b.stem for b in bams) + ".vcf")
    if not path.exists():
        run_engine(BcftoolsParams(), [str(b) for b in bams], str(REF), str(path))
    return vcf_body(str(path))


def staged_inputs(store: ObjectStore, bams: dict[str, Path], work: Path) -> tuple[dict, dict, list[PlanInput]]:
    work.mkdir(parents=True, exist_ok=True)
    ref = stage_reference(store, str(REF), work / "ref.json")
    mans = {s: stage_sample(store, s, str(b), f"{b}.crai" if is_cram(str(b)) else f"{b}.bai", work / f"{s}.json")
            for s, b in bams.items()}
    return ref, mans, [plan_input(store, s, m, ref) for s, m in mans.items()]


def call_jointly(store: ObjectStore, bams: dict[str, Path], work: Path, n_regions: int,
                 runner: SerialRunner | None = None) -> tuple[str, list]:
    """Stage, plan jointly, call and merge in-process; returns (VCF, plans)."""
    ref, mans, inputs = staged_inputs(store, bams, work)
    plans = plan_joint(inputs, PlanSettings(n_regions=n_regions))
    calls = work / "cohort.calls.json"
    call_samples(CallInputs(store, plans, mans, ref, BcftoolsParams(), cohort="cohort"), runner or serial(store),
                 {"cohort": calls})
    vcf = work / "cohort.vcf.gz"
    merge_sample(store, calls, str(REF), str(vcf), str(work / "cohort.stats.txt"))
    return str(vcf), plans


@pytest.mark.parametrize("n_regions", [1, 5, 17])
def test_joint_calls_equal_one_whole_genome_joint_run(store: ObjectStore, tmp_path: Path, n_regions: int) -> None:
    bams = {s: DATA / f"{s}.bam" for s in SAMPLES}
    vcf, plans = call_jointly(store, bams, tmp_path, n_regions)
    want = whole_joint(list(bams.values()), tmp_path)
    assert len(want) > 200
    assert vcf_body(vcf) == want
    with pysam.VariantFile(vcf) as fh:
        assert list(fh.header.samples) == list(SAMPLES)
    # One plan per sample, the same regions in each, each with its own BAM's bytes.
    assert [p.sample for p in plans] == list(SAMPLES)
    assert len({tuple(r.name for r in p.regions) for p in plans}) == 1
    assert len(plans[0].regions) >= min(n_regions, 3)
    assert all(p.regions[0].chunks for p in plans)


def test_joint_call_with_a_sample_that_has_no_reads_in_some_regions(store: ObjectStore, tmp_path: Path) -> None:
    """sampleB restricted to chr1: on chr2 and chr3 its slices are empty, and its column
    must still be there, as in the whole-genome run."""
    only_chr1 = tmp_path / "sampleB_chr1.bam"
    pysam.view("-b", "-o", str(only_chr1), str(DATA / "sampleB.bam"), "chr1", catch_stdout=False)
    pysam.index(str(only_chr1))
    bams = {"sampleA": DATA / "sampleA.bam", "sampleB": only_chr1}
    vcf, plans = call_jointly(store, bams, tmp_path, 6)
    b = plans[1]
    assert any(not r.chunks for r in b.regions) and any(r.chunks for r in b.regions)
    assert vcf_body(vcf) == whole_joint(list(bams.values()), tmp_path)


def test_joint_plan_refuses_bams_of_another_reference(store: ObjectStore, tmp_path: Path) -> None:
    _, _, inputs = staged_inputs(store, {s: DATA / f"{s}.bam" for s in SAMPLES}, tmp_path)
    other = PlanInput("sampleB", inputs[1].index, inputs[1].contigs[::-1], inputs[1].bam_key, inputs[1].bam_size)
    with pytest.raises(PlanError, match="sampleB's BAM lists other contigs .* same reference"):
        plan_joint([inputs[0], other], PlanSettings(n_regions=4))


def test_share_splits_every_task_once_and_balances_bytes() -> None:
    tasks = [{"out_key": f"k{i}", "region": {"est_bytes": (i * 7919) % 1000 + 1}} for i in range(40)]
    shares = [share(tasks, j, 6) for j in range(6)]
    keys = [t["out_key"] for s in shares for t in s]
    assert sorted(keys) == sorted(t["out_key"] for t in tasks)
    loads = [sum(t["region"]["est_bytes"] for t in s) for s in shares]
    assert max(loads) - min(loads) <= max(t["region"]["est_bytes"] for t in tasks)
    assert share(list(reversed(tasks)), 2, 6) == shares[2]  # the split does not depend on the order given
    with pytest.raises(CallError, match="scatter job 6 is not one of 0..5"):
        share(tasks, 6, 6)


def config(**calling: object) -> dict:
    """The default run's inputs with this ``calling`` section (run from the repository root:
    the sample sheet's paths are relative to it)."""
    return {"reference": str(REF), "samples": "config/samples.tsv",
            "lithops_config": "config/lithops/localhost.yaml", "calling": calling}


def test_joint_mode_needs_a_joint_engine_and_a_free_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).parent.parent)
    assert load_settings(config(mode="joint")).cohort == "cohort"
    assert load_settings(config()).cohort is None
    with pytest.raises(ConfigError, match="engine lowfreq calls one sample at a time; joint mode needs engine"):
        load_settings(config(mode="joint", engine="lowfreq"))
    with pytest.raises(ConfigError, match="cohort 'sampleA' is also a sample's name"):
        load_settings(config(mode="joint", cohort="sampleA"))
    with pytest.raises(ConfigError, match="calling.cohort 'a/b' is not allowed"):
        load_settings(config(mode="joint", cohort="a/b"))


# -- through the real snakemake command line -------------------------------------------------

@pytest.mark.e2e
def test_joint_mode_through_snakemake(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "run", calling__mode="joint", calling__cohort="lab7", plan__n_regions=9)
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    vcf = wd / "results" / "lab7.vcf.gz"
    assert (wd / "results" / "lab7.vcf.gz.tbi").exists() and (wd / "results" / "lab7.stats.txt").exists()
    assert not list((wd / "results").glob("sample*.vcf.gz"))  # joint mode writes the cohort's VCF only
    assert vcf_body(str(vcf)) == whole_joint([DATA / f"{s}.bam" for s in SAMPLES], tmp_path)
    calls = CallResults.read(wd / "work" / "calls" / "lab7.json")
    assert calls.samples == SAMPLES and len(calls.fragments) >= 9
    # The run report has a row per sample of the cohort's VCF.
    page = (wd / "results" / "report.html").read_text()
    assert all(f"<td>{s} (lab7)</td>" in page for s in SAMPLES)


@pytest.mark.e2e
def test_scatter_mode_runs_the_calls_as_snakemake_jobs(tmp_path: Path) -> None:
    """executor.runner snakemake: the regions of both samples split into 3 jobs; the VCFs
    equal the Lithops run's; every region ran in exactly one job; a lost fragment is
    recomputed by rerunning the scatter jobs, which reuse the rest."""
    lithops = make_workdir(tmp_path / "lithops", plan__n_regions=5)
    assert (res := snakemake(lithops)).returncode == 0, res.stderr[-3000:]
    wd = make_workdir(tmp_path / "scatter", plan__n_regions=5, executor__runner="snakemake", executor__jobs=3)
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    for s in SAMPLES:
        assert vcf_body(str(wd / "results" / f"{s}.vcf.gz")) == vcf_body(str(lithops / "results" / f"{s}.vcf.gz"))
    jobs = [ScatterShare.read(wd / "work" / "scatter" / f"{j}.json") for j in range(3)]
    ran = [k for j in jobs for k in j.fragments]
    manifests = [CallResults.read(wd / "work" / "calls" / f"{s}.json") for s in SAMPLES]
    assert sorted(ran) == sorted(f["out_key"] for m in manifests for f in m.fragments)
    assert all(j.fragments for j in jobs) and all(not f["reused"] for j in jobs for f in j.fragments.values())
    assert "call_scatter" in res.stderr

    # Lose one fragment: the gather step names it and the fix; the fix works.
    lost = manifests[0].fragments[2]["out_key"]
    store_root = next((wd / "tmp").glob("lithops-*/storage"))
    for f in store_root.rglob(Path(lost).name + ".vcf.gz"):
        f.unlink()
    res = snakemake(wd, "--forcerun", "call")
    assert res.returncode != 0
    assert "have no intact fragment after the scatter jobs ran" in res.stderr
    assert "--forcerun call_scatter" in res.stderr
    res = snakemake(wd, "--forcerun", "call_scatter")
    assert res.returncode == 0, res.stderr[-3000:]
    again = [ScatterShare.read(wd / "work" / "scatter" / f"{j}.json") for j in range(3)]
    computed = [k for j in again for k, f in j.fragments.items() if not f["reused"]]
    assert computed == [lost]
    for s in SAMPLES:
        assert vcf_body(str(wd / "results" / f"{s}.vcf.gz")) == vcf_body(str(lithops / "results" / f"{s}.vcf.gz"))
