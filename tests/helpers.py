"""Test helpers: run the whole core path in-process on a sample (stage, plan, call,
merge), the single whole-genome run it must equal, and the comparison of the two."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from bench.evaluation.vcfcompare import vcf_body
from functions.bcftools_engine import BcftoolsParams
from functions.core.storage import ObjectStore
from functions.engines import EngineParams, context_padding, run_engine
from pipeline.call import CallInputs, CallSummary, call_samples
from pipeline.executor import SerialRunner
from pipeline.merge import merge_sample
from pipeline.plan import PlanSettings, SamplePlan, plan_from_store, write_plan
from pipeline.stage import stage_reference, stage_sample

DATA = Path(__file__).resolve().parent.parent / "test_data"


def whole_genome(sample: str, out: Path, params: EngineParams | None = None,
                 bam: Path | None = None, reference: Path | None = None) -> str:
    """One whole-genome run of the engine on the BAM (bcftools by default), cached per params."""
    params = params or BcftoolsParams()
    path = out / f"{sample}.whole.{params.ENGINE}.{abs(hash(params))}.vcf"
    if not path.exists():
        run_engine(params, str(bam or DATA / f"{sample}.bam"), str(reference or DATA / "ref.fa"), str(path))
    return str(path)


def run_core(
    store: ObjectStore,
    sample: str,
    workdir: Path,
    runner,  # type: ignore[no-untyped-def]
    n_regions: int | None = None,
    cuts: dict[str, list[int]] | None = None,
    params: EngineParams | None = None,
    bam: Path | None = None,
    reference: Path | None = None,
    padding: int | None = None,
) -> tuple[str, SamplePlan, CallSummary]:
    """Stage, plan, call and merge one sample; returns (VCF path, plan, summary).

    The sample's BAM and the reference are the bundled ones unless given; ``padding``
    is the engine's (a workflow run's with ``plan.padding: null``) unless given.
    """
    params = params or BcftoolsParams()
    bam = bam or DATA / f"{sample}.bam"
    reference = reference or DATA / "ref.fa"
    workdir.mkdir(parents=True, exist_ok=True)
    ref = stage_reference(store, str(reference), workdir / "ref.json")
    man = stage_sample(store, sample, str(bam), f"{bam}.bai", workdir / f"{sample}.json")
    if padding is None:
        padding = context_padding(params.ENGINE, params.as_dict())
    settings = PlanSettings(n_regions=n_regions or 1, padding=padding)
    plan = plan_from_store(store, sample, man, settings, cuts)
    write_plan(plan, workdir / f"{sample}.plan.tsv")
    calls = workdir / f"{sample}.calls.json"
    summary = call_samples(CallInputs(store, [plan], {sample: man}, ref, params), runner, {sample: calls})
    vcf = workdir / f"{sample}.vcf.gz"
    merge_sample(store, calls, str(reference), str(vcf), str(workdir / f"{sample}.stats.txt"))
    return str(vcf), plan, summary


def serial(store: ObjectStore, retries: int = 0) -> SerialRunner:
    """The in-process runner over the test store's own Lithops storage."""
    return SerialRunner(retries=retries, progress=False, storage=store.lithops_storage)


def assert_same(vcf: str, whole: str) -> None:
    got, want = vcf_body(vcf), vcf_body(whole)
    assert len(want) > 100, "the whole-genome run should call plenty of variants"
    missing = [r[:60] for r in want if r not in set(got)][:3]
    extra = [r[:60] for r in got if r not in set(want)][:3]
    assert got == want, f"{len(got)} vs {len(want)} records; missing {missing}, extra {extra}"


def tricky_cuts(sample: str, whole: str) -> tuple[dict[str, list[int]], list[str]]:
    """0-based cut positions on a SNV, inside deletions and inside insertions."""
    cuts: dict[str, list[int]] = {}
    kinds: list[str] = []
    seen = set()
    for line in vcf_body(whole):
        f = line.split("\t")
        chrom, pos, ref, alt = f[0], int(f[1]), f[3], f[4].split(",")[0]
        if len(ref) == 1 and len(alt) == 1:
            kind, at = "snv", [pos - 1, pos]  # the SNV opens one region and closes another
        elif len(ref) > len(alt):
            kind, at = "deletion", [pos + 1]  # between two deleted bases
        elif len(alt) > len(ref) and len(ref) == 1:
            kind, at = "insertion", [pos]  # right after the anchor: inside the insertion
        elif len(alt) > len(ref):
            kind, at = "insertion-in-repeat", [pos + len(ref) // 2]  # inside the REF span
        else:
            continue
        if (chrom, kind) in seen:
            continue
        seen.add((chrom, kind))
        kinds.append(kind)
        cuts.setdefault(chrom, []).extend(at)
    return cuts, kinds


def load_generator(name: str) -> ModuleType:
    """``test_data/<name>.py``, registered in ``sys.modules`` under ``name``: its forked
    workers unpickle tasks by module name."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DATA / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def load_viral() -> ModuleType:
    """``test_data/viral.py`` (see :func:`load_generator`)."""
    return load_generator("viral")
