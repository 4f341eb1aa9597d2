"""The fine index of deep BAMs: the CSI parser agrees with htslib, staging builds a CSI
only for BAMs whose 16 kb windows are heavy (never beside the BAM, reused while the BAM
is the same), and plans cut from it still give every region every read overlapping its
context while fetching little more than those reads.

The deep BAM here is synthetic and small (20 kb at 600x of 150 bp reads with random
base qualities: 9 MB, 7 MB of it in the first 16 kb window), quick to write; the
whole pipeline runs on a fine index in tests/test_viral.py (the 5,000x mixture).
"""

from __future__ import annotations

import array
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pysam
import pytest
from helpers import DATA

import pipeline.stage as stage
from functions.core.bai import Chunk, IndexFormatError, coffset, parse_bai, reg2bins
from functions.core.bgzf import inflate
from functions.core.csi import parse_csi
from functions.core.tasks import BamSlice, ObjectRef
from functions.pileup import collect_evidence
from functions.slice import fetch_bam_slice
from pipeline.manifests import StagedSample
from pipeline.plan import ByteRange, PlanInput, PlanSettings, _byte_ranges, plan_from_store, plan_joint, plan_sample
from pipeline.stage import fine_index, fine_min_shift, stage_sample

CONTIG, LENGTH, DEPTH, READ = "v", 20_000, 600, 150


def _write_deep_bam(path: Path, seed: int = 3) -> None:
    """A sorted BAM of 150 bp reads at ``DEPTH``x on one ``LENGTH`` bp contig: most
    ``150M``, some with a deletion or an insertion, some soft-clipped, some short, and
    a few unmapped reads placed beside their mates."""
    rng = np.random.default_rng(seed)
    ref = rng.choice(list("ACGT"), LENGTH)
    n = LENGTH * DEPTH // READ
    starts = np.sort(rng.integers(0, LENGTH - READ - 10, n))
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": CONTIG, "LN": LENGTH}],
              "RG": [{"ID": "r", "SM": "deep"}]}
    kinds = rng.choice(6, n, p=[0.8, 0.06, 0.04, 0.05, 0.04, 0.01])
    quals = rng.integers(2, 41, (n, READ + 2)).astype(np.uint8)
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, (pos, kind) in enumerate(zip(starts.tolist(), kinds.tolist(), strict=True)):
            a = pysam.AlignedSegment(out.header)
            a.query_name = f"r{i:07d}"
            a.reference_id, a.reference_start, a.mapping_quality = 0, pos, 60
            cigar, seq_len = [(0, READ)], READ
            if kind == 1:
                cigar = [(0, 70), (2, 3), (0, 80)]
            elif kind == 2:
                cigar, seq_len = [(0, 70), (1, 2), (0, 80)], READ + 2
            elif kind == 3:
                cigar = [(4, 20), (0, 130)]
            elif kind == 4:
                cigar, seq_len = [(0, 60)], 60
            seq = "".join(ref[pos : pos + seq_len]) if kind != 2 else "".join(ref[pos : pos + 70]) + "AC" + "".join(
                ref[pos + 70 : pos + 150])
            a.query_sequence = seq[:seq_len].ljust(seq_len, "A")
            a.query_qualities = array.array("B", quals[i, :seq_len].tobytes())
            if kind == 5:
                a.flag, a.cigar = 0x4 | 0x1 | 0x40, None  # unmapped, placed at its mate's position
            else:
                a.cigar = cigar
            a.set_tag("RG", "r")
            out.write(a)
    pysam.index(str(path))


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deep") / "deep.bam"
    _write_deep_bam(path)
    return path


class Reads:
    """Every record's start, end and virtual offset, in file order (and the offset after the last)."""

    def __init__(self, bam: Path) -> None:
        pos, end, voff = [], [], []
        with pysam.AlignmentFile(str(bam)) as fh:
            v = fh.tell()
            for r in fh.fetch(until_eof=True):
                pos.append(r.reference_start)
                end.append(r.reference_end if r.reference_end is not None else r.reference_start + 1)
                voff.append(v)
                v = fh.tell()
        voff.append(v)
        self.pos, self.end, self.voff = np.array(pos), np.array(end), np.array(voff, dtype=np.uint64)

    def overlapping(self, beg: int, end: int) -> np.ndarray:
        """Row numbers of the records overlapping [beg, end) as htslib sees them."""
        return np.flatnonzero((self.pos < end) & (self.end > beg))

    def first_at(self, pos: int) -> int:
        """Virtual offset of the first record starting at or after ``pos``."""
        i = int(np.searchsorted(self.pos, pos, side="left"))
        return int(self.voff[i])


