"""pipeline.fastq: paired FASTQs rewritten as BGZF copies cut into chunks of N pairs, read
back chunk by chunk; and every bad input stopped with one line naming the file and the fix,
leaving no output behind."""

from __future__ import annotations

import gzip
import json
import random
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import pysam
import pytest

from functions.core.bgzf import EOF_BLOCK, inflate
from functions.core.fastq import FastqError, read_chunk
from pipeline import fastq
from pipeline.fastq import FastqIndex, rechunk_pair

Pair = tuple[str, str, str, str, str]  # name, seq1, qual1, seq2, qual2


# -- making inputs ---------------------------------------------------------------------
def make_pairs(n: int, seed: int = 1, min_len: int = 30, max_len: int = 151) -> list[Pair]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        l1, l2 = rng.randint(min_len, max_len), rng.randint(min_len, max_len)
        out.append((f"run7:1:{1101 + i % 3}:{i}:{rng.randint(0, 99999)}",
                    "".join(rng.choices("ACGTN", k=l1)), "".join(rng.choices("F:,#", k=l1)),
                    "".join(rng.choices("ACGT", k=l2)), "".join(rng.choices("IF?5", k=l2))))
    return out


def header(name: str, mate: int, style: str) -> str:
    if style == "casava":
        return f"@{name} {mate}:N:0:ACGTAC"
    if style == "slash":
        return f"@{name}/{mate}"
    if style == "slash+comment":
        return f"@{name}/{mate}\tBC:Z:ACGT"
    return f"@{name}"


def fastq_text(pairs: list[Pair], mate: int, style: str = "casava") -> bytes:
    seq, qual = (1, 2) if mate == 1 else (3, 4)
    return "".join(f"{header(p[0], mate, style)}\n{p[seq]}\n+\n{p[qual]}\n" for p in pairs).encode()


def multi_member(text: bytes, cuts: int = 5) -> bytes:
    """gzip members of uneven sizes, cut anywhere (inside lines too), as `cat a.gz b.gz` makes."""
    rng = random.Random(len(text))
    at = sorted(rng.sample(range(1, len(text)), min(cuts, len(text) - 1)))
    bounds = [0, *at, len(text)]
    return b"".join(gzip.compress(text[a:b], 6, mtime=0) for a, b in zip(bounds, bounds[1:], strict=False))


def write(path: Path, text: bytes, kind: str) -> str:
    if kind == "plain":
        path.write_bytes(text)
    elif kind == "gzip":
        path.write_bytes(gzip.compress(text, 6, mtime=0))
    elif kind == "multi":
        path.write_bytes(multi_member(text))
    elif kind == "bgzf":
        with pysam.BGZFile(str(path), "wb") as f:
            f.write(text)
    else:
        raise AssertionError(kind)
    return str(path)


def make_inputs(tmp_path: Path, pairs: list[Pair], kind: str = "gzip", style: str = "casava") -> tuple[str, str]:
    return (write(tmp_path / "in_R1.fastq.gz", fastq_text(pairs, 1, style), kind),
            write(tmp_path / "in_R2.fastq.gz", fastq_text(pairs, 2, style), kind))


def run(tmp_path: Path, inputs: tuple[str, str], chunk_pairs: int, **kw: object) -> tuple[FastqIndex, bytes, bytes]:
    out_1, out_2 = tmp_path / "out_R1.fq.gz", tmp_path / "out_R2.fq.gz"
    index = rechunk_pair(inputs[0], inputs[1], str(out_1), str(out_2), chunk_pairs, **kw)  # type: ignore[arg-type]
    return index, out_1.read_bytes(), out_2.read_bytes()


def blocks(data: bytes) -> list[tuple[int, int]]:
    """(size, uncompressed size) of each BGZF block, checking each is a valid BGZF block."""
    out, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 4] == b"\x1f\x8b\x08\x04" and data[pos + 12 : pos + 16] == b"BC\x02\x00"
        size = int.from_bytes(data[pos + 16 : pos + 18], "little") + 1
        block = data[pos : pos + size]
        text = zlib.decompress(block[18:-8], -15)
        assert int.from_bytes(block[-4:], "little") == len(text)
        assert int.from_bytes(block[-8:-4], "little") == zlib.crc32(text)
        out.append((size, len(text)))
        pos += size
    assert pos == len(data)
    return out


