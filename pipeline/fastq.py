"""Rewrite a sample's paired FASTQs as BGZF copies cut into chunks of N read pairs.

Contract: :func:`rechunk_pair` reads R1 and R2 once, side by side, and writes a BGZF
copy of each in which every chunk of ``chunk_pairs`` read pairs (the last may hold
fewer) starts a fresh BGZF block. The :class:`FastqIndex` it returns gives, for each
chunk, the byte range [start, end) of its blocks in each copy, so a function fetches
one chunk with one ranged GET per file and :func:`read_chunk` turns those bytes into
pairs. The copies hold the input text unchanged (except that a missing final newline
is added and trailing empty lines are dropped) and end with the BGZF EOF block, so
``gzip -d``, ``bgzip -d``, htslib and :func:`functions.core.bgzf.inflate` all read them.
Same inputs and parameters give byte-identical copies.

Inputs are gzip-compressed (one member or several, BGZF included) or plain FASTQ,
told apart by their first bytes, with 4 lines per record: multi-line FASTQ is not
supported. Every check runs before anything is published, and each failure is a
:class:`FastqError` whose one-line message names the file, the problem and the fix:
not a FASTQ file, truncated or corrupt gzip, empty, a malformed record (header not
starting with ``@``, third line not starting with ``+``, sequence and quality of
different lengths, an empty name, CR LF line ends, bytes that are not printable
ASCII), R1 and R2 with different numbers of reads, and mates whose names differ.
Names are compared after dropping everything from the first space or tab and then
a trailing ``/1`` or ``/2`` (so ``@r7/1`` pairs with ``@r7/2`` and Casava's
``@r7 1:N:0:1`` with ``@r7 2:N:0:1``); every pair's names are checked.

Memory is bounded by a few MiB of text per file whatever the file or chunk size
(about 170 MB resident in all for 2 x 170 MB of text): the inputs are streamed in
pieces of :data:`PIECE` bytes, each decompressed and checked (numpy on the raw bytes,
no Python loop per record) in a thread of its own a few pieces ahead, while a pool of
threads compresses the BGZF blocks; zlib and numpy release the GIL, so this uses
several cores. Long single records (several MiB) work but are slow: the format is for
short paired reads.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from functions.core.bgzf import EOF_BLOCK
from functions.core.fastq import FIX_MATES as _FIX_MATES
from functions.core.fastq import FastqError

# Text handled per step and file; the memory used is a small multiple of it.
PIECE = 4 << 20
# Compressed bytes read at a time from a gzip input.
RAW_READ = 256 << 10
# Uncompressed bytes per BGZF block, as bgzip: even stored (incompressible) text fits in 64 KiB.
BLOCK_TEXT = 65280
# Text compressed per thread job (a whole number of blocks), and jobs in flight per file.
JOB_TEXT = 16 * BLOCK_TEXT
MAX_JOBS = 8
# Pieces decompressed ahead of the checks, per file.
READ_AHEAD = 2
# zlib level of the copies: see rechunk_pair for the measurements behind it.
DEFAULT_LEVEL = 1

GZIP_MAGIC = b"\x1f\x8b"
# gzip header with the BC extra field (BSIZE filled in), as in functions.core.bgzf.EOF_BLOCK.
_HEADER = struct.Struct("<4sIBBHHHH")
_TRAILER = struct.Struct("<II")
_SAM_HEADERS = (b"@HD\t", b"@SQ\t", b"@RG\t", b"@PG\t", b"@CO\t")
_FIX_SOURCE = "copy it again from its source"
_FIX_RECORDS = ("copy it again from its source; multi-line FASTQ is not supported "
                "(`seqtk seq` rewrites it with 4 lines per record)")


@dataclass(frozen=True)
class FastqChunk:
    """Pairs [first_pair, first_pair + pairs) and the bytes of their blocks in each copy."""

    index: int
    first_pair: int
    pairs: int
    r1: tuple[int, int]  # [start, end) of this chunk's BGZF blocks in the copy of fastq_1
    r2: tuple[int, int]  # the same in the copy of fastq_2

    def __repr__(self) -> str:
        return (f"FastqChunk(#{self.index} pairs {self.first_pair}+{self.pairs}, "
                f"r1 {self.r1[0]}-{self.r1[1]}, r2 {self.r2[0]}-{self.r2[1]})")

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "first_pair": self.first_pair, "pairs": self.pairs,
                "r1": list(self.r1), "r2": list(self.r2)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FastqChunk:
        return cls(int(d["index"]), int(d["first_pair"]), int(d["pairs"]),
                   (int(d["r1"][0]), int(d["r1"][1])), (int(d["r2"][0]), int(d["r2"][1])))


@dataclass(frozen=True)
class FastqIndex:
    """What :func:`rechunk_pair` wrote: totals, the chunks, and the sizes of the copies."""

    pairs: int
    bases: int  # bases in all reads of both files
    max_read_length: int
    chunks: tuple[FastqChunk, ...]
    size_1: int  # bytes of the BGZF copies (EOF block included)
    size_2: int
    seconds: float

    def __repr__(self) -> str:
        return (f"FastqIndex({self.pairs} pairs in {len(self.chunks)} chunks, {self.bases} bases, "
                f"reads up to {self.max_read_length} bp, {self.size_1} + {self.size_2} B, {self.seconds:.1f} s)")

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "bases": self.bases, "max_read_length": self.max_read_length,
                "chunks": [c.as_dict() for c in self.chunks], "size_1": self.size_1,
                "size_2": self.size_2, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FastqIndex:
        return cls(int(d["pairs"]), int(d["bases"]), int(d["max_read_length"]),
                   tuple(FastqChunk.from_dict(c) for c in d["chunks"]),
                   int(d["size_1"]), int(d["size_2"]), float(d["seconds"]))


# -- reading ---------------------------------------------------------------------------
def _looks_like(raw: bytes, text: bytes) -> str:
    """What a file whose text does not start a FASTQ record looks like, for the message.

    ``raw``: its first bytes as stored; ``text``: its first bytes decompressed.
    """
    packed = "compressed " if raw[:2] == GZIP_MAGIC else ""
    if text[:4] == b"BAM\x01":
        return "it is a BAM file"
    for magic, kind in ((b"CRAM", "a CRAM file"), (b"BAI\x01", "a BAM index"), (b"BZh", "bzip2-compressed"),
                        (b"\xfd7zXZ\x00", "xz-compressed"), (b"\x28\xb5\x2f\xfd", "zstd-compressed")):
        if text.startswith(magic):
            return f"it is {kind}"
    if text[:1] == b">":
        return f"it looks like a {packed}FASTA file"
    if text[:16] == b"##fileformat=VCF":
        return f"it looks like a {packed}VCF file"
    if text.startswith(_SAM_HEADERS):
        return f"it looks like a {packed}SAM file"
    line = text.split(b"\n", 1)[0][:40]
    return f"its first line does not start with '@': {line!r}"


def _text_pieces(fh: IO[bytes], path: str) -> Iterator[bytes]:
    """The text of a gzip (any number of members) or plain file, in pieces of about PIECE bytes."""
    data = fh.read(RAW_READ)
    if data[:2] != GZIP_MAGIC:
        while data:
            yield data + fh.read(PIECE - len(data)) if len(data) < PIECE else data
            data = fh.read(PIECE)
        return
    d = zlib.decompressobj(31)
    out: list[bytes] = []
    size = 0
    while True:
        if not data:
            data = fh.read(RAW_READ)
            if not data:
                break
        if d.eof:  # a member ended: another may follow, after zero padding perhaps (as gzip allows)
            data = data.lstrip(b"\0")
            if not data:
                continue
            d = zlib.decompressobj(31)
        try:
            text = d.decompress(data, PIECE)
        except zlib.error as e:
            raise FastqError(f"FASTQ {path} is not valid gzip ({e}): {_FIX_SOURCE}") from None
        data = d.unused_data if d.eof else d.unconsumed_tail
        if text:
            out.append(text)
            size += len(text)
            if size >= PIECE:
                yield b"".join(out)
                out, size = [], 0
    if not d.eof:
        raise FastqError(f"FASTQ {path} is truncated (the gzip stream ends early): {_FIX_SOURCE}")
    if out:
        yield b"".join(out)


@dataclass
class _Batch:
    """Whole, checked records of one file: their text, line ends (4 per record) and names
    (where each starts and ends in the text, without '@', comment, /1 or /2)."""

    text: memoryview
    nl: np.ndarray
    name_start: np.ndarray
    name_end: np.ndarray
    bases: int
    longest: int

    @property
    def records(self) -> int:
        return len(self.name_start)

    def offset(self, record: int) -> int:
        """Where record number ``record`` (0-based, up to ``records``) starts in the text."""
        return int(self.nl[4 * record - 1]) + 1 if record else 0


def _batches(fh: IO[bytes], path: str) -> Generator[_Batch, None, None]:
    """The records of a FASTQ, checked, in batches of about PIECE bytes of text."""
    head = fh.read(RAW_READ)  # what the file is, for messages
    fh.seek(0)
    buf = b""
    done = 0
    for piece in _text_pieces(fh, path):
        if not done and not buf and (piece[:1] != b"@" or piece.startswith(_SAM_HEADERS)):
            raise FastqError(
                f"FASTQ {path} is not a FASTQ file ({_looks_like(head, piece)}): "
                "give the sample's R1 and R2 FASTQ files (gzip-compressed or plain)"
            )
        buf = buf + piece if buf else piece
        batch, end = _check_records(path, buf, done)
        if batch is not None:
            yield batch
            done += batch.records
            buf = buf[end:]
    # The end: add a missing last newline, drop trailing empty lines.
    if buf and not buf.endswith(b"\n"):
        buf += b"\n"
    end = len(buf)
    while end and (end == 1 or buf[end - 2] == 10):
        end -= 1
    buf = buf[:end]
    if buf:
        batch, end = _check_records(path, buf, done)
        if batch is not None:
            yield batch
            done += batch.records
        if end < len(buf):
            lines = buf[end:].count(10)
            raise FastqError(f"FASTQ {path} ends in the middle of record {done + 1:,} "
                             f"(it has {lines} of its 4 lines): {_FIX_RECORDS}")
    if not done:
        raise FastqError(f"FASTQ {path} is empty (it holds no reads): "
                         "give the sample's FASTQ files, or copy this one again from its source")


def _check_records(path: str, buf: bytes, first: int) -> tuple[_Batch | None, int]:
    """Check the whole records at the start of ``buf``; return them (None if there are none)
    and where they end. ``first``: the number of records before ``buf`` in the file.

    Not Biopython's ``FastqGeneralIterator``: it checks less (no names, mates, control
    bytes or CR LF), yields decoded strings (the copy could not keep the text byte for
    byte) and is slower: on 500,000 reads of 150 bp (179 MB of text, gzip -6),
    decompressing and reading them took 0.62-0.70 s here and 1.25 s through it
    (decompression alone 0.51-0.55 s; ``bench/bench_biopython.py``, 2 cores).
    """
    arr = np.frombuffer(buf, np.uint8)
    low = np.flatnonzero(arr <= 32)  # line ends, spaces, tabs and (not allowed) other control bytes
    kinds = arr[low]
    nl = low[kinds == 10]
    n = len(nl) // 4
    if n == 0:
        return None, 0
    end = int(nl[4 * n - 1]) + 1
    cut = int(np.searchsorted(low, end))
    arr, low, kinds, nl = arr[:end], low[:cut], kinds[:cut], nl[: 4 * n]
    starts = np.empty_like(nl)
    starts[0] = 0
    starts[1:] = nl[:-1] + 1

    def line_of(pos: int) -> int:
        return int(np.searchsorted(nl, pos))

    def fail(line: int, problem: str) -> FastqError:
        return FastqError(f"FASTQ {path} has a malformed record {first + line // 4 + 1:,} "
                          f"(line {4 * first + line + 1:,}): {problem}: {_FIX_RECORDS}")

    odd = low[(kinds < 32) & (kinds != 10) & (kinds != 9)]
    if len(odd):
        pos = int(odd[0])
        if arr[pos] == 13:
            raise FastqError(f"FASTQ {path} has Windows line ends (CR LF, line {4 * first + line_of(pos) + 1:,}): "
                             "convert them to LF, e.g. with `dos2unix`")
        raise fail(line_of(pos), f"it holds the control byte 0x{arr[pos]:02x}")
    if arr.max() > 126:
        pos = int(np.flatnonzero(arr > 126)[0])
        raise fail(line_of(pos), f"it holds the byte 0x{arr[pos]:02x}, which is not printable ASCII")
    heads = starts[0::4]
    seq_len = nl[1::4] - starts[1::4]
    qual_len = nl[3::4] - starts[3::4]
    problems = []  # (line, problem): the first line at fault is reported
    bad = np.flatnonzero(arr[heads] != 64)
    if len(bad):
        problems.append((4 * int(bad[0]), "its header line does not start with '@'"))
    bad = np.flatnonzero(arr[starts[2::4]] != 43)
    if len(bad):
        problems.append((4 * int(bad[0]) + 2, "its third line does not start with '+'"))
    bad = np.flatnonzero(seq_len != qual_len)
    if len(bad):
        k = int(bad[0])
        problems.append((4 * k + 3, f"its sequence has {seq_len[k]} bases but its quality {qual_len[k]} values"))
    if problems:
        raise fail(*min(problems))

    # Names: up to the first space or tab, less a trailing /1 or /2.
    head_end = nl[0::4]
    name_end = head_end
    gaps = low[(kinds == 32) | (kinds == 9)]
    if len(gaps):
        j = np.searchsorted(gaps, heads)
        gap = gaps[np.minimum(j, len(gaps) - 1)]
        name_end = np.where((j < len(gaps)) & (gap < head_end), gap, head_end)
    name_start = heads + 1
    bad = np.flatnonzero(name_end == name_start)
    if len(bad):
        raise fail(4 * int(bad[0]), "its name is empty")
    last = arr[name_end - 1]
    mate = (name_end - name_start > 2) & (arr[name_end - 2] == 47) & ((last == 49) | (last == 50))
    name_end = name_end - 2 * mate
    batch = _Batch(memoryview(buf)[:end], nl, name_start, name_end, int(seq_len.sum()), int(seq_len.max()))
    return batch, end


class _Reader:
    """A FASTQ's batches, made in a thread of its own a few batches ahead of their use."""

    def __init__(self, path: str, fh: IO[bytes]) -> None:
        self.batches = _batches(fh, path)
        self.thread = ThreadPoolExecutor(max_workers=1)  # one thread: the generator runs in turn
        self.ahead: deque[Future[_Batch | None]] = deque(
            self.thread.submit(next, self.batches, None) for _ in range(READ_AHEAD))

    def next(self) -> _Batch | None:
        batch = self.ahead.popleft().result()
        self.ahead.append(self.thread.submit(next, self.batches, None))
        return batch

    def close(self) -> None:
        self.thread.shutdown(wait=True, cancel_futures=True)
        self.batches.close()


