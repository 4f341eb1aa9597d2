"""Test helpers: run the whole core path in-process on a sample (stage, plan, call,
merge) and the single whole-genome run it must equal."""

from __future__ import annotations

from pathlib import Path

from functions.bcftools_engine import BcftoolsParams, run_bcftools
from pipeline.call import CallSummary, call_samples
from pipeline.executor import SerialRunner
from pipeline.merge import merge_sample
from pipeline.plan import PlanSettings, SamplePlan, plan_from_store, write_plan
from pipeline.stage import stage_reference, stage_sample
from pipeline.storage import ObjectStore

DATA = Path(__file__).resolve().parent.parent / "test_data"


def whole_genome(sample: str, out: Path, params: BcftoolsParams | None = None) -> str:
    """One whole-genome ``bcftools mpileup | call`` on the BAM, cached per params."""
    params = params or BcftoolsParams()
    path = out / f"{sample}.whole.{abs(hash(params))}.vcf"
    if not path.exists():
        run_bcftools(str(DATA / f"{sample}.bam"), str(DATA / "ref.fa"), params, str(path))
    return str(path)


def run_core(
    store: ObjectStore,
    sample: str,
    workdir: Path,
    runner,  # type: ignore[no-untyped-def]
    n_regions: int | None = None,
    cuts: dict[str, list[int]] | None = None,
    params: BcftoolsParams | None = None,
) -> tuple[str, SamplePlan, CallSummary]:
    """Stage, plan, call and merge one sample; returns (VCF path, plan, summary)."""
    params = params or BcftoolsParams()
    workdir.mkdir(parents=True, exist_ok=True)
    ref = stage_reference(store, str(DATA / "ref.fa"), workdir / "ref.json")
    man = stage_sample(store, sample, str(DATA / f"{sample}.bam"), str(DATA / f"{sample}.bam.bai"),
                       workdir / f"{sample}.json")
    settings = PlanSettings(n_regions=n_regions or 1)
    plan = plan_from_store(store, sample, man, settings, cuts)
    write_plan(plan, workdir / f"{sample}.plan.tsv")
    calls = workdir / f"{sample}.calls.json"
    summary = call_samples(store, [plan], {sample: man}, ref, params, runner, {sample: calls})
    vcf = workdir / f"{sample}.vcf.gz"
    merge_sample(store, calls, str(DATA / "ref.fa"), str(vcf), str(workdir / f"{sample}.stats.txt"))
    return str(vcf), plan, summary


def serial(store: ObjectStore, retries: int = 0) -> SerialRunner:
    """The in-process runner over the test store's own Lithops storage."""
    return SerialRunner(retries=retries, progress=False, storage=store.lithops_storage)
