"""FASTQ pairs to one coordinate-sorted, indexed BAM: staging, the fan-out, the merge.

Contract, step by step (each is one CLI step, :mod:`pipeline.cli`):

* :func:`stage_index` builds the reference's minimap2 index (preset ``sr``) once,
  locally, and puts it into the store beside the reference; its manifest names
  the object, the preset and the mappy version. Functions load it from there.
* :func:`stage_fastq` reads a sample's two FASTQs in one streaming pass
  (:func:`pipeline.fastq.rechunk_pair`): a BGZF copy of each, in which every chunk
  of ``chunk_pairs`` pairs starts a BGZF block, goes into the store, and the
  manifest lists each chunk's byte range in both copies. No function ever reads a
  whole FASTQ: each fetches its chunk with one ranged GET per file.
* :func:`align_samples` runs one function per chunk of every sample
  (:func:`functions.align.align_chunk`) in one map, reusing the parts of an
  earlier run that are intact (keyed, like VCF fragments, by what produced them:
  the FASTQ copies, the chunk, the index, the header, the parameters, the code),
  and writes one JSON manifest per sample listing its parts in chunk order with
  their stats. It returns an :class:`AlignSummary` (reads, pairs, mapped %,
  seconds per chunk).
* :func:`merge_parts` fetches the parts to local disk one by one and merges them
  with ``samtools merge`` (streaming: never the whole BAM in memory) into the
  sample's BAM and its index, checks it with ``samtools quickcheck``, and writes
  a stats report (reads, pairs, mapped and properly paired reads, supplementary
  records, counted by the functions as they wrote them; seconds per chunk). Outputs appear under their names
  only when complete. The BAM is then staged and called like any other sample's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pipeline
from functions.align import align_chunk
from functions.core.atomic import atomic_outputs
from functions.core.errors import SvcError
from functions.core.storage import ObjectMissingError, ObjectStore
from functions.core.tasks import ChunkTask, IndexRef
from pipeline.config import Sample
from pipeline.executor import LithopsRunner, SerialRunner
from pipeline.fanout import check_staged, run_todo, split_done
from pipeline.fastq import FastqChunk, rechunk_pair
from pipeline.manifests import AlignmentParts, FunctionStats, StagedFastq, StagedIndex, StagedReference, StoredFile
from pipeline.stage import run_samtools, stage_file
from pipeline.validate import InputError

logger = logging.getLogger(__name__)

PRESET = "sr"


class AlignError(SvcError, RuntimeError):
    """The alignment step cannot go on; the message names the problem and the fix."""


@dataclass(frozen=True)
class ReadGroup:
    """The ``@RG`` line of a sample's reads: ID, SM (the sample), LB, PL and PU."""

    id: str
    sample: str
    library: str
    platform: str
    platform_unit: str | None = None

    @classmethod
    def of(cls, sample: Sample) -> ReadGroup:
        """The read group of a sheet row: its columns, else the defaults (ID and LB the sample, PL ILLUMINA)."""
        return cls(id=sample.rg("read_group") or sample.name, sample=sample.name,
                   library=sample.rg("library") or sample.name, platform=sample.rg("platform") or "ILLUMINA",
                   platform_unit=sample.rg("platform_unit"))

    def line(self) -> str:
        fields = [f"ID:{self.id}", f"SM:{self.sample}", f"LB:{self.library}", f"PL:{self.platform}"]
        if self.platform_unit:
            fields.append(f"PU:{self.platform_unit}")
        return "@RG\t" + "\t".join(fields)


@dataclass(frozen=True)
class AlignParams:
    """What changes the records: part of every part's key."""

    chunk_pairs: int = 50_000
    max_insert: int = 800
    # align.mark_duplicates, resolved: parts go through `samtools fixmate -m` (mate
    # scores, for the merge's `samtools markdup`).
    mark_duplicates: bool = True

    def task_params(self) -> dict[str, Any]:
        return {"preset": PRESET, "max_insert": self.max_insert, "fixmate": self.mark_duplicates}


def mappy_version() -> str:
    import mappy

    return str(getattr(mappy, "__version__", "unknown"))