def _check_mates(paths: tuple[str, str], batches: tuple[_Batch, _Batch], spans: tuple[slice, slice],
                 first: int) -> None:
    """Each record of R1 in ``spans[0]`` of its batch has the name of the same record of R2.

    ``first``: the number of pairs before these in the files.
    """
    a, b = np.frombuffer(batches[0].text, np.uint8), np.frombuffer(batches[1].text, np.uint8)
    sa, sb = batches[0].name_start[spans[0]], batches[1].name_start[spans[1]]
    la, lb = batches[0].name_end[spans[0]] - sa, batches[1].name_end[spans[1]] - sb
    bad = np.flatnonzero(la != lb)
    k = int(bad[0]) if len(bad) else len(la)
    # Compare the bytes of the names before the first pair whose names differ in length.
    lens = la[:k]
    offsets = np.cumsum(lens) - lens
    within = np.arange(int(lens.sum())) - np.repeat(offsets, lens)
    diff = np.flatnonzero(a[within + np.repeat(sa[:k], lens)] != b[within + np.repeat(sb[:k], lens)])
    if len(diff):
        k = int(np.searchsorted(offsets, diff[0], side="right")) - 1
    if k < len(la):
        n1 = bytes(batches[0].text[sa[k] : sa[k] + la[k]]).decode()
        n2 = bytes(batches[1].text[sb[k] : sb[k] + lb[k]]).decode()
        raise FastqError(
            f"read pair {first + k + 1:,} is named {n1!r} in FASTQ {paths[0]} but {n2!r} in FASTQ {paths[1]}: "
            f"the files are not in the same order or are not mates; {_FIX_MATES}"
        )