def read_all(index: FastqIndex, copy_1: bytes, copy_2: bytes) -> list[Pair]:
    got: list[Pair] = []
    for c in index.chunks:
        got += read_chunk(copy_1[c.r1[0] : c.r1[1]], copy_2[c.r2[0] : c.r2[1]], f"chunk {c.index}")
    return got


# -- round trips -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["plain", "gzip", "multi", "bgzf"])
@pytest.mark.parametrize("chunk_pairs", [1, 7, 1000])
def test_round_trip(tmp_path: Path, kind: str, chunk_pairs: int) -> None:
    pairs = make_pairs(45)
    inputs = make_inputs(tmp_path, pairs, kind)
    index, c1, c2 = run(tmp_path, inputs, chunk_pairs)

    assert read_all(index, c1, c2) == pairs
    assert (index.pairs, index.size_1, index.size_2) == (45, len(c1), len(c2))
    assert index.bases == sum(len(p[1]) + len(p[3]) for p in pairs)
    assert index.max_read_length == max(max(len(p[1]), len(p[3])) for p in pairs)
    assert [c.pairs for c in index.chunks] == [min(chunk_pairs, 45 - i) for i in range(0, 45, chunk_pairs)]
    assert [c.first_pair for c in index.chunks] == list(range(0, 45, chunk_pairs))
    assert [c.index for c in index.chunks] == list(range(len(index.chunks)))
    for copy, text, ranges in ((c1, fastq_text(pairs, 1), [c.r1 for c in index.chunks]),
                               (c2, fastq_text(pairs, 2), [c.r2 for c in index.chunks])):
        assert copy.endswith(EOF_BLOCK)
        assert gzip.decompress(copy) == text
        # The ranges tile the copy up to its EOF block; each inflates alone to whole records.
        assert ranges[0][0] == 0 and ranges[-1][1] == len(copy) - len(EOF_BLOCK)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        texts = [inflate(copy[a:b]) for a, b in ranges]
        assert b"".join(texts) == text
        assert all(t.startswith(b"@") and t.count(b"\n") == 4 * c.pairs
                   for t, c in zip(texts, index.chunks, strict=True))
        assert all(isize <= 65280 for _, isize in blocks(copy))
    assert FastqIndex.from_dict(json.loads(json.dumps(index.as_dict()))) == index


