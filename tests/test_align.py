"""Alignment of FASTQ pairs in functions: chunked staging, minimap2 (mappy) per chunk,
merge into one sorted, indexed BAM; checked against the simulation that made the
bundled reads (test_data/generate.py wrote both the FASTQs and test_data/sampleA.bam
from the same simulated pairs, the BAM through its own record builder)."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import pysam
import pytest
from conftest import LITHOPS_LOCAL

from functions.core.storage import ObjectStore
from pipeline.align import (
    AlignError,
    AlignParams,
    ReadGroup,
    align_samples,
    merge_parts,
    stage_fastq,
    stage_index,
)
from pipeline.executor import LithopsRunner, SerialRunner
from pipeline.stage import stage_reference

DATA = Path(__file__).resolve().parent.parent / "test_data"
PAIRS = 20_667  # pairs of sampleA (test_data/README.md)
RG = ReadGroup(id="sampleA", sample="sampleA", library="lib1", platform="ILLUMINA")


class Aligned:
    """One sample aligned in chunks of ``chunk_pairs`` pairs, kept for the module."""

    def __init__(self, root: Path, chunk_pairs: int, runner: str = "serial", group: ReadGroup = RG,
                 prefix: str | None = None, faults: dict[str, Any] | None = None) -> None:
        self.dir = root / f"{runner}-{chunk_pairs}-{group.id}{'-faults' if faults else ''}"
        self.faults = faults
        self.dir.mkdir(parents=True, exist_ok=True)
        self.store = ObjectStore(LITHOPS_LOCAL, prefix=prefix or f"t/align/{self.dir.name}")
        ref = stage_reference(self.store, str(DATA / "ref.fa"), self.dir / "ref.json")
        self.index = stage_index(self.store, str(DATA / "ref.fa"), root / "index", self.dir / "index.json")
        self.ref = ref
        self.fastq = stage_fastq(self.store, "sampleA", str(DATA / "fastq" / "sampleA_R1.fastq.gz"),
                                 str(DATA / "fastq" / "sampleA_R2.fastq.gz"), chunk_pairs, self.dir / "fq",
                                 self.dir / "fq.json", progress=False)
        self.params = AlignParams(chunk_pairs=chunk_pairs)
        self.group = group
        self.runner_kind = runner
        self.parts = self.dir / "parts.json"
        self.summary = self.align()
        self.bam = str(self.dir / "sampleA.bam")
        self.report = merge_parts(self.store, self.parts, self.bam, str(self.dir / "align.txt"))

    def runner(self) -> SerialRunner | LithopsRunner:
        if self.runner_kind == "lithops":
            return LithopsRunner(LITHOPS_LOCAL, retries=3 if self.faults else 0, progress=False)
        return SerialRunner(progress=False, storage=self.store.lithops_storage)

    def align(self) -> Any:
        return align_samples(self.store, [self.fastq], self.index, self.ref, {"sampleA": self.group}, self.params,
                             self.runner(), {"sampleA": self.parts}, faults=self.faults)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Aligned]:
    root = tmp_path_factory.mktemp("align")
    # 1, 4 and 13 chunks; 4 chunks also through Lithops' own worker processes.
    return {
        "1": Aligned(root, PAIRS),
        "4": Aligned(root, -(-PAIRS // 4)),
        "13": Aligned(root, -(-PAIRS // 13)),
        "4-lithops": Aligned(root, -(-PAIRS // 4), runner="lithops"),
    }


def records(bam: str) -> list[str]:
    with pysam.AlignmentFile(bam) as fh:
        return [r.to_string() for r in fh]


def header(bam: str) -> str:
    with pysam.AlignmentFile(bam) as fh:
        return str(fh.header)


def test_chunking_never_changes_the_bam(runs: dict[str, Aligned]) -> None:
    assert [len(r.fastq.index.chunks) for r in runs.values()] == [1, 4, 13, 4]
    assert [r.summary.chunks for r in runs.values()] == [1, 4, 13, 4]
    one = records(runs["1"].bam)
    assert len(one) == 2 * PAIRS + 3  # and 3 supplementary records
    for name in ("4", "13", "4-lithops"):
        assert records(runs[name].bam) == one, name
        assert header(runs[name].bam) == header(runs["1"].bam)


def test_each_function_fetched_only_its_chunk(runs: dict[str, Aligned]) -> None:
    r = runs["13"]
    fq = r.fastq
    copies = fq.fastq_1.size + fq.fastq_2.size
    parts = json.loads(r.parts.read_text())["parts"]
    assert len(parts) == 13
    for part, chunk in zip(parts, fq.index.chunks, strict=True):
        span = (chunk.r1[1] - chunk.r1[0]) + (chunk.r2[1] - chunk.r2[0])
        assert span < copies / 10
        # its two FASTQ ranges, plus the index (copied once per worker; here one process)
        assert part["get_bytes"] - span in (0, r.index.index.size), part
    assert sum(p["pairs"] for p in parts) == PAIRS


def test_bam_passes_quickcheck_and_flagstat_shows_proper_pairs(runs: dict[str, Aligned]) -> None:
    bam = runs["4"].bam
    pysam.quickcheck(bam)
    stat = pysam.flagstat(bam)
    assert re.search(rf"^{2 * PAIRS} \+ 0 primary$", stat, re.M), stat
    assert re.search(rf"^{PAIRS} \+ 0 read1$", stat, re.M) and re.search(rf"^{PAIRS} \+ 0 read2$", stat, re.M)
    assert re.search(r"^0 \+ 0 secondary$", stat, re.M)
    proper = re.search(r"^(\d+) \+ 0 properly paired \(([\d.]+)%", stat, re.M)
    assert proper and float(proper.group(2)) >= 99.5, stat
    with pysam.AlignmentFile(bam) as fh:
        assert fh.header.to_dict()["HD"]["SO"] == "coordinate"
        assert fh.check_index()
        assert fh.count("chr2", 50_000, 51_000) > 0  # the index answers region queries
    # The report's counts (the functions', as they wrote the records) are flagstat's.
    report = (runs["4"].dir / "align.txt").read_text()
    assert report == runs["4"].report and f"pairs\t{PAIRS}\n" in report and "seconds_per_chunk" in report
    assert re.search(rf"^properly_paired_reads\t{proper.group(1)}\t", report, re.M), report
    mapped = re.search(r"^(\d+) \+ 0 primary mapped", stat, re.M)
    assert mapped and re.search(rf"^mapped_reads\t{mapped.group(1)}\t", report, re.M), report
    supp = re.search(r"^(\d+) \+ 0 supplementary", stat, re.M)
    assert supp and f"supplementary_records\t{supp.group(1)}\n" in report


def _by_read(bam: str) -> dict[tuple[str, int, bool], pysam.AlignedSegment]:
    with pysam.AlignmentFile(bam) as fh:
        return {(r.query_name, r.flag & 0xC0, r.is_supplementary): r for r in fh}


def test_records_and_mate_fields_match_the_simulation(runs: dict[str, Aligned]) -> None:
    """Every record the generator wrote for these simulated pairs comes out the same:
    placement, flags, MAPQ, CIGAR, mate fields, TLEN, SEQ, QUAL and tags."""
    ours = _by_read(runs["4"].bam)
    sim = _by_read(str(DATA / "sampleA.bam"))
    assert ours.keys() == sim.keys()
    fields = ("flag", "reference_id", "reference_start", "mapping_quality", "cigarstring", "next_reference_id",
              "next_reference_start", "template_length", "query_sequence", "query_qualities")
    differ: dict[str, list[str]] = {}
    for key, a in ours.items():
        b = sim[key]
        for f in fields:
            if getattr(a, f) != getattr(b, f):
                differ.setdefault(f, []).append(a.query_name)
        for tag in ("NM", "SA", "RG"):
            if (a.get_tag(tag) if a.has_tag(tag) else None) != (b.get_tag(tag) if b.has_tag(tag) else None):
                differ.setdefault(tag, []).append(a.query_name)
        # The generator leaves MC off unmapped reads; we give it wherever the mate is mapped,
        # and samtools fixmate -m (the parts go through it) writes MC:Z:* where it is not.
        mc = a.get_tag("MC") if a.has_tag("MC") else None
        if not a.is_unmapped and (None if mc == "*" else mc) != (b.get_tag("MC") if b.has_tag("MC") else None):
            differ.setdefault("MC", []).append(a.query_name)
    assert not differ, {k: (len(v), v[:3]) for k, v in differ.items()}

    # The mate fields agree with the mate's own primary record.
    prim = {(r.query_name, r.is_read1): r for r in ours.values() if not r.is_supplementary}
    kinds = {"proper": 0, "mate_unmapped": 0, "both_unmapped": 0, "other_contig": 0}
    for (name, first), r in prim.items():
        m = prim[(name, not first)]
        assert r.mate_is_unmapped == m.is_unmapped and r.is_proper_pair == m.is_proper_pair
        if m.is_unmapped and r.is_unmapped:
            kinds["both_unmapped"] += 1
            assert r.reference_id == -1 and r.next_reference_id == -1
            continue
        if m.is_unmapped:
            kinds["mate_unmapped"] += 1
            assert (r.next_reference_id, r.next_reference_start) == (r.reference_id, r.reference_start)
            continue
        assert (r.next_reference_id, r.next_reference_start) == (m.reference_id, m.reference_start)
        assert r.mate_is_reverse == m.is_reverse
        assert r.get_tag("MC") == m.cigarstring
        if r.is_unmapped:
            assert (r.reference_id, r.reference_start) == (m.reference_id, m.reference_start)
            continue
        if r.reference_id != m.reference_id:
            kinds["other_contig"] += 1
            assert r.template_length == 0
        else:
            assert r.template_length == -m.template_length
        if r.is_proper_pair:
            kinds["proper"] += 1
            assert r.is_reverse != m.is_reverse and abs(r.template_length) < 800
            assert r.get_tag("RG") == "sampleA"
    assert kinds["proper"] >= 0.995 * 2 * PAIRS and kinds["mate_unmapped"] > 10 and kinds["other_contig"] > 0
    # The simulation drew fragments of N(350, 50) bases: the proper pairs' TLEN says so.
    sizes = [abs(r.template_length) for r in prim.values() if r.is_proper_pair and r.is_read1]
    assert abs(statistics.mean(sizes) - 350) < 3 and abs(statistics.stdev(sizes) - 50) < 3


def test_failed_and_killed_functions_are_retried_and_never_change_the_bam(runs: dict[str, Aligned],
                                                                          tmp_path: Path) -> None:
    """Injected faults (config ``faults``) in Lithops' own workers: functions that raise
    or are SIGKILLed (as by the out-of-memory killer) are retried, and the BAM is the same."""
    # Seed 18 draws 3 kills and 2 raises over the 6 chunks; every chunk succeeds by its 4th try.
    faults = {"probability": 0.5, "modes": ["raise", "kill"], "delay_seconds": 0, "seed": 18}
    run = Aligned(tmp_path, -(-PAIRS // 6), runner="lithops", faults=faults)
    parts = json.loads(run.parts.read_text())["parts"]
    assert run.summary.retries == 5 and {p["fault"] for p in parts} == {None}  # each part's last attempt is clean
    assert sum(p["attempt"] - 1 for p in parts) == 5 and [p["attempts"] for p in parts] == [
        p["attempt"] for p in parts]
    assert records(run.bam) == records(runs["1"].bam)


def test_read_group_comes_from_the_sheet(tmp_path: Path) -> None:
    group = ReadGroup(id="run7.L001", sample="sampleA", library="libX", platform="ILLUMINA",
                      platform_unit="HXXXX.1.ACGT")
    run = Aligned(tmp_path, 10_000, group=group)
    with pysam.AlignmentFile(run.bam) as fh:
        assert fh.header.to_dict()["RG"] == [{"ID": "run7.L001", "SM": "sampleA", "LB": "libX", "PL": "ILLUMINA",
                                              "PU": "HXXXX.1.ACGT"}]
        assert {r.get_tag("RG") for r in fh} == {"run7.L001"}


def test_rerun_reuses_intact_parts_and_recomputes_a_damaged_one(tmp_path: Path) -> None:
    run = Aligned(tmp_path, 4_000)
    first = records(run.bam)
    parts = json.loads(run.parts.read_text())["parts"]
    assert len(parts) == 6
    again = run.align()
    assert (again.computed, again.reused) == (0, 6)
    run.store.put(parts[2]["out_key"] + ".bam", b"not a BAM any more")
    again = run.align()
    assert (again.computed, again.reused) == (1, 5)
    merge_parts(run.store, run.parts, run.bam, str(run.dir / "align.txt"))
    assert records(run.bam) == first


def test_merge_refuses_a_missing_part_and_writes_nothing(tmp_path: Path) -> None:
    run = Aligned(tmp_path, 8_000)
    part = json.loads(run.parts.read_text())["parts"][1]
    run.store.delete(part["out_key"] + ".bam")
    out = tmp_path / "out" / "x.bam"
    with pytest.raises(AlignError, match=r"sample sampleA chunk 1: BAM part \S+ is missing; `snakemake --cores 2 "
                                         r"--forcerun align` aligns it again"):
        merge_parts(run.store, run.parts, str(out), str(tmp_path / "out" / "x.txt"))
    assert sorted(p.name for p in out.parent.iterdir()) == []


# -- end to end: FASTQ -> VCF through the snakemake command line ----------------------
@pytest.mark.e2e
def _duplicate_flags(bam: str) -> list[tuple[str, int, int, int]]:
    """(name, flag, contig, position) of every record flagged duplicate."""
    with pysam.AlignmentFile(bam) as fh:
        return sorted((r.query_name, r.flag, r.reference_id, r.reference_start) for r in fh if r.is_duplicate)


def _unmarked(bam: str, out: Path) -> str:
    """A copy of ``bam`` without duplicate flags, indexed."""
    with pysam.AlignmentFile(bam) as src, pysam.AlignmentFile(str(out), "wb", template=src) as dst:
        for r in src:
            r.is_duplicate = False
            dst.write(r)
    pysam.index(str(out))
    return str(out)


def _samtools_markdup(bam: str, work: Path) -> str:
    """The same alignments through `samtools collate | fixmate -m | sort | markdup`, the
    duplicate flags cleared first (markdup -c)."""
    work.mkdir()
    steps = [("collate", ["-o", str(work / "c.bam"), bam]),
             ("fixmate", ["-m", str(work / "c.bam"), str(work / "f.bam")]),
             ("sort", ["-o", str(work / "s.bam"), str(work / "f.bam")]),
             ("markdup", ["-c", str(work / "s.bam"), str(work / "d.bam")])]
    for tool, args in steps:
        getattr(pysam, tool)(*args, catch_stdout=False)
    return str(work / "d.bam")


def test_fastq_to_vcf_through_snakemake(tmp_path: Path) -> None:
    """config/fastq.yaml: the bundled FASTQs, aligned in 5 chunks per sample, then called.
    The BAMs' duplicate flags are those of `samtools collate | fixmate -m | sort |
    markdup` on the same alignments; the VCFs equal one whole-genome bcftools run on the
    simulation's own BAMs with their duplicates marked so (so the route loses nothing),
    and are scored against the truth with the BAM route's floors."""
    from helpers import whole_genome
    from test_accuracy import FLOORS
    from test_e2e import make_workdir, snakemake

    from bench.evaluation.vcfcompare import accuracy, vcf_body

    wd = make_workdir(tmp_path / "wd")
    res = snakemake(wd, "--configfile", str(wd / "config" / "fastq.yaml"))
    assert res.returncode == 0, res.stderr[-3000:]
    # progress to a non-terminal (captured): whole lines, the last at 100 %
    assert re.search(r"^aligning chunks: 10 of 10 \S+ done \(100 %\)", res.stderr, re.M), res.stderr[-3000:]
    assert "aligned 2 sample(s): 41,334 pairs (82,668 reads) in 10 chunks (10 functions run, 0 parts reused)" \
        in res.stderr
    changed = []  # per sample: did marking duplicates change a call?
    for sample in ("sampleA", "sampleB"):
        bam = wd / "results" / f"{sample}.bam"
        pysam.quickcheck(str(bam))
        stat = pysam.flagstat(str(bam))
        proper = re.search(r"^\d+ \+ 0 properly paired \(([\d.]+)%", stat, re.M)
        assert proper and float(proper.group(1)) >= 99.5, stat
        report = (wd / "results" / f"{sample}.align.txt").read_text()
        assert "properly_paired_reads\t" in report
        marked = _duplicate_flags(str(bam))
        assert len(marked) >= 3 and f"duplicate_reads\t{len(marked)}\t" in report, report
        assert marked == _duplicate_flags(_samtools_markdup(str(bam), tmp_path / sample))
        vcf = str(wd / "results" / f"{sample}.vcf.gz")
        # Called as one whole-genome run on the BAM would; the duplicates make a difference.
        (tmp_path / f"{sample}-ours").mkdir()
        (tmp_path / f"{sample}-unmarked").mkdir()
        ours = vcf_body(whole_genome(sample, tmp_path / f"{sample}-ours", bam=bam))
        assert vcf_body(vcf) == ours
        # Without the duplicate flags, the alignments call as the simulation's own BAM does.
        unmarked = _unmarked(str(bam), tmp_path / f"{sample}-unmarked.bam")
        plain = vcf_body(whole_genome(sample, tmp_path / f"{sample}-unmarked", bam=Path(unmarked)))
        assert plain == vcf_body(whole_genome(sample, tmp_path))
        changed.append(plain != ours)
        scores = accuracy(vcf, str(DATA / "truth" / f"{sample}.vcf.gz"), str(DATA / "ref.fa"))
        for kind, (p_min, r_min) in FLOORS.items():
            assert scores[kind].precision >= p_min and scores[kind].recall >= r_min, str(scores[kind])
    assert any(changed), "marking duplicates changes some call of the bundled samples"
    # The run report's timeline has the 10 alignment functions and the 16 calling functions.
    page = (wd / "results" / "report.html").read_text()
    assert len(re.findall(r"<title>align sample[AB] chunk \d+: ", page)) == 10
    assert len(re.findall(r"<title>call sample[AB] chr\d:\d+-\d+: ", page)) == 16
    # A second run has nothing to do.
    again = snakemake(wd, "--configfile", str(wd / "config" / "fastq.yaml"))
    assert again.returncode == 0 and "Nothing to be done" in again.stderr, again.stderr[-2000:]