# -- writing ---------------------------------------------------------------------------
def _deflate_blocks(text: memoryview, level: int) -> bytes:
    """BGZF blocks of at most BLOCK_TEXT bytes of ``text`` each."""
    out = []
    for i in range(0, len(text), BLOCK_TEXT):
        raw = text[i : i + BLOCK_TEXT]
        data = zlib.compress(raw, level, -15)
        # ID1 ID2 CM FLG, MTIME 0, XFL 0, OS 255, XLEN 6, 'BC', SLEN 2, BSIZE - 1
        out.append(_HEADER.pack(b"\x1f\x8b\x08\x04", 0, 0, 255, 6, 0x4342, 2, len(data) + 25))
        out.append(data)
        out.append(_TRAILER.pack(zlib.crc32(raw), len(raw)))
    return b"".join(out)


class _BgzfWriter:
    """Writes one BGZF copy: text comes in, chunk by chunk; blocks are compressed in the pool.

    Not ``Bio.bgzf.BgzfWriter``, which deflates in the calling thread: writing those
    179 MB (level 1, a fresh block per 50,000 reads) took 1.2-1.5 s here (2 threads),
    1.6-1.8 s here with 1 thread and 1.7-1.8 s through Biopython
    (``bench/bench_biopython.py``, 2 cores; the pool takes up to 4).
    """

    def __init__(self, fh: IO[bytes], pool: ThreadPoolExecutor, level: int) -> None:
        self.fh, self.pool, self.level = fh, pool, level
        self.parts: list[bytes | memoryview] = []
        self.size = 0
        self.jobs: deque[Future[bytes] | None] = deque()  # None marks the end of a chunk
        self.offset = 0
        self.ends: list[int] = []  # where each chunk's blocks end in the copy

    def add(self, text: bytes | memoryview) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size >= JOB_TEXT:
            data = memoryview(b"".join(self.parts))
            cut = len(data) - len(data) % JOB_TEXT
            for i in range(0, cut, JOB_TEXT):
                self._submit(data[i : i + JOB_TEXT])
            self.parts = [data[cut:]] if cut < len(data) else []
            self.size = len(data) - cut

    def end_chunk(self) -> None:
        if self.size:
            self._submit(memoryview(b"".join(self.parts)))
        self.parts, self.size = [], 0
        self.jobs.append(None)

    def _submit(self, text: memoryview) -> None:
        self.jobs.append(self.pool.submit(_deflate_blocks, text, self.level))
        while len(self.jobs) > MAX_JOBS:
            self._write_one()

    def _write_one(self) -> None:
        job = self.jobs.popleft()
        if job is None:
            self.ends.append(self.offset)
        else:
            blocks = job.result()
            self.fh.write(blocks)
            self.offset += len(blocks)

    def finish(self) -> int:
        """Write what is left and the EOF block; return the size of the copy."""
        while self.jobs:
            self._write_one()
        self.fh.write(EOF_BLOCK)
        return self.offset + len(EOF_BLOCK)


