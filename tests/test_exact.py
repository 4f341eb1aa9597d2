"""The test of the whole design: the merged VCF equals one whole-genome run, record
for record, whatever the plan — including cuts on a SNV, inside a deletion and
inside an insertion — through the serial runner and through Lithops."""

from __future__ import annotations

import pytest
from conftest import LITHOPS_LOCAL, SAMPLES
from helpers import DATA, assert_same, run_core, serial, tricky_cuts, whole_genome

from functions.bcftools_engine import BcftoolsParams, EngineError, run_bcftools
from functions.core.fai import parse_fai
from pipeline.call import CallError, CallInputs, call_samples, make_tasks
from pipeline.executor import LithopsRunner
from pipeline.fanout import StagedInputError
from pipeline.manifests import StagedReference, StagedSample
from pipeline.merge import MergeError, merge_sample
from pipeline.plan import read_plan


@pytest.fixture(scope="module")
def wg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("whole")
    return {s: whole_genome(s, out) for s in SAMPLES}


@pytest.mark.parametrize("sample", SAMPLES)
@pytest.mark.parametrize("n_regions", [1, 3, 17, 60])
def test_serial_plan_sizes(store, tmp_path, wg, sample: str, n_regions: int) -> None:
    vcf, plan, summary = run_core(store, sample, tmp_path, serial(store), n_regions)
    # One region per contig at least: three contigs hold reads.
    assert len(plan.regions) == max(n_regions, 3)
    assert summary.computed == len(plan.regions)
    assert_same(vcf, wg[sample])


@pytest.mark.parametrize("sample", SAMPLES)
def test_cuts_on_snv_and_inside_indels(store, tmp_path, wg, sample: str) -> None:
    cuts, kinds = tricky_cuts(sample, wg[sample])
    assert {"snv", "deletion", "insertion"} <= set(kinds)
    vcf, plan, _ = run_core(store, sample, tmp_path, serial(store), cuts=cuts)
    starts = {(r.chrom, r.start) for r in plan.regions}
    assert all((c, p) in starts for c, ps in cuts.items() for p in ps), "every cut is a region edge"
    assert_same(vcf, wg[sample])


def test_lithops_runner_same_result(store, tmp_path, wg) -> None:
    runner = LithopsRunner(LITHOPS_LOCAL, retries=0, progress=False)
    vcf, plan, summary = run_core(store, "sampleA", tmp_path, runner, 17)
    assert summary.computed == 17
    assert_same(vcf, wg["sampleA"])


def test_resume_recomputes_only_deleted_fragments(store, tmp_path, wg) -> None:
    runner = serial(store)
    run_core(store, "sampleB", tmp_path, runner, 9)
    frags = sorted(k for k in store.list(store.key("fragments", "sampleB") + "/") if k.endswith(".vcf.gz"))
    assert len(frags) == 9
    for k in (frags[1], frags[6]):
        store.delete(k)
    vcf, _, summary = run_core(store, "sampleB", tmp_path, runner, 9)
    assert (summary.computed, summary.reused) == (2, 7)
    assert_same(vcf, wg["sampleB"])
    # A change of parameters is other work: nothing is reused.
    _, _, summary = run_core(store, "sampleB", tmp_path, runner, 9, params=BcftoolsParams(min_baseq=20))
    assert (summary.computed, summary.reused) == (9, 0)


def test_data_is_there() -> None:
    assert (DATA / "sampleA.bam.bai").exists()



def test_inputs_lost_from_the_store_stop_the_run_before_any_function(store, tmp_path) -> None:
    runner = serial(store)
    run_core(store, "sampleA", tmp_path, runner, 3)
    store.delete(store.key("inputs", "sampleA", "sampleA.bam"))
    man = StagedSample.read(tmp_path / "sampleA.json")
    ref = StagedReference.read(tmp_path / "ref.json")
    plan = read_plan(tmp_path / "sampleA.plan.tsv")
    with pytest.raises(StagedInputError, match=r"staged input .*sampleA.bam .* is missing from the object store"):
        call_samples(CallInputs(store, [plan], {"sampleA": man}, ref, BcftoolsParams()), runner,
                     {"sampleA": tmp_path / "c.json"})


def test_reference_of_another_length_is_refused(store, tmp_path) -> None:
    run_core(store, "sampleB", tmp_path, serial(store), 3)
    fai = parse_fai((DATA / "ref.fa.fai").read_text().replace("\t97000\t", "\t96000\t"))
    man = StagedSample.read(tmp_path / "sampleB.json")
    ref = StagedReference.read(tmp_path / "ref.json")
    with pytest.raises(CallError, match=r"contig 'chr2' \(97000 bp in sample sampleB's BAM\) has length 96000"):
        make_tasks(store, read_plan(tmp_path / "sampleB.plan.tsv"), man, ref, fai, BcftoolsParams())


@pytest.mark.parametrize("damage", ["missing", "altered", "truncated"])
def test_merge_refuses_a_lost_or_damaged_fragment(store, tmp_path, damage: str) -> None:
    run_core(store, "sampleA", tmp_path, serial(store), 3)
    calls = tmp_path / "sampleA.calls.json"
    key = sorted(k for k in store.list(store.key("fragments", "sampleA") + "/") if k.endswith(".vcf.gz"))[1]
    data = store.get(key)
    if damage == "missing":
        store.delete(key)
    else:
        store.put(key, data[:-100] if damage == "truncated" else data[:50] + bytes([data[50] ^ 1]) + data[51:])
    out = tmp_path / "again.vcf.gz"
    word = "missing" if damage == "missing" else r"damaged \(md5 mismatch\)"
    with pytest.raises(MergeError, match=rf"sample sampleA region .*: fragment .* is {word}; "):
        merge_sample(store, calls, str(DATA / "ref.fa"), str(out), str(tmp_path / "again.stats.txt"))
    assert not out.exists() and not (tmp_path / "again.stats.txt").exists()


def test_engine_failure_carries_bcftools_own_words(tmp_path) -> None:
    with pytest.raises(EngineError, match=r"bcftools mpileup .*failed: \[E::hts_open_format\] Failed to open file"):
        run_bcftools(str(tmp_path / "missing.bam"), str(DATA / "ref.fa"), BcftoolsParams(), str(tmp_path / "x.vcf"))
