"""The slice a function fetches is complete and bounded (property test), and the
index parser agrees with htslib."""

from __future__ import annotations

import os
import subprocess
import tracemalloc

import numpy as np
import pysam
from conftest import SAMPLES
from helpers import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.core.bai import MAX_BGZF_BLOCK, coffset, parse_bai, reg2bins
from functions.core.fai import parse_fai
from functions.core.tasks import BamSlice, ObjectRef
from functions.slice import fetch_bam_slice, fetch_reference_window
from pipeline.plan import PlanSettings, _byte_ranges, plan_sample
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
    region = next((r for r in plan.regions if r.chrom == chrom and r.start == start), None)
    with pysam.AlignmentFile(str(DATA / f"{sample}.bam")) as bam:
        want = {(r.query_name, r.flag, r.reference_start) for r in bam.fetch(chrom, start, end)}
        if region is not None:  # the reads the function piles up: those overlapping the context
            want = {(r.query_name, r.flag, r.reference_start)
                    for r in bam.fetch(chrom, region.context_start, region.context_end)}
    if region is None:  # no read overlaps the region: the planner gives it no function
        assert not want
        return
    assert region.end == end
    bound = region.chunk_bytes + plan.header.end + MAX_BGZF_BLOCK * len(region.ranges)
    for scan in (None, region.scan) if region.scan else (None,):
        before = store.counts.get_bytes
        gets_before = store.counts.gets
        ranges = region.ranges if scan else _byte_ranges(region.chunks)
        bam_slice = BamSlice(ObjectRef(man.bam.key), man.bam.size, len(contigs),
                             (plan.header.start, plan.header.end), tid, tuple((c.beg, c.end) for c in region.chunks),
                             tuple((b.start, b.end, b.tail) for b in ranges), scan)
        path = fetch_bam_slice(store, bam_slice, str(tmp_path / "slice.bam"), stop=region.context_end)
        fetched = store.counts.get_bytes - before
        with pysam.AlignmentFile(path) as sl:
            got = {(r.query_name, r.flag, r.reference_start)
                   for r in sl.fetch(chrom, region.context_start, region.context_end)}
        assert want == got
        assert fetched <= bound
        gets = store.counts.gets - gets_before
        if scan is None:
            assert gets == 1 + sum(1 + b.tail for b in ranges)
            unscanned = fetched
        else:  # reading on from the scan: fewer bytes, and most often no more GETs
            assert fetched <= unscanned
            assert gets <= 1 + sum(1 + b.tail for b in ranges) + 3
        # The slice is sparse: only the fetched bytes occupy disk (allow 1 fs block per range).
        assert os.stat(path).st_blocks * 512 <= fetched + 28 + 8192 * (3 + len(ranges))
    # Every range starts on a block the index knows.
    assert all(coffset(c.beg) >= plan.header.end for c in region.chunks)


