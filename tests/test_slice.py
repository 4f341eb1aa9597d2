"""The slice a function fetches is complete and bounded (property test), and the
index parser agrees with htslib."""

from __future__ import annotations

import os

import pysam
from conftest import SAMPLES
from helpers import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.core.bai import MAX_BGZF_BLOCK, coffset, parse_bai, reg2bins
from functions.core.tasks import BamSlice, ObjectRef
from functions.slice import fetch_bam_slice
from pipeline.plan import PlanSettings, plan_sample
from pipeline.stage import stage_sample

CONTIGS = {s: pysam.AlignmentFile(str(DATA / f"{s}.bam")).header for s in SAMPLES}


def test_reg2bins_matches_spec_examples() -> None:
    # The first 16 kb window: root, then the first bin of each level.
    assert reg2bins(0, 1) == [0, 1, 9, 73, 585, 4681]
    # Crossing a 16 kb boundary adds the next leaf bin.
    assert reg2bins(16383, 16385)[-2:] == [4681, 4682]


def test_index_counts_match_idxstats() -> None:
    for s in SAMPLES:
        index = parse_bai((DATA / f"{s}.bam.bai").read_bytes())
        stats = [ln for ln in pysam.idxstats(str(DATA / f"{s}.bam")).splitlines() if not ln.startswith("*")]
        for ref, line in zip(index.refs, stats, strict=True):
            assert ref.n_mapped == int(line.split("\t")[2])


@st.composite
def regions(draw: st.DrawFn) -> tuple[str, str, int, int]:
    sample = draw(st.sampled_from(SAMPLES))
    header = CONTIGS[sample]
    tid = draw(st.integers(0, header.nreferences - 1))
    length = header.get_reference_length(header.get_reference_name(tid))
    start = draw(st.integers(0, length - 1))
    width = draw(st.sampled_from([1, 10, 150, 1000, 16384, 50000, length]))
    return sample, header.get_reference_name(tid), start, min(length, start + width)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(region=regions())
def test_slice_holds_every_read_and_no_more_bytes_than_bound(store, tmp_path, region) -> None:
    sample, chrom, start, end = region
    man = stage_sample(store, sample, str(DATA / f"{sample}.bam"), str(DATA / f"{sample}.bam.bai"),
                       tmp_path / "m.json")
    index = parse_bai(store.get(man.bai.key))
    header = CONTIGS[sample]
    contigs = tuple(zip(header.references, header.lengths, strict=True))
    plan = plan_sample(sample, index, contigs, man.bam.key, man.bam.size,
                       PlanSettings(n_regions=1), cuts={chrom: [start, end]})
    tid = header.get_tid(chrom)
    with pysam.AlignmentFile(str(DATA / f"{sample}.bam")) as bam:
        want = {(r.query_name, r.flag, r.reference_start) for r in bam.fetch(chrom, start, end)}
    region = next((r for r in plan.regions if r.chrom == chrom and r.start == start), None)
    if region is None:  # no read overlaps the region: the planner gives it no function
        assert not want
        return
    assert region.end == end
    before = store.counts.get_bytes
    gets_before = store.counts.gets
    bam_slice = BamSlice(ObjectRef(man.bam.key), man.bam.size, len(contigs),
                         (plan.header.start, plan.header.end), tid, tuple((c.beg, c.end) for c in region.chunks),
                         tuple((b.start, b.end, b.tail) for b in region.ranges))
    path = fetch_bam_slice(store, bam_slice, str(tmp_path / "slice.bam"))
    fetched = store.counts.get_bytes - before
    with pysam.AlignmentFile(path) as sl:
        got = {(r.query_name, r.flag, r.reference_start) for r in sl.fetch(chrom, start, end)}
    assert want <= got
    bound = region.chunk_bytes + plan.header.end + MAX_BGZF_BLOCK * len(region.ranges)
    assert fetched <= bound
    assert store.counts.gets - gets_before == 1 + sum(1 + b.tail for b in region.ranges)
    # The slice is sparse: only the fetched bytes occupy disk (allow 1 fs block per range).
    assert os.stat(path).st_blocks * 512 <= fetched + 28 + 8192 * (2 + len(region.ranges))
    # Every range starts on a block the index knows.
    assert all(coffset(c.beg) >= plan.header.end for c in region.chunks)