@pytest.fixture(scope="module")
def reads(deep: Path) -> Reads:
    return Reads(deep)


def _csi(bam: Path, min_shift: int, out: Path) -> bytes:
    pysam.index("-c", "-m", str(min_shift), "-o", str(out), str(bam))
    return out.read_bytes()


def _covered(chunks: list, voffs: np.ndarray) -> bool:
    beg = np.array([c.beg for c in chunks], dtype=np.uint64)
    end = np.array([c.end for c in chunks], dtype=np.uint64)
    i = np.searchsorted(beg, voffs, side="right") - 1
    return bool((i >= 0).all() and (voffs < end[np.maximum(i, 0)]).all())


def test_reg2bins_of_a_csi() -> None:
    # 512 bp bins, 2 levels below the root (32 kb, 4 kb, 512 bp): the spec's numbering.
    assert reg2bins(0, 1, 9, 2) == [0, 1, 9]
    assert reg2bins(511, 513, 9, 2) == [0, 1, 9, 10]
    assert reg2bins(0, 1) == [0, 1, 9, 73, 585, 4681]  # a BAI's, unchanged


@pytest.mark.parametrize("min_shift", [8, 9, 12, 14])
def test_csi_agrees_with_htslib(deep: Path, reads: Reads, tmp_path: Path, min_shift: int) -> None:
    """Counts and first record as htslib's; every read overlapping a query is in its chunks,
    and the chunks reach at most one window past the query on either side."""
    index = parse_csi(_csi(deep, min_shift, tmp_path / "x.csi"))
    bai = parse_bai(Path(f"{deep}.bai").read_bytes())
    assert (index.fmt, index.min_shift, index.window) == ("CSI", min_shift, 1 << min_shift)
    assert index.refs[0].n_mapped == bai.refs[0].n_mapped == int(pysam.idxstats(str(deep)).split("\t")[2])
    assert index.refs[0].n_unmapped == bai.refs[0].n_unmapped > 0
    assert index.first_record == bai.first_record
    w = index.window
    rng = np.random.default_rng(min_shift)
    for _ in range(150):
        beg = int(rng.integers(0, LENGTH))
        end = min(LENGTH, beg + int(rng.choice([1, 10, 150, 700, 3000, LENGTH])))
        rows = reads.overlapping(beg, end)
        chunks = index.query(0, beg, end)
        assert _covered(chunks, reads.voff[rows]), (beg, end)
        first_overlap = reads.voff[reads.overlapping((beg // w - 1) * w, (beg // w - 1) * w + 1)]
        lo = int(first_overlap.min()) if len(first_overlap) and beg >= w else 0
        hi = reads.first_at((end + w - 1) // w * w + w)
        assert lo <= chunks[0].beg and chunks[-1].end <= hi, (beg, end)


def test_csi_as_stored_or_inflated_and_bad_bytes(deep: Path, tmp_path: Path) -> None:
    raw = _csi(deep, 9, tmp_path / "x.csi")
    a, b = parse_csi(raw), parse_csi(inflate(raw))
    assert a.refs[0].chunks.tolist() == b.refs[0].chunks.tolist() and a.n_no_coor == b.n_no_coor
    for bad in (b"BAI\x01" + inflate(raw)[4:], inflate(raw)[:200], raw[:100], b""):
        with pytest.raises(IndexFormatError):
            parse_csi(bad)


def test_fine_index_only_for_heavy_windows(deep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bundled 30x samples: no fine index (too small to hold one heavy window).
    bam = str(DATA / "sampleA.bam")
    assert fine_index("sampleA", bam, bam + ".bai", tmp_path, "fp") is None
    # A human-scale 30x index (every 16 kb window about 200 kB): none.
    import sys
    sys.path.insert(0, str(DATA.parent / "bench"))
    from bench_plan import HUMAN, synthetic_bai

    human = parse_bai(synthetic_bai(HUMAN[:3])[0])
    assert fine_min_shift(human, HUMAN[:3], [150] * 100) is None
    # The deep BAM (7 MB in a window): 512 bp windows; none if its windows were light.
    bai = parse_bai(Path(f"{deep}.bai").read_bytes())
    assert fine_min_shift(bai, [LENGTH], [READ] * 100) == 9
    monkeypatch.setattr(stage, "HEAVY_WINDOW_BYTES", 8 << 20)
    assert fine_min_shift(bai, [LENGTH], [READ] * 100) is None
    monkeypatch.setattr(stage, "HEAVY_WINDOW_BYTES", 4 << 20)
    # Long reads would need bins as wide as a BAI's: none.
    assert fine_min_shift(bai, [LENGTH], [5000] * 100) is None
    assert fine_min_shift(bai, [LENGTH], []) is None


def test_staging_builds_reuses_and_rebuilds(deep: Path, tmp_path: Path, store) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(deep, src / "deep.bam")
    shutil.copy(f"{deep}.bai", src / "deep.bam.bai")
    work = tmp_path / "work"
    work.mkdir()
    bam = str(src / "deep.bam")
    man = stage_sample(store, "d", bam, bam + ".bai", work / "d.json")
    assert man.csi is not None and man.csi.key == man.bam.key + ".csi"
    assert man.csi.path == str(work / "d.bam.csi") and sorted(os.listdir(src)) == ["deep.bam", "deep.bam.bai"]
    assert parse_csi(store.get(man.csi.key)).min_shift == 9
    assert StagedSample.read(work / "d.json") == man
    # Manifests written before the fine index existed read as without one.
    old = json.loads((work / "d.json").read_text())
    del old["csi"]
    assert StagedSample.from_dict(old).csi is None and "csi" not in StagedSample.from_dict(old).to_dict()
    # Staged again: the same index, not rebuilt.
    mtime = os.stat(work / "d.bam.csi").st_mtime_ns
    assert stage_sample(store, "d", bam, bam + ".bai", work / "d.json") == man
    assert os.stat(work / "d.bam.csi").st_mtime_ns == mtime
    # Another BAM under the same name (fewer reads): rebuilt for it.
    with pysam.AlignmentFile(bam) as fh, pysam.AlignmentFile(str(src / "x.bam"), "wb", template=fh) as out:
        for i, r in enumerate(fh.fetch(until_eof=True)):
            if i % 3:
                out.write(r)
    os.replace(src / "x.bam", bam)
    pysam.index(bam)
    again = stage_sample(store, "d", bam, bam + ".bai", work / "d.json")
    assert again.csi is not None and again.csi.fingerprint != man.csi.fingerprint
    assert parse_csi(store.get(again.csi.key)).refs[0].n_mapped == parse_bai(Path(bam + ".bai").read_bytes()).refs[
        0].n_mapped


@pytest.mark.parametrize("n_regions", [1, 4, 17])
def test_fine_plans_hold_every_read_and_fetch_little_more(
        deep: Path, reads: Reads, tmp_path: Path, store, n_regions: int) -> None:  # type: ignore[no-untyped-def]
    man = stage_sample(store, "d", str(deep), f"{deep}.bai", tmp_path / "d.json")
    assert man.csi is not None
    settings = PlanSettings(n_regions=n_regions, min_region_bytes=1)
    plan = plan_from_store(store, "d", man, settings)
    assert len(plan.regions) == n_regions
    bai_plan = plan_sample("d", parse_bai(Path(f"{deep}.bai").read_bytes()), plan.contigs, man.bam.key,
                           man.bam.size, settings)
    floor = plan.header.end * n_regions
    ends_on_block_edge = 0
    for region in plan.regions:
        rows = reads.overlapping(region.context_start, region.context_end)
        assert _covered(list(region.chunks), reads.voff[rows])
        floor += int(reads.voff[rows[-1] + 1] >> np.uint64(16)) - int(reads.voff[rows[0]] >> np.uint64(16))
        assert len(region.ranges) == 1  # one range: 3 or 4 GETs per region
        bam_slice = BamSlice(ObjectRef(man.bam.key), man.bam.size, 1, (plan.header.start, plan.header.end), 0,
                             tuple((c.beg, c.end) for c in region.chunks),
                             tuple((b.start, b.end, b.tail) for b in region.ranges), region.scan)
        path = fetch_bam_slice(store, bam_slice, str(tmp_path / "slice.bam"), stop=region.context_end)
        ctx = (CONTIG, region.context_start, region.context_end)
        with pysam.AlignmentFile(path) as sl, pysam.AlignmentFile(str(deep)) as full:
            got = [(r.query_name, r.flag) for r in sl.fetch(*ctx)]
            assert got == [(r.query_name, r.flag) for r in full.fetch(*ctx)]
        # The lowfreq engine's own BGZF reader sees the same reads (it opens the block at
        # a chunk's end even when the chunk ends at its offset 0).
        ends_on_block_edge += sum(c.end & 0xFFFF == 0 for c in region.chunks)
        got_ev, want_ev = (collect_evidence(p, *ctx, 0, 13, 1) for p in (path, str(deep)))
        assert got_ev.reads == want_ev.reads and np.array_equal(got_ev.counts, want_ev.counts)
    # Within 5 % of the bytes of the reads each context needs (at 16 kb windows: 1.7 to 8 x).
    assert plan.fetch_bytes <= 1.05 * floor
    assert plan.fetch_bytes <= bai_plan.fetch_bytes
    if n_regions > 1:
        assert plan.fetch_bytes < 0.7 * bai_plan.fetch_bytes
    if n_regions == 17:
        assert ends_on_block_edge, "some chunk ends at a block's start (htslib writes records from block starts)"


def test_joint_plan_of_a_fine_and_a_bai_indexed_sample(deep: Path, reads: Reads, tmp_path: Path) -> None:
    csi = parse_csi(_csi(deep, 9, tmp_path / "x.csi"))
    bai = parse_bai(Path(f"{deep}.bai").read_bytes())
    contigs = ((CONTIG, LENGTH),)
    size = os.path.getsize(deep)
    plans = plan_joint([PlanInput("a", csi, contigs, "a", size), PlanInput("b", bai, contigs, "b", size)],
                       PlanSettings(n_regions=5, min_region_bytes=1))
    assert [(r.start, r.end) for r in plans[0].regions] == [(r.start, r.end) for r in plans[1].regions]
    assert len(plans[0].regions) == 5
    for plan in plans:
        for region in plan.regions:
            rows = reads.overlapping(region.context_start, region.context_end)
            assert _covered(list(region.chunks), reads.voff[rows])
    assert plans[0].fetch_bytes < plans[1].fetch_bytes


def test_byte_ranges_join_across_one_block() -> None:
    def vo(c: int, u: int = 0) -> int:
        return (c << 16) | u

    # The second chunk starts on the block after the first's last (partial) one: one range.
    assert _byte_ranges((Chunk(vo(100, 5), vo(5000, 7)), Chunk(vo(9000), vo(20000, 3)))) == (
        ByteRange(100, 20000, True),)
    # More than a block apart: two ranges.
    assert _byte_ranges((Chunk(vo(100, 5), vo(5000, 7)), Chunk(vo(80000), vo(90000, 3)))) == (
        ByteRange(100, 5000, True), ByteRange(80000, 90000, True))
    # The first ends on a block edge (no partial block): two ranges, as before.
    assert _byte_ranges((Chunk(vo(100, 5), vo(5000)), Chunk(vo(9000), vo(20000, 3)))) == (
        ByteRange(100, 5000, False), ByteRange(9000, 20000, True))
    assert coffset(vo(9000, 3)) == 9000


def test_a_slice_ending_on_a_block_edge_reads_in_both_readers(deep: Path, reads: Reads, tmp_path: Path,
                                                              store) -> None:  # type: ignore[no-untyped-def]
    """A range that ends where a chunk ends at offset 0 of a block (htslib starts blocks
    with a record, so fine plans often end there) needs no byte of that block: htslib
    and the lowfreq engine's reader both read the slice."""
    at_edge = np.flatnonzero((reads.voff[:-1] & np.uint64(0xFFFF)) == 0)
    k = int(at_edge[len(at_edge) // 2])
    j = k - 3000
    beg, end = int(reads.voff[j]), int(reads.voff[k])
    man = stage_sample(store, "d", str(deep), f"{deep}.bai", tmp_path / "d.json")
    plan = plan_sample("d", parse_bai(Path(f"{deep}.bai").read_bytes()), ((CONTIG, LENGTH),), man.bam.key,
                       man.bam.size, PlanSettings(n_regions=1))
    ranges = _byte_ranges((Chunk(beg, end),))
    assert ranges == (ByteRange(coffset(beg), coffset(end), False),)
    bam_slice = BamSlice(ObjectRef(man.bam.key), man.bam.size, 1, (plan.header.start, plan.header.end), 0,
                         ((beg, end),), tuple((b.start, b.end, b.tail) for b in ranges))
    path = fetch_bam_slice(store, bam_slice, str(tmp_path / "slice.bam"))
    with pysam.AlignmentFile(path) as sl:
        got = list(sl.fetch(CONTIG, 0, LENGTH))
    assert len(got) == k - j
    lo, hi = int(reads.pos[j]), int(reads.end[j:k].max())
    ev = collect_evidence(path, CONTIG, lo, hi, 0, 13, 1)
    assert ev.reads == sum(not r.is_unmapped for r in got)