def test_reference_window_costs_its_window_not_its_position(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A window far along a contig is written in bytes of the window (the ``N`` before it
    are shared compressed blocks), and htslib reads every base of it, and the ``N`` before
    it, at the true coordinates; also a fetch of the whole contig, as bcftools makes."""
    rng = np.random.default_rng(3)
    length = 3_000_000
    seq = "".join(np.array(list("ACGT"))[rng.integers(0, 4, length)])
    fasta = tmp_path / "big.fa"
    fasta.write_text(">HLA-A*01:01:01:01\n" + "".join(seq[i : i + 70] + "\n" for i in range(0, length, 70)))
    pysam.faidx(str(fasta))
    store.put_file("ref/big.fa", str(fasta))
    entry = parse_fai((tmp_path / "big.fa.fai").read_text())["HLA-A*01:01:01:01"]
    sizes = []
    for start, end in [(0, 20_000), (1_234_567, 1_254_567), (length - 20_000, length), (65_280 * 20, 65_280 * 21)]:
        local = str(tmp_path / f"w{start}.fa")
        fetch_reference_window(store, "ref/big.fa", entry, start, end, local)
        sizes.append(os.path.getsize(local) if end - start == 20_000 else 0)
        with pysam.FastaFile(local) as fa:
            assert fa.get_reference_length(entry.name) == end
            assert fa.fetch(entry.name, start, end) == seq[start:end]
            assert fa.fetch(entry.name, start + 777, start + 900) == seq[start + 777 : start + 900]
            if start:
                assert fa.fetch(entry.name, start - 70_000, start + 5) == "N" * 70_000 + seq[start : start + 5]
            assert fa.fetch(entry.name) == "N" * start + seq[start:end]  # bcftools mpileup reads the contig whole
        out = subprocess.run(["samtools", "faidx", local, f"{{{entry.name}}}:{end - 9}-{end}"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        assert out[1] == seq[end - 10 : end]
    # Bytes follow the window (~6 kB of compressed random bases per 20 kb window), not
    # the position: the window ending at 3 Mb (45 shared blocks of N) adds 5 kB.
    assert sizes[0] < 7_000 and sizes[2] - sizes[0] < 106 * (length // 65_280) + 200

    # A stretch without reads left out (one GET per piece), and the window moved to the
    # contig's start (for reads moved by shift_slice), alone and together.
    lo, gap, hi = 1_000_000, (1_100_000, 1_500_000), 1_600_000
    for shifted in (False, True):
        local = str(tmp_path / f"gap{shifted}.fa")
        gets = store.counts.gets
        fetch_reference_window(store, "ref/big.fa", entry, lo, hi, local, shifted=shifted, gaps=[gap])
        assert store.counts.gets - gets == 2
        at = lo if shifted else 0
        with pysam.FastaFile(local) as fa:
            assert fa.get_reference_length(entry.name) == hi - at
            assert fa.fetch(entry.name, lo - at, gap[0] - at) == seq[lo : gap[0]]
            assert fa.fetch(entry.name, gap[0] - at, gap[1] - at) == "N" * (gap[1] - gap[0])
            assert fa.fetch(entry.name, gap[1] - at - 3, hi - at) == "NNN" + seq[gap[1] : hi]


def test_a_large_range_streams_to_disk_in_bounded_parts(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A 150 MB range (a deep region's slice) is written as it arrives, in GETs of at most
    64 MB read in pieces of 1 MB: the memory it takes does not grow with the range
    (``get_range`` holds it all). The S3 path: tests/test_s3.py."""
    size = 150 << 20
    src = tmp_path / "big.bin"
    with open(src, "wb") as fh:
        fh.truncate(size)
        for at in range(0, size, 7 << 20):  # marks along the file, so a misplaced part shows
            fh.seek(at)
            fh.write(at.to_bytes(8, "little"))
    store.put_file("big.bin", str(src))
    gets = store.counts.gets
    tracemalloc.start()
    try:
        with open(tmp_path / "copy.bin", "wb") as out:
            out.write(b"x" * 100)
            store.get_range_into("big.bin", 5, size, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert store.counts.gets - gets == 3  # 64 + 64 + 22 MB
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MB held at once"  # pieces of 1 MB
    with open(src, "rb") as a, open(tmp_path / "copy.bin", "rb") as b:
        assert b.read(100) == b"x" * 100
        a.seek(5)
        while chunk := a.read(8 << 20):
            assert b.read(len(chunk)) == chunk
        assert b.read() == b""


def test_scan_reads_every_context_read_whatever_its_guess(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A slice whose end the function finds by reading on (BamSlice.scan) holds exactly
    the reads of the region's context that the whole BAM holds, whether the plan's
    first guess of the bytes is far too small (more GETs), right, or far too large (the
    scan never reads past the chunks' end), and in fewer bytes than reading to the
    chunks' end."""
    sample = SAMPLES[0]
    bam_path = str(DATA / f"{sample}.bam")
    man = stage_sample(store, sample, bam_path, bam_path + ".bai", tmp_path / "m.json")
    index = parse_bai(store.get(man.bai.key))
    header = CONTIGS[sample]
    contigs = tuple(zip(header.references, header.lengths, strict=True))
    plan = plan_sample(sample, index, contigs, man.bam.key, man.bam.size, PlanSettings(n_regions=16))
    scanned = [r for r in plan.regions if r.scan]
    assert len(scanned) >= 8  # every region but each contig's last
    with pysam.AlignmentFile(bam_path) as bam:
        for r in scanned:
            want = [x.to_string() for x in bam.fetch(r.chrom, r.context_start, r.context_end)]
            spent = {}
            for guess in (None, 1, r.scan[1], 10**9):
                ranges = _byte_ranges(r.chunks) if guess is None else r.ranges
                bam_slice = BamSlice(ObjectRef(man.bam.key), man.bam.size, len(contigs),
                                     (plan.header.start, plan.header.end), r.tid,
                                     tuple((c.beg, c.end) for c in r.chunks),
                                     tuple((b.start, b.end, b.tail) for b in ranges),
                                     None if guess is None else (r.scan[0], guess))
                before = store.counts.get_bytes
                path = fetch_bam_slice(store, bam_slice, str(tmp_path / "slice.bam"), stop=r.context_end)
                spent[guess] = store.counts.get_bytes - before
                with pysam.AlignmentFile(path) as sl:
                    assert [x.to_string() for x in sl.fetch(r.chrom, r.context_start, r.context_end)] == want
            assert spent[1] < spent[None] and spent[r.scan[1]] < spent[None]
            assert spent[10**9] <= spent[None] + MAX_BGZF_BLOCK