def rechunk_pair(
    fastq_1: str,
    fastq_2: str,
    out_1: str,
    out_2: str,
    chunk_pairs: int,
    level: int = DEFAULT_LEVEL,
    progress: Callable[[int], None] | None = None,
) -> FastqIndex:
    """One streaming pass over both inputs: check them and write their BGZF copies.

    ``out_1`` and ``out_2`` appear (through ``<out>.tmp`` and a rename) only when every
    check has passed; on any error no output or temporary file is left. ``chunk_pairs``:
    read pairs per chunk (the last chunk may hold fewer). ``level``: zlib level of the
    copies. The default, 1, was chosen by measuring 500,000 synthetic pairs of 2x150 bp
    (Casava names, NovaSeq-like binned qualities; gzip -6 inputs of 2 x 43 MB) on 2 cores:
    level 1 took 2.9 s and wrote 2 x 51 MB, level 4 4.1 s for 2 x 46 MB, level 6 13.9 s
    for 2 x 44 MB (level 0, stored, 1.4 s for 2 x 173 MB). The copies are read once, by
    the aligning functions, so 10 % to 14 % fewer bytes are not worth 1 to 11 s on the
    critical path. ``progress`` is called with the number of pairs done so far, every few
    MiB of text.
    """
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be at least 1, not {chunk_pairs}")
    if not 0 <= level <= 9:
        raise ValueError(f"level must be a zlib level from 0 to 9, not {level}")
    if os.path.abspath(out_1) == os.path.abspath(out_2):
        raise ValueError(f"out_1 and out_2 are the same file: {out_1}")
    began = time.perf_counter()
    paths = (str(fastq_1), str(fastq_2))
    tmps = (f"{out_1}.tmp", f"{out_2}.tmp")
    try:
        with contextlib.ExitStack() as stack:
            ins = [stack.enter_context(_open_input(p)) for p in paths]
            outs = [stack.enter_context(open(t, "wb")) for t in tmps]
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)))
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            readers = []
            for path, fh in zip(paths, ins, strict=True):
                readers.append(_Reader(path, fh))
                stack.callback(readers[-1].close)
            writers = (_BgzfWriter(outs[0], pool, level), _BgzfWriter(outs[1], pool, level))
            copy = _Copy(paths, pool, writers, chunk_pairs, progress)
            copy.run(readers[0], readers[1])
            size_1, size_2 = writers[0].finish(), writers[1].finish()
        starts = (0, 0)
        chunks = []
        for i, ((first, n), e1, e2) in enumerate(zip(copy.spans, writers[0].ends, writers[1].ends, strict=True)):
            chunks.append(FastqChunk(i, first, n, (starts[0], e1), (starts[1], e2)))
            starts = (e1, e2)
        os.replace(tmps[0], out_1)
        os.replace(tmps[1], out_2)
    except BaseException:
        for t in tmps:
            with contextlib.suppress(FileNotFoundError):
                os.remove(t)
        raise
    return FastqIndex(copy.pairs, copy.bases, copy.longest, tuple(chunks), size_1, size_2,
                      time.perf_counter() - began)