def code_version() -> str:
    return f"serverless-variant-calling {pipeline.__version__}; mappy {mappy_version()}"


# -- the reference index -----------------------------------------------------------
def stage_index(store: ObjectStore, reference: str, workdir: str | Path, out: str | Path) -> StagedIndex:
    """Build (or reuse) the minimap2 index of the local reference FASTA and stage it.

    An index in ``workdir`` is reused when it was built from a FASTA of the same size
    and modification time with the same preset and mappy version.
    """
    import mappy

    os.makedirs(workdir, exist_ok=True)
    mmi = os.path.join(workdir, f"{os.path.basename(reference)}.{PRESET}.mmi")
    version = mappy_version()
    stamp = f"{mmi}.json"
    if not os.path.exists(reference):
        raise InputError(f"reference {reference} not found; fix 'reference' in the config")
    st = os.stat(reference)
    source = {"reference": os.path.abspath(reference), "fingerprint": f"{st.st_size}-{st.st_mtime_ns}",
              "preset": PRESET, "mappy": version}
    fresh = os.path.exists(mmi) and os.path.exists(stamp) and json.loads(Path(stamp).read_text()) == source
    t0 = time.monotonic()
    if not fresh:
        tmp = f"{mmi}.tmp{os.getpid()}"
        try:
            aligner = mappy.Aligner(reference, preset=PRESET, fn_idx_out=tmp, n_threads=2)
            if not aligner or not os.path.exists(tmp):
                raise AlignError(f"minimap2 cannot index reference {reference}: check that it is a FASTA file")
            names = list(aligner.seq_names)
            del aligner
            os.replace(tmp, mmi)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        Path(stamp).write_text(json.dumps(source, sort_keys=True))
        logger.info("built the minimap2 index of %s (%d contigs, %.1f MB) in %.1f s", reference, len(names),
                    os.path.getsize(mmi) / 1e6, time.monotonic() - t0)
    key = store.key("reference", os.path.basename(mmi))
    manifest = StagedIndex(stage_file(store, mmi, key), **source)
    manifest.write(out, indent=2)
    return manifest


# -- the FASTQs ----------------------------------------------------------------------
def stage_fastq(store: ObjectStore, sample: str, fastq_1: str, fastq_2: str, chunk_pairs: int,
                workdir: str | Path, out: str | Path, progress: bool = True) -> StagedFastq:
    """Cut the sample's FASTQ pair into chunks (BGZF copies + index) and stage the copies."""
    from pipeline.executor import progress_bar

    for fq in (fastq_1, fastq_2):
        if not os.path.exists(fq):
            raise InputError(f"FASTQ {fq} of sample {sample} not found: fix the path in the sample sheet")
    os.makedirs(workdir, exist_ok=True)
    copies = [os.path.join(workdir, f"{sample}_R{i}.fastq.bgz") for i in (1, 2)]
    size = os.path.getsize(fastq_1) + os.path.getsize(fastq_2)
    with progress_bar(None, progress, f"chunking {sample}'s FASTQs", " pairs") as bar:
        def advance(done: int) -> None:
            bar.update(done - bar.n)

        index = rechunk_pair(fastq_1, fastq_2, copies[0], copies[1], chunk_pairs, progress=advance)
    logger.info("chunked %s: %d pairs (%.2f Gbases) into %d chunks of up to %d pairs in %.1f s "
                "(%.1f MB of FASTQ read, %.1f MB of BGZF written)", sample, index.pairs, index.bases / 1e9,
                len(index.chunks), chunk_pairs, index.seconds, size / 1e6, (index.size_1 + index.size_2) / 1e6)
    objs = [stage_file(store, path, store.key("inputs", sample, os.path.basename(path))) for path in copies]
    if store.backend != "localhost":  # the store holds the copies now; the local store links to them
        for path in copies:
            os.remove(path)
    manifest = StagedFastq(sample, (os.path.abspath(fastq_1), os.path.abspath(fastq_2)), chunk_pairs,
                           objs[0], objs[1], index)
    manifest.write(out, indent=2)
    return manifest


