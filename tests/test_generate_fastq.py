"""test_data/generate.py --fastq: the committed FASTQs are what the generator writes,
the bytes do not depend on the thread count, and the reads are the BAM's reads."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from types import ModuleType

import pysam
import pytest
from helpers import load_generator

DATA = Path(__file__).resolve().parent.parent / "test_data"
SAMPLES = ("sampleA", "sampleB")
FASTQS = tuple(f"{s}_R{k}.fastq.gz" for s in SAMPLES for k in (1, 2))
OTHER_FILES = ("ref.fa", "ref.fa.fai", "sampleA.bam", "sampleA.bam.bai", "sampleB.bam", "sampleB.bam.bai",
               "truth/sampleA.vcf.gz", "truth/sampleA.vcf.gz.tbi", "truth/sampleB.vcf.gz",
               "truth/sampleB.vcf.gz.tbi")
# 6,000 pairs per sample: two batches (5,000 + 1,000), so the batch order matters
SMALL = {"seed": 5, "genome_size": 60_000, "coverage": 30.0, "n_contigs": 1}
HEADER = re.compile(r"@(\S+) ([12]):N:0:1")
_RC = str.maketrans("ACGTN", "TGCAN")


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    """``test_data/generate.py``, registered as ``generate`` (its forked workers unpickle tasks by name)."""
    return load_generator("generate")


@pytest.fixture(scope="module")
def default_set(gen: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default dataset, regenerated with ``fastq=True``."""
    out = tmp_path_factory.mktemp("default")
    summary = gen.generate(out, threads=2, verify=False, log=False, fastq=True)
    assert summary.fastqs == {s: (out / "fastq" / f"{s}_R1.fastq.gz", out / "fastq" / f"{s}_R2.fastq.gz")
                              for s in SAMPLES}
    return out


def read_fastq(path: Path) -> list[tuple[str, str, str, str]]:
    """``(name, read number, sequence, qualities)`` per record, in file order."""
    lines = gzip.decompress(path.read_bytes()).decode().split("\n")
    assert lines[-1] == "" and (len(lines) - 1) % 4 == 0
    out = []
    for i in range(0, len(lines) - 1, 4):
        m = HEADER.fullmatch(lines[i])
        assert m is not None, lines[i]
        assert lines[i + 2] == "+" and len(lines[i + 1]) == len(lines[i + 3])
        out.append((m.group(1), m.group(2), lines[i + 1], lines[i + 3]))
    return out


def test_committed_fastqs_are_what_the_generator_writes(default_set: Path) -> None:
    for name in FASTQS:
        assert (default_set / "fastq" / name).read_bytes() == (DATA / "fastq" / name).read_bytes(), name


def test_fastq_changes_no_other_file(default_set: Path) -> None:
    for name in OTHER_FILES:
        assert (default_set / name).read_bytes() == (DATA / name).read_bytes(), name


def test_same_bytes_with_1_and_2_threads(gen: ModuleType, tmp_path: Path) -> None:
    for threads in (1, 2):
        gen.generate(tmp_path / str(threads), threads=threads, verify=False, log=False, fastq=True, **SMALL)
    for name in FASTQS:
        one = (tmp_path / "1" / "fastq" / name).read_bytes()
        assert one == (tmp_path / "2" / "fastq" / name).read_bytes(), name
    # the batches are joined in order: names run 0 .. 5999 across the batch boundary
    names = [r[0] for r in read_fastq(tmp_path / "1" / "fastq" / "sampleB_R2.fastq.gz")]
    assert names == [f"sampleB:{i:08d}" for i in range(6000)]
    # gzip header: no flags (so no file name), MTIME 0
    head = (tmp_path / "1" / "fastq" / "sampleA_R1.fastq.gz").read_bytes()[:8]
    assert head[:4] == b"\x1f\x8b\x08\x00" and head[4:8] == b"\x00\x00\x00\x00"


def test_fastq_reads_are_the_bam_reads() -> None:
    r1 = read_fastq(DATA / "fastq" / "sampleA_R1.fastq.gz")
    r2 = read_fastq(DATA / "fastq" / "sampleA_R2.fastq.gz")
    assert [r[0] for r in r1] == [r[0] for r in r2]
    assert {r[1] for r in r1} == {"1"} and {r[1] for r in r2} == {"2"}
    assert [r[0] for r in r1] == [f"sampleA:{i:08d}" for i in range(len(r1))]  # generation order
    fastq = {(name, int(k)): (seq, qual) for name, k, seq, qual in r1 + r2}
    assert len(fastq) == len(r1) + len(r2)

    seen: set[tuple[str, int]] = set()
    with pysam.AlignmentFile(str(DATA / "sampleA.bam")) as bam:
        for rec in bam:
            if rec.flag & 0x900:
                continue
            assert rec.query_name and rec.query_sequence and rec.query_qualities is not None
            key = (rec.query_name, 1 if rec.flag & 0x40 else 2)
            assert (rec.flag & 0xC0) in (0x40, 0x80) and key not in seen, key
            seen.add(key)
            seq = rec.query_sequence
            qual = "".join(chr(q + 33) for q in rec.query_qualities)
            if rec.flag & 0x10:  # back to sequencing orientation
                seq, qual = seq.translate(_RC)[::-1], qual[::-1]
            assert fastq[key] == (seq, qual), key
    assert seen == set(fastq)  # every FASTQ read (both of every pair) is in the BAM, once as primary
