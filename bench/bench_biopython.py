#!/usr/bin/env python
"""Can Biopython replace pipeline/fastq.py's own FASTQ parsing and BGZF writing at the
same speed? Times, on the bundled FASTQs (test_data/fastq/*.fastq.gz) and on a larger
generated pair (``--pairs`` pairs of 2 x 150 bp, Casava names, binned qualities, gzip -6):

* parsing: pipeline.fastq's reader (decompress, then check every record with numpy)
  against ``Bio.SeqIO.QualityIO.FastqGeneralIterator`` over the same gzip file (which
  checks less: no name, mate, control-byte or CR LF checks, and yields decoded strings,
  so the copy could not keep the text byte for byte); decompression alone for scale;
* writing: pipeline.fastq's ``_BgzfWriter`` (blocks deflated in a thread pool of
  ``min(4, cores)`` threads, as ``rechunk_pair`` runs it; and with 1 thread) against
  ``Bio.bgzf.BgzfWriter`` (deflates in the calling thread), both at zlib level 1 (the
  pipeline's default), both cutting a fresh block at every chunk of ``--chunk-pairs``
  pairs; Biopython is fed 64 KiB at a time (its buffer is re-sliced per block, so large
  writes cost more). Both copies are checked to inflate to the same text.

Prints the medians of ``--repeats`` runs (and writes them to ``--json``); asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from Bio.bgzf import BgzfWriter
from Bio.SeqIO.QualityIO import FastqGeneralIterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.fastq import DEFAULT_LEVEL, _batches, _BgzfWriter, _text_pieces  # noqa: E402

BIO_FEED = 1 << 16  # bytes handed to Bio.bgzf.BgzfWriter.write at a time


def generate_pair(out_dir: Path, pairs: int, seed: int = 7, length: int = 150) -> tuple[Path, Path]:
    """Two gzip -6 FASTQs of ``pairs`` mates each: Casava names, NovaSeq-like binned qualities."""
    rng = np.random.default_rng(seed)
    paths = (out_dir / f"big_{pairs}_R1.fastq.gz", out_dir / f"big_{pairs}_R2.fastq.gz")
    if all(p.exists() for p in paths):
        return paths
    bases = np.frombuffer(b"ACGT", np.uint8)
    quals = np.frombuffer(b"#,:F", np.uint8)
    step = 50_000
    handles = [gzip.open(p, "wb", compresslevel=6) for p in paths]
    try:
        for first in range(0, pairs, step):
            n = min(step, pairs - first)
            for mate, fh in enumerate(handles, start=1):
                seq = bases[rng.integers(0, 4, (n, length))]
                qual = quals[rng.choice(4, (n, length), p=[0.02, 0.03, 0.15, 0.8])]
                fh.write(b"".join(
                    b"@A00123:8:H7WLKDSXY:1:1101:%d:%d %d:N:0:ACGTACGT\n%s\n+\n%s\n"
                    % (first + i, 1000 + (first + i) % 30000, mate, seq[i].tobytes(), qual[i].tobytes())
                    for i in range(n)))
    finally:
        for fh in handles:
            fh.close()
    return paths


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The median seconds of ``repeats`` calls of ``fn``, and what its last call returned."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def parse_ours(path: Path) -> tuple[int, int]:
    """Records and bases, through pipeline.fastq's checked reader (no read-ahead thread)."""
    records = bases = 0
    with open(path, "rb") as fh:
        for batch in _batches(fh, str(path)):
            records += batch.records
            bases += batch.bases
    return records, bases


def parse_bio(path: Path) -> tuple[int, int]:
    """Records and bases, through Biopython's FastqGeneralIterator."""
    records = bases = 0
    with gzip.open(path, "rt", encoding="ascii") as fh:
        for _title, seq, _qual in FastqGeneralIterator(fh):
            records += 1
            bases += len(seq)
    return records, bases


def inflate_only(path: Path) -> int:
    """Bytes of text: decompression alone, as pipeline.fastq streams it."""
    with open(path, "rb") as fh:
        return sum(len(p) for p in _text_pieces(fh, str(path)))