# -- the fan-out ---------------------------------------------------------------------
def bam_header(ref_manifest: StagedReference, read_group: ReadGroup) -> str:
    """The SAM header of every part (and so of the merged BAM): no path, no time, no chunk size."""
    lines = ["@HD\tVN:1.6\tSO:coordinate"]
    for c in ref_manifest.contigs:
        lines.append(f"@SQ\tSN:{c.name}\tLN:{c.length}" + (f"\tM5:{c.md5}" if c.md5 else ""))
    lines.append(read_group.line())
    lines.append(f"@PG\tID:minimap2\tPN:minimap2\tVN:mappy-{mappy_version()}\t"
                 f"CL:mappy.Aligner(index, preset='{PRESET}').map(read1, read2) via serverless-variant-calling "
                 f"{pipeline.__version__}")
    return "\n".join(lines) + "\n"


def part_key(fq: StagedFastq, index: StoredFile, chunk: FastqChunk, header: str, params: dict[str, Any]) -> str:
    blob = json.dumps(
        {"fastq": [fq.fastq_1.fingerprint, fq.fastq_2.fingerprint], "index": index.fingerprint,
         "chunk": [list(chunk.r1), list(chunk.r2), chunk.pairs], "header": header, "params": params,
         "code": code_version()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def make_tasks(store: ObjectStore, fq: StagedFastq, index_manifest: StagedIndex, header: str,
               read_group: ReadGroup, params: AlignParams,
               faults: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    sample = fq.sample
    index = index_manifest.index
    tp = params.task_params()
    tasks = []
    for chunk in fq.index.chunks:
        key = part_key(fq, index, chunk, header, tp)
        tasks.append(ChunkTask(
            sample=sample,
            store=store.describe(),
            index=IndexRef(index.ref, index.size, index.fingerprint),
            fastq_1=fq.fastq_1.ref,
            fastq_2=fq.fastq_2.ref,
            chunk=chunk.as_dict(),
            header=header,
            read_group=read_group.id,
            params=tp,
            key=key,
            out_key=store.key("aligned", sample, f"{chunk.index:05d}-{key}"),
            faults=faults if faults and faults.get("probability") else None,
        ).to_dict())
    return tasks


@dataclass
class AlignSummary:
    samples: int
    chunks: int
    computed: int
    reused: int
    pairs: int
    reads: int
    mapped: int
    properly_paired: int
    chunk_seconds: list[float] = field(default_factory=list)
    get_bytes: int = 0
    gets: int = 0
    seconds: float = 0.0
    retries: int = 0

    def line(self) -> str:
        def pct(n: int) -> float:
            return 100.0 * n / self.reads if self.reads else 0.0

        per = ""
        if self.chunk_seconds:
            per = (f"; {statistics.median(self.chunk_seconds):.1f} s per chunk (median; slowest "
                   f"{max(self.chunk_seconds):.1f} s)")
        retried = f", {self.retries} retries" if self.retries else ""
        return (f"aligned {self.samples} sample(s): {self.pairs:,} pairs ({self.reads:,} reads) in {self.chunks} "
                f"chunks ({self.computed} functions run, {self.reused} parts reused{retried}): "
                f"{pct(self.mapped):.2f} % of reads mapped, {pct(self.properly_paired):.2f} % properly paired"
                f"{per}; read {self.get_bytes / 1e6:.1f} MB in {self.gets} GETs; {self.seconds:.1f} s")


def align_samples(
    store: ObjectStore,
    fastqs: list[StagedFastq],
    index_manifest: StagedIndex,
    ref_manifest: StagedReference,
    read_groups: dict[str, ReadGroup],
    params: AlignParams,
    runner: SerialRunner | LithopsRunner,
    out_manifests: dict[str, str | Path],
    faults: dict[str, Any] | None = None,
) -> AlignSummary:
    """Align every chunk of the samples in one map; ``faults`` (config ``faults``, tests only)
    travel in the tasks, outside the parts' keys."""
    t0 = time.monotonic()
    check_staged(store, [index_manifest, *fastqs], rerun="stage_fastq index_reference")
    tasks: list[dict[str, Any]] = []
    for fq in fastqs:
        header = bam_header(ref_manifest, read_groups[fq.sample])
        tasks += make_tasks(store, fq, index_manifest, header, read_groups[fq.sample], params, faults)
    done, todo = split_done(store, tasks, [store.key("aligned", fq.sample) + "/" for fq in fastqs], ".bam")
    logger.info("align: %d samples, %d chunks; %d parts already done, %d functions to run with %r",
                len(fastqs), len(tasks), len(done), len(todo), runner)
    done.update(run_todo(runner, align_chunk, todo, tasks, "aligning chunks", "chunk", AlignError))
    for fq in fastqs:
        parts = tuple(FunctionStats(**done[t["out_key"]], out_key=t["out_key"])  # type: ignore[typeddict-item]
                      for t in tasks if t["sample"] == fq.sample)
        AlignmentParts(fq.sample, code_version(), params.task_params(), fq.index.pairs, parts).write(
            out_manifests[fq.sample])
    computed = [s for s in done.values() if not s["reused"]]
    every = list(done.values())
    return AlignSummary(
        samples=len(fastqs), chunks=len(tasks), computed=len(computed), reused=len(done) - len(computed),
        pairs=sum(s["pairs"] for s in every), reads=sum(s["reads"] for s in every),
        mapped=sum(s["mapped"] for s in every), properly_paired=sum(s["properly_paired"] for s in every),
        chunk_seconds=[s["seconds"] for s in computed],
        get_bytes=sum(s["get_bytes"] for s in computed), gets=sum(s["gets"] for s in computed),
        seconds=time.monotonic() - t0, retries=sum(s["attempts"] - 1 for s in computed),
    )


# -- the merge -----------------------------------------------------------------------
def merge_parts(store: ObjectStore, parts_manifest: str | Path, out_bam: str, stats_out: str,
                threads: int = 2, level: int = 1, mark_duplicates: bool = False) -> str:
    """Merge a sample's BAM parts into ``out_bam`` (+ ``.bai``) and write its stats report; the report.

    ``mark_duplicates``: the merged BAM goes through ``samtools markdup`` (its parts
    went through ``samtools fixmate -m`` in their functions, each chunk's pairs
    together: the whole ``fixmate -m | sort | markdup``, chunked as the alignment is).
    """
    manifest = AlignmentParts.read(parts_manifest)
    sample = manifest.sample
    fix = "`snakemake --cores 2 --forcerun align` aligns it again (and reuses the intact parts)"
    t0 = time.monotonic()
    folder = os.path.dirname(os.path.abspath(out_bam))
    os.makedirs(folder, exist_ok=True)
    # The parts, then the merged BAM beside them: about twice the parts' bytes at once.
    needed = 2 * sum(int(p.get("size", 0)) for p in manifest.parts) + (1 << 20)
    with (atomic_outputs(stats_out, out_bam + ".bai", out_bam, needed=needed) as (tmp_stats, tmp_bai, tmp_bam),
          tempfile.TemporaryDirectory(prefix=".svc-merge-", dir=folder) as tmp):
        paths = []
        for part in manifest.parts:
            key = part["out_key"] + ".bam"
            try:
                data = store.get(key)
            except ObjectMissingError as exc:
                raise AlignError(f"sample {sample} chunk {part['chunk']}: BAM part {key} is missing; {fix}") from exc
            if hashlib.md5(data).hexdigest() != part["md5"]:
                raise AlignError(f"sample {sample} chunk {part['chunk']}: BAM part {key} is damaged "
                                 f"(md5 mismatch): {fix}")
            path = os.path.join(tmp, f"{part['chunk']:05d}.bam")
            with open(path, "wb") as fh:
                fh.write(data)
            del data
            paths.append(path)
        # Merged under names whose extensions tell samtools the formats (.bai, not .csi).
        bam = os.path.join(tmp, "merged.bam")
        duplicates = None
        if mark_duplicates:
            # Compressed (level 1: read once), so that the parts, then the unmarked BAM
            # beside the marked one, stay within the twice the parts' bytes checked above.
            merged = os.path.join(tmp, "unmarked.bam")
            failed = run_samtools("merge", "--no-PG", "-c", "-p", "-@", str(threads), "-l", "1", "-o", merged, *paths)
            for p in paths:
                os.remove(p)
            paths = []
            stats = os.path.join(tmp, "markdup.txt")
            if failed is None:
                failed = run_samtools("markdup", "--no-PG", "-f", stats, "-T", os.path.join(tmp, "markdup"),
                                      "-@", str(threads), "--output-fmt-option", f"level={level}", "--write-index",
                                      merged, f"{bam}##idx##{bam}.bai")
            if failed is None:
                duplicates = markdup_counts(stats)
        else:
            failed = run_samtools("merge", "--no-PG", "-c", "-p", "-@", str(threads), "-l", str(level),
                                  "--write-index", "-o", f"{bam}##idx##{bam}.bai", *paths)
        if failed is None:
            failed = quickcheck(bam)
        if failed is not None:
            raise AlignError(f"sample {sample}: merging its BAM parts failed ({failed}); {fix}")
        for p in paths:
            os.remove(p)
        os.replace(bam, tmp_bam)
        os.replace(f"{bam}.bai", tmp_bai)
        report = merge_report(manifest, time.monotonic() - t0, duplicates)
        Path(tmp_stats).write_text(report)
    logger.info("merged %d parts of %s into %s (%.1f MB) in %.1f s", len(manifest.parts), sample, out_bam,
                os.path.getsize(out_bam) / 1e6, time.monotonic() - t0)
    return report


def quickcheck(bam: str) -> str | None:
    """``samtools quickcheck``: None if the BAM is whole, else why not.

    samtools quickcheck silences htslib for the whole process (it sets hts_verbose to
    0 and, inside pysam, never restores it): the level is put back, so later errors
    of htslib still reach the messages.
    """
    import pysam

    level = pysam.get_verbosity()
    try:
        return run_samtools("quickcheck", "-v", bam)
    finally:
        pysam.set_verbosity(level)


def markdup_counts(stats: str) -> dict[str, int]:
    """The counts of a ``samtools markdup -f`` stats file ("DUPLICATE TOTAL: 7")."""
    out = {}
    for line in Path(stats).read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            out[key.strip()] = int(value)
    return out


def merge_report(manifest: AlignmentParts, merge_seconds: float, duplicates: dict[str, int] | None = None) -> str:
    parts = manifest.parts
    reads = sum(p["reads"] for p in parts)

    def pct(n: int) -> float:
        return 100.0 * n / reads if reads else 0.0

    secs = [p["seconds"] for p in parts]
    slow = max(parts, key=lambda p: p["seconds"])
    lines = [
        f"# alignment of sample {manifest.sample}: minimap2 (mappy, preset {PRESET}), paired",
        f"# {manifest.code}",
        f"pairs\t{manifest.pairs}",
        f"reads\t{reads}",
        f"mapped_reads\t{sum(p['mapped'] for p in parts)}\t{pct(sum(p['mapped'] for p in parts)):.2f}%",
        f"properly_paired_reads\t{sum(p['properly_paired'] for p in parts)}"
        f"\t{pct(sum(p['properly_paired'] for p in parts)):.2f}%",
        f"supplementary_records\t{sum(p['supplementary'] for p in parts)}",
        f"chunks\t{len(parts)}\t({sum(p['reused'] for p in parts)} reused from an earlier run)",
        f"seconds_per_chunk\tmedian {statistics.median(secs):.2f}\tmax {max(secs):.2f} (chunk {slow['chunk']})",
        f"merge_seconds\t{merge_seconds:.1f}",
    ]
    if duplicates is not None:  # samtools markdup's counts
        dup = duplicates.get("DUPLICATE TOTAL", 0)
        pairs, single = duplicates.get("DUPLICATE PAIR", 0), duplicates.get("DUPLICATE SINGLE", 0)
        lines.insert(-3, f"duplicate_reads\t{dup}\t{pct(dup):.2f}%\t(samtools markdup: {pairs} of pairs, "
                     f"{single} whose mate is unmapped)")
    return "\n".join(lines) + "\n"
