"""The manifests: the small JSON files one step leaves for the next, typed.

Contract: every manifest is a frozen dataclass with ``to_dict`` (its JSON layout),
``from_dict``, :meth:`Manifest.write` (atomic: a hidden temporary file renamed into
place, so a reader sees the old manifest or the whole new one) and
:meth:`Manifest.read`, which turns a missing, cut-short or foreign file into one
:class:`ManifestError` line naming the file and the rule that writes it again.

==========================  ==========================================  ===============
manifest                    file (under ``work``)                       written by
==========================  ==========================================  ===============
:class:`StagedSample`       ``staged/<sample>.json``                    stage_sample
:class:`StagedReference`    ``staged/reference.json``                   stage_reference
:class:`StagedIndex`        ``index/minimap2.json``                     index_reference
:class:`StagedFastq`        ``staged/fastq/<sample>.json``              stage_fastq
:class:`CallResults`        ``calls/<callset>.json``                    call
:class:`ScatterShare`       ``scatter/<job>.json``                      call_scatter
:class:`AlignmentParts`     ``aligned/<sample>.json``                   align
==========================  ==========================================  ===============

A staged object is a :class:`StoredFile` (where it came from, its bucket and key, its
size and the fingerprint that names its content in result keys). A fragment or an
alignment part is the stats its function wrote (:data:`FunctionStats`, see
:mod:`functions.worker`) plus what the fan-out adds (``out_key``, ``reused``,
``attempts``...): a mapping, since its fields follow the engine; the fields every
step reads are named in :class:`FunctionStats`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypedDict, TypeVar

from functions.core.atomic import atomic_outputs
from functions.core.errors import SvcError
from functions.core.tasks import ObjectRef
from pipeline.fastq import FastqIndex


class ManifestError(SvcError, ValueError):
    """A manifest is missing, cut short, or not one this version writes."""


class FunctionStats(TypedDict, total=False):
    """The stats of one function's result as the manifests keep them (the fields the
    steps read; a fragment has the engine's own besides)."""

    sample: str
    key: str  # what produced the result (the task's key)
    out_key: str  # where it is: <out_key><suffix> and <out_key>.json
    md5: str
    size: int
    gets: int
    get_bytes: int
    started: float  # epoch seconds, the worker's clock
    seconds: float
    disk_bytes: int  # local disk the function's files took
    peak_rss_bytes: int | None  # the worker's peak RSS during the function (None: unknown)
    versions: dict[str, str]  # what the function ran on (functions.worker.worker_versions)
    # seconds by phase: setup, fetch_bam (or decode_cram), scan, fetch_reference, shift, engine, write, put
    phases: dict[str, float]
    reused: bool  # from an earlier run
    attempts: int
    submitted: float
    failed_attempts: list[dict[str, Any]]
    # a fragment's (see functions.call_region)
    region: int  # the region's index in the plan
    name: str  # the region, chrom:start-end
    chrom: str
    start: int
    end: int
    records: int
    shift: int  # bases the reads moved left for the engine (functions.slice.shift_slice)
    reference_gaps: int  # stretches without reads left out of the reference window
    reads: Any  # a fragment's: per sample of the task; a part's: one count
    usable_reads: list[int]
    bam_gets: int
    bam_get_bytes: int
    noise: dict[str, Any]  # lowfreq's: the region's noise table (functions.lowfreq.noise_table)
    # an alignment part's (see functions.align)
    chunk: int
    pairs: int
    mapped: int
    properly_paired: int
    supplementary: int


M = TypeVar("M", bound="Manifest")


class Manifest:
    """What every manifest shares: atomic writing and checked reading."""

    #: What the manifest is called in an error, and the rule that writes it again.
    KIND: ClassVar[str] = "manifest"
    RULE: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[M], d: Mapping[str, Any]) -> M:
        raise NotImplementedError

    def write(self, path: str | Path, indent: int | None = 1) -> None:
        """Write the manifest to ``path`` atomically."""
        text = json.dumps(self.to_dict(), indent=indent, sort_keys=True) + "\n"
        with atomic_outputs(str(path)) as (tmp,):
            Path(tmp).write_text(text)

    @classmethod
    def read(cls: type[M], path: str | Path) -> M:
        """The manifest in ``path``; a :class:`ManifestError` naming the file and the
        rule that writes it again if it cannot be read as one."""
        fix = f"run `snakemake --cores 2 --forcerun {cls.RULE}` to write it again" if cls.RULE else "write it again"
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ManifestError(f"{cls.KIND} {path} is missing; {fix}") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ManifestError(f"{cls.KIND} {path} cannot be read ({exc}); {fix}") from exc
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ManifestError(f"{cls.KIND} {path} is not one this version writes "
                                f"(it lacks {exc}); {fix}") from exc