def chunk_texts(path: Path, chunk_pairs: int) -> list[bytes]:
    """The file's text cut into chunks of ``chunk_pairs`` records (what rechunk_pair writes)."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    in_chunk = 0
    with open(path, "rb") as fh:
        for batch in _batches(fh, str(path)):
            done = 0
            while done < batch.records:
                step = min(batch.records - done, chunk_pairs - in_chunk)
                current.append(bytes(batch.text[batch.offset(done) : batch.offset(done + step)]))
                done += step
                in_chunk += step
                if in_chunk == chunk_pairs:
                    chunks.append(b"".join(current))
                    current, in_chunk = [], 0
    if current:
        chunks.append(b"".join(current))
    return chunks


def write_ours(chunks: list[bytes], out: Path, threads: int, level: int) -> int:
    with open(out, "wb") as fh, ThreadPoolExecutor(max_workers=threads) as pool:
        writer = _BgzfWriter(fh, pool, level)
        for text in chunks:
            writer.add(memoryview(text))
            writer.end_chunk()
        return writer.finish()


def write_bio(chunks: list[bytes], out: Path, level: int) -> int:
    with open(out, "wb") as fh:
        writer = BgzfWriter(fileobj=fh, compresslevel=level)
        for text in chunks:
            for i in range(0, len(text), BIO_FEED):
                writer.write(text[i : i + BIO_FEED])
            writer.flush()  # the next chunk starts a fresh block
        writer.close()
    return out.stat().st_size


def inflate(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def measure(path: Path, work: Path, chunk_pairs: int, repeats: int, level: int) -> dict[str, Any]:
    text_bytes = inflate_only(path)
    row: dict[str, Any] = {"file": path.name, "text_MB": round(text_bytes / 1e6, 1)}
    row["inflate_s"], _ = timed(lambda: inflate_only(path), repeats)
    row["parse_ours_s"], ours = timed(lambda: parse_ours(path), repeats)
    row["parse_bio_s"], bio = timed(lambda: parse_bio(path), repeats)
    if ours != bio:
        raise SystemExit(f"{path}: the parsers disagree: {ours} records/bases against {bio}")
    row["records"] = ours[0]
    chunks = chunk_texts(path, chunk_pairs)
    threads = min(4, os.cpu_count() or 1)
    a, b, c = work / "ours.bgz", work / "ours1.bgz", work / "bio.bgz"
    row["write_ours_s"], row["ours_MB"] = timed(lambda: write_ours(chunks, a, threads, level), repeats)
    row["write_ours_1thread_s"], _ = timed(lambda: write_ours(chunks, b, 1, level), repeats)
    row["write_bio_s"], row["bio_MB"] = timed(lambda: write_bio(chunks, c, level), repeats)
    text = b"".join(chunks)
    if not inflate(a) == inflate(b) == inflate(c) == text:
        raise SystemExit(f"{path}: a BGZF copy does not inflate to the input text")
    row["ours_MB"], row["bio_MB"] = round(row["ours_MB"] / 1e6, 2), round(row["bio_MB"] / 1e6, 2)
    for k in list(row):
        if k.endswith("_s"):
            row[k] = round(row[k], 3)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=500_000, help="pairs of the generated FASTQ (0: none)")
    ap.add_argument("--chunk-pairs", type=int, default=50_000, help="align.chunk_pairs: a fresh block per chunk")
    ap.add_argument("--level", type=int, default=DEFAULT_LEVEL, help="zlib level of the copies")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-bio-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        inputs = sorted((ROOT / "test_data" / "fastq").glob("*.fastq.gz"))
        if args.pairs:
            inputs += list(generate_pair(work, args.pairs))
        rows = []
        print(f"{os.cpu_count()} cores; zlib level {args.level}; chunks of {args.chunk_pairs:,} pairs; "
              f"medians of {args.repeats} runs (seconds)")
        head = ("file", "text_MB", "records", "inflate_s", "parse_ours_s", "parse_bio_s", "write_ours_s",
                "write_ours_1thread_s", "write_bio_s", "ours_MB", "bio_MB")
        print("\t".join(head))
        for path in inputs:
            row = measure(path, work, args.chunk_pairs, args.repeats, args.level)
            rows.append(row)
            print("\t".join(str(row[k]) for k in head), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