def _open_input(path: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as e:
        raise FastqError(f"FASTQ {path} cannot be read ({e.strerror}): fix its path in the sample sheet") from None


class _Copy:
    """Moves the checked records of R1 and R2, side by side, into the writers, cutting chunks."""

    def __init__(self, paths: tuple[str, str], pool: ThreadPoolExecutor,
                 writers: tuple[_BgzfWriter, _BgzfWriter], chunk_pairs: int,
                 progress: Callable[[int], None] | None) -> None:
        self.paths, self.pool, self.writers = paths, pool, writers
        self.chunk_pairs, self.progress = chunk_pairs, progress
        self.pairs = self.bases = self.longest = 0
        self.in_chunk = 0
        self.spans: list[tuple[int, int]] = []  # each chunk's first pair and pairs
        self.checks: deque[Future[None]] = deque()  # mate-name checks, run in the pool

    def run(self, r1: _Reader, r2: _Reader) -> None:
        readers = (r1, r2)
        batches: list[_Batch | None] = [None, None]
        pos = [0, 0]  # records of each batch already copied
        while True:
            for i, reader in enumerate(readers):
                batch = batches[i]
                if batch is None or pos[i] == batch.records:
                    batch = batches[i] = reader.next()
                    pos[i] = 0
                    if batch is not None:
                        self.bases += batch.bases
                        self.longest = max(self.longest, batch.longest)
            b1, b2 = batches
            if b1 is None or b2 is None:
                break
            n = min(b1.records - pos[0], b2.records - pos[1])
            spans = (slice(pos[0], pos[0] + n), slice(pos[1], pos[1] + n))
            self.checks.append(self.pool.submit(_check_mates, self.paths, (b1, b2), spans, self.pairs))
            while self.checks and self.checks[0].done():
                self.checks.popleft().result()
            self._write((b1, b2), pos, n)
            pos = [pos[0] + n, pos[1] + n]
        for check in self.checks:
            check.result()
        if self.in_chunk:
            self._end_chunk()
        if batches[0] is not None or batches[1] is not None:  # one file ended before the other
            counts = [self.pairs, self.pairs]
            for i, reader in enumerate(readers):
                batch = batches[i]
                while batch is not None:
                    counts[i] += batch.records - pos[i]
                    batch, pos[i] = reader.next(), 0
            raise FastqError(f"FASTQ {self.paths[0]} has {counts[0]:,} reads but FASTQ {self.paths[1]} has "
                             f"{counts[1]:,}: give the two files of the same run (R1 and R2 of one library)")

    def _write(self, batches: tuple[_Batch, _Batch], pos: list[int], n: int) -> None:
        """Copy ``n`` records of each batch from ``pos``, ending chunks where they are full."""
        k = 0
        while k < n:
            step = min(n - k, self.chunk_pairs - self.in_chunk)
            for batch, p, writer in zip(batches, pos, self.writers, strict=True):
                writer.add(batch.text[batch.offset(p + k) : batch.offset(p + k + step)])
            k += step
            self.in_chunk += step
            self.pairs += step
            if self.in_chunk == self.chunk_pairs:
                self._end_chunk()
        if self.progress is not None:
            self.progress(self.pairs)

    def _end_chunk(self) -> None:
        for writer in self.writers:
            writer.end_chunk()
        self.spans.append((self.pairs - self.in_chunk, self.in_chunk))
        self.in_chunk = 0