@dataclass(frozen=True)
class StoredFile:
    """A staged object: the local file or URL it came from, where it is in the store,
    its size, and the fingerprint that names its content in result keys."""

    path: str
    bucket: str | None  # None: the store's own
    key: str
    size: int
    fingerprint: str

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.key, self.bucket)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "bucket": self.bucket, "key": self.key, "size": self.size,
                "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StoredFile:
        return cls(str(d["path"]), d.get("bucket"), str(d["key"]), int(d["size"]),
                   str(d["fingerprint"]))


@dataclass(frozen=True)
class Contig:
    """A reference contig: name, length, and MD5 of its sequence (None if not computed)."""

    name: str
    length: int
    md5: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "length": self.length, "md5": self.md5}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Contig:
        return cls(str(d["name"]), int(d["length"]), d.get("md5"))


class Staged(Manifest):
    """A manifest of staged objects, which :func:`pipeline.fanout.check_staged` checks."""

    def stored_files(self) -> Iterator[StoredFile]:
        raise NotImplementedError


@dataclass(frozen=True)
class StagedSample(Staged):
    """A sample's BAM and its index in the store; ``csi``: the finer CSI staging built
    for a deep BAM (see :func:`pipeline.stage.fine_index`), which planning then reads
    instead of the BAI (None: none; a manifest without the key has none)."""

    KIND: ClassVar[str] = "staged-sample manifest"
    RULE: ClassVar[str] = "stage_sample"

    sample: str
    bam: StoredFile
    bai: StoredFile
    csi: StoredFile | None = None

    def stored_files(self) -> Iterator[StoredFile]:
        yield from (self.bam, self.bai)
        if self.csi is not None:
            yield self.csi

    def to_dict(self) -> dict[str, Any]:
        return {"sample": self.sample, "bam": self.bam.to_dict(), "bai": self.bai.to_dict(),
                **({"csi": self.csi.to_dict()} if self.csi is not None else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StagedSample:
        csi = d.get("csi")
        return cls(str(d["sample"]), StoredFile.from_dict(d["bam"]), StoredFile.from_dict(d["bai"]),
                   StoredFile.from_dict(csi) if csi is not None else None)


@dataclass(frozen=True)
class StagedReference(Staged):
    """The reference FASTA and its ``.fai`` in the store, and its contigs."""

    KIND: ClassVar[str] = "staged-reference manifest"
    RULE: ClassVar[str] = "stage_reference"

    fasta: StoredFile
    fai: StoredFile
    contigs: tuple[Contig, ...]

    def stored_files(self) -> Iterator[StoredFile]:
        yield from (self.fasta, self.fai)

    def to_dict(self) -> dict[str, Any]:
        return {"fasta": self.fasta.to_dict(), "fai": self.fai.to_dict(),
                "contigs": [c.to_dict() for c in self.contigs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StagedReference:
        return cls(StoredFile.from_dict(d["fasta"]), StoredFile.from_dict(d["fai"]),
                   tuple(Contig.from_dict(c) for c in d["contigs"]))


@dataclass(frozen=True)
class StagedIndex(Staged):
    """The minimap2 index in the store, and what it was built from."""

    KIND: ClassVar[str] = "minimap2-index manifest"
    RULE: ClassVar[str] = "index_reference"

    index: StoredFile
    reference: str
    fingerprint: str  # the reference's size and mtime when the index was built
    preset: str
    mappy: str

    def stored_files(self) -> Iterator[StoredFile]:
        yield self.index

    def source(self) -> dict[str, str]:
        """What the index was built from (kept beside the local index as its stamp)."""
        return {"reference": self.reference, "fingerprint": self.fingerprint, "preset": self.preset,
                "mappy": self.mappy}

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index.to_dict(), **self.source()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StagedIndex:
        return cls(StoredFile.from_dict(d["index"]), str(d["reference"]), str(d["fingerprint"]),
                   str(d["preset"]), str(d["mappy"]))


@dataclass(frozen=True)
class StagedFastq(Staged):
    """A sample's FASTQ pair, cut into chunks: the BGZF copies in the store and their index."""

    KIND: ClassVar[str] = "staged-FASTQ manifest"
    RULE: ClassVar[str] = "stage_fastq"

    sample: str
    source: tuple[str, str]
    chunk_pairs: int
    fastq_1: StoredFile
    fastq_2: StoredFile
    index: FastqIndex

    def stored_files(self) -> Iterator[StoredFile]:
        yield from (self.fastq_1, self.fastq_2)

    def to_dict(self) -> dict[str, Any]:
        return {"sample": self.sample, "source": list(self.source), "chunk_pairs": self.chunk_pairs,
                "fastq_1": self.fastq_1.to_dict(), "fastq_2": self.fastq_2.to_dict(),
                "index": self.index.as_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StagedFastq:
        src = d["source"]
        return cls(str(d["sample"]), (str(src[0]), str(src[1])), int(d["chunk_pairs"]),
                   StoredFile.from_dict(d["fastq_1"]), StoredFile.from_dict(d["fastq_2"]),
                   FastqIndex.from_dict(d["index"]))


def _stats_list(items: Any) -> tuple[FunctionStats, ...]:
    if not isinstance(items, list) or not all(isinstance(f, dict) and "out_key" in f for f in items):
        raise ValueError("a list of function stats with their 'out_key'")
    return tuple(FunctionStats(**f) for f in items)  # type: ignore[typeddict-item]


@dataclass(frozen=True)
class CallResults(Manifest):
    """A callset's fragments: the stats of each region's function, in the plan's order,
    with the engine, its parameters and command. ``samples``: the samples of a joint
    call (None for a single-sample callset, whose one sample is ``sample``).
    ``functions``: how many functions the run's map used for the regions it computed
    (small regions share one, :func:`pipeline.call.pack_tasks`); None when unknown (the
    map served several callsets, or scatter jobs ran it)."""

    KIND: ClassVar[str] = "call manifest"
    RULE: ClassVar[str] = "call"

    sample: str
    code: str
    engine: str
    params: dict[str, Any]
    command: str
    retries: int
    fragments: tuple[FunctionStats, ...]
    samples: tuple[str, ...] | None = None
    functions: int | None = None

    @property
    def sample_names(self) -> tuple[str, ...]:
        """The samples whose columns the callset's VCF has, in order."""
        return self.samples or (self.sample,)

    def to_dict(self) -> dict[str, Any]:
        return {"sample": self.sample, "code": self.code, "engine": self.engine, "params": self.params,
                "command": self.command, **({"samples": list(self.samples)} if self.samples else {}),
                "retries": self.retries, "fragments": [dict(f) for f in self.fragments],
                **({"functions": self.functions} if self.functions is not None else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CallResults:
        samples, functions = d.get("samples"), d.get("functions")
        return cls(str(d["sample"]), str(d["code"]), str(d["engine"]), dict(d["params"]), str(d["command"]),
                   int(d["retries"]), _stats_list(d["fragments"]),
                   tuple(str(s) for s in samples) if samples else None,
                   int(functions) if functions is not None else None)


@dataclass(frozen=True)
class ScatterShare(Manifest):
    """What one scatter job (a Snakemake job, e.g. on SLURM) computed: the stats of its
    fragments by ``out_key``, and where and how long it ran."""

    KIND: ClassVar[str] = "scatter-job manifest"
    RULE: ClassVar[str] = "call_scatter"

    job: int
    jobs: int
    host: str
    slurm_job_id: str | None
    seconds: float
    fragments: dict[str, FunctionStats]

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "jobs": self.jobs, "host": self.host, "slurm_job_id": self.slurm_job_id,
                "seconds": self.seconds, "fragments": {k: dict(v) for k, v in self.fragments.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScatterShare:
        frags = d["fragments"]
        if not isinstance(frags, dict):
            raise ValueError("its fragments by out_key")
        return cls(int(d["job"]), int(d["jobs"]), str(d["host"]), d.get("slurm_job_id"), float(d["seconds"]),
                   {str(k): FunctionStats(**v) for k, v in frags.items()})  # type: ignore[typeddict-item]


@dataclass(frozen=True)
class AlignmentParts(Manifest):
    """A sample's aligned BAM parts: the stats of each chunk's function, in chunk order."""

    KIND: ClassVar[str] = "alignment manifest"
    RULE: ClassVar[str] = "align"

    sample: str
    code: str
    params: dict[str, Any]
    pairs: int
    parts: tuple[FunctionStats, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"sample": self.sample, "code": self.code, "params": self.params, "pairs": self.pairs,
                "parts": [dict(p) for p in self.parts]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlignmentParts:
        return cls(str(d["sample"]), str(d["code"]), dict(d["params"]), int(d["pairs"]), _stats_list(d["parts"]))