def test_copies_are_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same input text and parameters, same bytes: whatever the input's compression, and
    whatever size of pieces the input is read in."""
    pairs = make_pairs(300, max_len=300)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    first = run(tmp_path / "a", make_inputs(tmp_path / "a", pairs, "gzip"), 40)
    again = run(tmp_path / "a", make_inputs(tmp_path / "a", pairs, "gzip"), 40)
    monkeypatch.setattr(fastq, "PIECE", 999)
    plain = run(tmp_path / "b", make_inputs(tmp_path / "b", pairs, "plain"), 40)
    multi = run(tmp_path / "c", make_inputs(tmp_path / "c", pairs, "multi"), 40)
    for other in (again, plain, multi):
        assert other[1:] == first[1:]
        assert other[0].chunks == first[0].chunks
    assert first[1] != first[2]


def test_large_run_reads_back(tmp_path: Path) -> None:
    """20,000 pairs (several read pieces, chunks of many blocks): pysam and gzip read the copies
    back as the inputs, and progress reports reach the number of pairs."""
    pairs = make_pairs(20_000, seed=3, min_len=100, max_len=151)
    seen: list[int] = []
    index, c1, c2 = run(tmp_path, make_inputs(tmp_path, pairs, "gzip", "slash"), 3000, progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] == 20_000
    assert [c.pairs for c in index.chunks] == [3000] * 6 + [2000]
    assert gzip.decompress(c1) == fastq_text(pairs, 1, "slash")
    with pysam.FastxFile(str(tmp_path / "out_R2.fq.gz")) as f:
        assert [(r.name, r.sequence, r.quality) for r in f] == [(p[0] + "/2", p[3], p[4]) for p in pairs]
    assert max(isize for _, isize in blocks(c1)) == 65280
    assert read_all(index, c1, c2) == pairs


def test_level_changes_size_not_text(tmp_path: Path) -> None:
    pairs = make_pairs(500)
    inputs = make_inputs(tmp_path, pairs)
    fast = run(tmp_path, inputs, 100, level=1)
    small = run(tmp_path, inputs, 100, level=6)
    assert gzip.decompress(fast[1]) == gzip.decompress(small[1])
    assert read_all(*small) == pairs


@pytest.mark.parametrize("style", ["casava", "slash", "slash+comment", "bare"])
def test_mate_names_pair_up(tmp_path: Path, style: str) -> None:
    pairs = make_pairs(20)
    index, c1, c2 = run(tmp_path, make_inputs(tmp_path, pairs, "plain", style), 6)
    assert [p[0] for p in read_all(index, c1, c2)] == [p[0] for p in pairs]


def test_missing_last_newline_and_trailing_empty_lines(tmp_path: Path) -> None:
    pairs = make_pairs(5)
    r1 = write(tmp_path / "r1.fq", fastq_text(pairs, 1)[:-1], "plain")
    r2 = write(tmp_path / "r2.fq.gz", fastq_text(pairs, 2) + b"\n\n", "gzip")
    index, c1, c2 = run(tmp_path, (r1, r2), 2)
    assert read_all(index, c1, c2) == pairs
    assert gzip.decompress(c1) == fastq_text(pairs, 1) and gzip.decompress(c2) == fastq_text(pairs, 2)


def test_gzip_zero_padding_is_allowed(tmp_path: Path) -> None:
    pairs = make_pairs(8)
    r1 = tmp_path / "r1.fq.gz"
    r1.write_bytes(multi_member(fastq_text(pairs, 1), 2) + b"\0" * 100)
    r2 = write(tmp_path / "r2.fq.gz", fastq_text(pairs, 2), "bgzf")
    index, c1, c2 = run(tmp_path, (str(r1), r2), 3)
    assert read_all(index, c1, c2) == pairs


# -- bad inputs ------------------------------------------------------------------------
PAIRS = make_pairs(10, seed=5)
R1, R2 = fastq_text(PAIRS, 1), fastq_text(PAIRS, 2)


def record_lines(text: bytes) -> list[bytes]:
    return text.split(b"\n")


def with_line(text: bytes, line: int, new: bytes) -> bytes:
    lines = record_lines(text)
    lines[line] = new
    return b"\n".join(lines)


def bam_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "x.bam"
    with pysam.AlignmentFile(str(path), "wb", header={"SQ": [{"SN": "c", "LN": 10}]}):
        pass
    return path.read_bytes()


# name: (R1 bytes as stored, R2 bytes as stored, which file the message names, words it holds)
Case = Callable[[Path], tuple[bytes, bytes, int, list[str]]]
BAD: dict[str, Case] = {
    "fasta": lambda t: (b">chr1\nACGT\n", gzip.compress(R2), 1,
                        ["is not a FASTQ file (it looks like a FASTA file)", "give the sample's R1 and R2 FASTQ"]),
    "gzip fasta": lambda t: (gzip.compress(R1), gzip.compress(b">chr1\nACGT\n"), 2,
                             ["is not a FASTQ file (it looks like a compressed FASTA file)"]),
    "bam": lambda t: (bam_bytes(t), R2, 1, ["is not a FASTQ file (it is a BAM file)"]),
    "sam": lambda t: (b"@HD\tVN:1.6\n@SQ\tSN:c\tLN:10\n", R2, 1, ["(it looks like a SAM file)"]),
    "text": lambda t: (b"hello\nworld\n", R2, 1, ["its first line does not start with '@': b'hello'"]),
    "truncated gzip": lambda t: (R1, gzip.compress(R2)[:-300], 2,
                                 ["is truncated (the gzip stream ends early): copy it again from its source"]),
    "truncated member": lambda t: (multi_member(R1)[:-5], R2, 1, ["is truncated (the gzip stream ends early)"]),
    "corrupt gzip": lambda t: (gzip.compress(R1)[:-8] + b"\0\0\0\0" + gzip.compress(R1)[-4:], R2, 1,
                               ["is not valid gzip (", "copy it again from its source"]),
    "header": lambda t: (with_line(R1, 8, b"#" + record_lines(R1)[8][1:]), R2, 1,
                         ["malformed record 3 (line 9): its header line does not start with '@'", "seqtk seq"]),
    "plus line": lambda t: (R1, with_line(R2, 6, b"-"), 2,
                            ["malformed record 2 (line 7): its third line does not start with '+'"]),
    "lengths": lambda t: (with_line(R1, 39, record_lines(R1)[39] + b"F"), R2, 1,
                          ["malformed record 10 (line 40): its sequence has", "copy it again from its source"]),
    "multi-line": lambda t: (R1.replace(b"\n+\n", b"\nACGT\n+\n", 1), R2, 1, ["malformed record 1 (line 3)"]),
    "empty name": lambda t: (R1, with_line(R2, 0, b"@"), 2, ["malformed record 1 (line 1): its name is empty"]),
    "cut record": lambda t: (R1, b"\n".join(record_lines(R2)[:38]) + b"\n", 2,
                             ["ends in the middle of record 10 (it has 2 of its 4 lines)", "copy it again"]),
    "crlf": lambda t: (R1.replace(b"\n", b"\r\n"), R2, 1, ["has Windows line ends (CR LF, line 1)", "dos2unix"]),
    "control byte": lambda t: (R1.replace(b"+", b"+\x01", 1), R2, 1, ["malformed record 1", "control byte 0x01"]),
    "non-ascii": lambda t: (R1, R2.replace(b"+", "+é".encode(), 1), 2, ["not printable ASCII"]),
    "fewer in R2": lambda t: (gzip.compress(R1), gzip.compress(b"\n".join(record_lines(R2)[:36]) + b"\n"), 1,
                              ["has 10 reads but FASTQ", "has 9: give the two files of the same run"]),
    "fewer in R1": lambda t: (b"\n".join(record_lines(R1)[:4]) + b"\n", R2, 1, ["has 1 reads but", "has 10:"]),
    "empty": lambda t: (b"", R2, 1, ["is empty (it holds no reads): give the sample's FASTQ files"]),
    "empty gzip": lambda t: (R1, gzip.compress(b""), 2, ["is empty (it holds no reads)"]),
    "names": lambda t: (R1, R2.replace(PAIRS[6][0].encode(), b"other"), 1,
                        ["read pair 7 is named", "'other' in FASTQ", "not in the same order or are not mates",
                         "give R1 and R2 of one library"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(tmp_path: Path, case: str) -> None:
    r1, r2, named, words = BAD[case](tmp_path)
    paths = (tmp_path / "in_R1.fq.gz", tmp_path / "in_R2.fq.gz")
    paths[0].write_bytes(r1)
    paths[1].write_bytes(r2)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FastqError) as e:
        rechunk_pair(str(paths[0]), str(paths[1]), str(out / "R1.fq.gz"), str(out / "R2.fq.gz"), 3)
    message = str(e.value)
    assert "\n" not in message
    assert f"FASTQ {paths[named - 1]}" in message
    for w in words:
        assert w in message
    assert list(out.iterdir()) == []  # neither copy, nor a temporary file


@pytest.mark.parametrize("fault", ["record", "names"])
def test_late_error_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """An error found after many blocks were written (small pieces: many steps) still leaves
    no output and no thread behind."""
    monkeypatch.setattr(fastq, "PIECE", 5000)
    pairs = make_pairs(3000, seed=9)
    r2 = fastq_text(pairs, 2)
    if fault == "record":
        r2 = with_line(r2, 4 * 2900 + 2, b"=")
    else:
        r2 = r2.replace(f"@{pairs[2900][0]} ".encode(), b"@x ")
    inputs = (write(tmp_path / "in_R1.fq.gz", fastq_text(pairs, 1), "gzip"), write(tmp_path / "in_R2.fq", r2, "plain"))
    out = tmp_path / "out"
    out.mkdir()
    threads = threading.active_count()
    with pytest.raises(FastqError, match="2,901"):
        rechunk_pair(*inputs, str(out / "R1.fq.gz"), str(out / "R2.fq.gz"), 100)
    assert list(out.iterdir()) == []
    assert threading.active_count() == threads


def test_missing_input(tmp_path: Path) -> None:
    r1 = write(tmp_path / "r1.fq", R1, "plain")
    with pytest.raises(FastqError, match=r"^FASTQ .*/nope.fq cannot be read \(No such file or directory\): fix"):
        rechunk_pair(r1, str(tmp_path / "nope.fq"), str(tmp_path / "o1"), str(tmp_path / "o2"), 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1.fq"]


def test_failed_run_keeps_older_copies(tmp_path: Path) -> None:
    good = make_inputs(tmp_path, make_pairs(4))
    index, c1, c2 = run(tmp_path, good, 2)
    bad = tmp_path / "bad.fq"
    bad.write_bytes(b">not fastq\n")
    with pytest.raises(FastqError):
        run(tmp_path, (good[0], str(bad)), 2)
    assert (tmp_path / "out_R1.fq.gz").read_bytes() == c1 and (tmp_path / "out_R2.fq.gz").read_bytes() == c2
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_parameters(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path, make_pairs(2))
    for kw in ({"chunk_pairs": 0}, {"chunk_pairs": 1, "level": 10}):
        with pytest.raises(ValueError):
            run(tmp_path, inputs, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same file"):
        rechunk_pair(*inputs, str(tmp_path / "o"), str(tmp_path / "o"), 1)


# -- read_chunk ------------------------------------------------------------------------
def test_read_chunk_rejects_mates_out_of_order(tmp_path: Path) -> None:
    """Copies of two runs whose names differ: read_chunk names the chunk and both names."""
    pairs = make_pairs(6)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = run(tmp_path / "a", make_inputs(tmp_path / "a", pairs, style="slash"), 6)
    b = run(tmp_path / "b", make_inputs(tmp_path / "b", pairs[::-1], style="slash"), 6)
    r1, r2 = a[0].chunks[0].r1, b[0].chunks[0].r2
    with pytest.raises(FastqError) as e:
        read_chunk(a[1][r1[0] : r1[1]], b[2][r2[0] : r2[1]], "sample S chunk 0")
    message = str(e.value)
    assert message.startswith("sample S chunk 0: pair 1 is named ")
    assert f"{pairs[0][0]!r} in R1 but {pairs[-1][0]!r} in R2" in message
    assert "not in the same order or are not mates" in message


def test_read_chunk_rejects_a_wrong_range(tmp_path: Path) -> None:
    index, c1, c2 = run(tmp_path, make_inputs(tmp_path, make_pairs(3000, max_len=151)), 1500)
    first, second = index.chunks
    with pytest.raises(FastqError, match="^chunk 1: the R1 bytes are not the BGZF copy of a FASTQ .*exact byte range"):
        read_chunk(c1[second.r1[0] + 1 : second.r1[1]], c2[second.r2[0] : second.r2[1]], "chunk 1")
    with pytest.raises(FastqError, match="^chunk 0: R1 holds 3,000 reads but R2 1,500"):
        read_chunk(c1[first.r1[0] : second.r1[1]], c2[first.r2[0] : first.r2[1]], "chunk 0")
    # Blocks cut inside a record: not whole records.
    cut = blocks(c1[first.r1[0] : first.r1[1]])[0][0]
    with pytest.raises(FastqError, match="^chunk 0: the R1 bytes do not hold whole FASTQ records"):
        read_chunk(c1[first.r1[0] : first.r1[0] + cut], c2[first.r2[0] : first.r2[1]], "chunk 0")
