"""What a function is asked to do, typed: spans, BAM slices, region and chunk tasks.

Contract: a :class:`Span` is positions [start, end) of a contig (0-based, half-open)
and stays integers from the plan to the merge: nothing parses a region back from a
string. :meth:`Span.owns` is the one test of whether a VCF record belongs to a region
(its 1-based POS lies in the span), used by the function that keeps its records and
by the merge that checks them. :meth:`Span.htslib` is the region string htslib tools
are given, made in this one place.

:class:`RegionTask` (a calling function's work: the store, one BAM slice per sample,
the reference's ``.fai`` entry, the region, the engine and its parameters, the
fragment's key) and :class:`ChunkTask` (an alignment function's: the index, the two
FASTQ objects, the chunk's byte ranges, the BAM header, the read group) are frozen
dataclasses that travel to the workers as plain dicts (:meth:`to_dict` /
:meth:`from_dict`), since Lithops pickles arguments by value and a dict reads well in
a log. ``faults`` (tests only) rides along outside the key; see :mod:`functions.faults`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from functions.core.fai import FaiEntry


def region_name(chrom: str, start: int, end: int) -> str:
    """A region as people and htslib write it, 1-based and closed: ``chrom:start-end``,
    or ``{chrom}:start-end`` when the name itself holds a ``:`` (``HLA-A*01:01:01:01``)."""
    return f"{{{chrom}}}:{start + 1}-{end}" if ":" in chrom else f"{chrom}:{start + 1}-{end}"


@dataclass(frozen=True)
class Span:
    """Positions [start, end) of ``chrom``, 0-based and half-open."""

    chrom: str
    start: int
    end: int

    @property
    def name(self) -> str:
        """How logs, plans and errors show the span (:func:`region_name`)."""
        return region_name(self.chrom, self.start, self.end)

    def owns(self, chrom: str, pos: int) -> bool:
        """Does a VCF record at 1-based ``pos`` of ``chrom`` belong to this span?"""
        return chrom == self.chrom and self.start < pos <= self.end

    def __repr__(self) -> str:
        return f"Span({self.name})"


@dataclass(frozen=True)
class ObjectRef:
    """An object in the store: its key, and its bucket when not the store's own."""

    key: str
    bucket: str | None = None


# Bytes added to the first GET of a BAM slice's scan (:attr:`BamSlice.scan`) beyond
# the plan's estimate: the block holding the first record not needed is fetched
# whole, and BAM blocks hold 10-25 kB.
SCAN_SLACK = 8192


@dataclass(frozen=True)
class BamSlice:
    """What a function fetches of one BAM for one region: the header's byte range, the
    contig's id, the index chunks (virtual offsets) and the compressed byte ranges
    (``(start, end, tail)``: ``tail`` asks for the BGZF block starting at ``end`` too).

    ``scan``: ``(voffset, guess)``, or None. The index cannot say where the reads
    starting before the region's context end stop, closer than its window (16 kb for a
    BAI): the ranges end at ``voffset``'s block, and the function reads on from
    ``voffset`` only as far as those reads go, asking first for ``guess`` bytes
    (:func:`functions.slice.fetch_bam_slice`).

    ``cram``: the object is a CRAM; the header range is its file definition and header
    container, the ranges are whole containers and there are no chunks or scan
    (:func:`functions.slice.fetch_cram_slice`)."""

    obj: ObjectRef
    size: int
    n_ref: int
    header: tuple[int, int]
    tid: int
    chunks: tuple[tuple[int, int], ...]
    ranges: tuple[tuple[int, int, bool], ...]
    scan: tuple[int, int] | None = None
    cram: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.obj.bucket, "key": self.obj.key, "size": self.size, "n_ref": self.n_ref,
                "header": list(self.header), "tid": self.tid, "chunks": [list(c) for c in self.chunks],
                "ranges": [list(r) for r in self.ranges], "scan": list(self.scan) if self.scan else None,
                **({"cram": True} if self.cram else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BamSlice:
        return cls(ObjectRef(d["key"], d.get("bucket")), d["size"], d["n_ref"], (d["header"][0], d["header"][1]),
                   d["tid"], tuple((b, e) for b, e in d["chunks"]),
                   tuple((s, e, bool(t)) for s, e, t in d["ranges"]),
                   (d["scan"][0], d["scan"][1]) if d.get("scan") else None, bool(d.get("cram", False)))


@dataclass(frozen=True)
class RegionTask:
    """One calling function's work: call ``region`` (piling up reads over ``context``) of
    one sample, or of every sample of a joint call, and write ``<out_key>.vcf.gz``."""

    sample: str  # the sample, or the cohort of a joint call: where the fragment is filed
    store: dict[str, Any]  # ObjectStore.describe(): bucket and prefix, no credentials
    bams: tuple[BamSlice, ...]
    reference: ObjectRef
    fai: FaiEntry
    index: int  # the region's place in the plan
    region: Span
    context: Span  # the region widened by the plan's padding
    est_bytes: int
    engine: str
    params: dict[str, Any]
    key: str
    out_key: str
    faults: dict[str, Any] | None = field(default=None, compare=False)
    # The primer scheme's primers on the region's contig (rows of PrimerScheme.to_rows), if any.
    primers: tuple[tuple[Any, ...], ...] | None = None
    # calling.targets minus calling.exclude within the region ([start, end), sorted), if set:
    # only records whose POS lies in them are kept.
    targets: tuple[tuple[int, int], ...] | None = None

    @property
    def label(self) -> str:
        """How errors and logs name the task: the sample and the region."""
        return f"{self.sample} {self.region.name}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "sample": self.sample, "store": self.store, "bams": [b.to_dict() for b in self.bams],
            "reference": {"key": self.reference.key, "bucket": self.reference.bucket, "fai": asdict(self.fai)},
            "region": {"index": self.index, "name": self.region.name, "chrom": self.region.chrom,
                       "start": self.region.start, "end": self.region.end,
                       "context_start": self.context.start, "context_end": self.context.end,
                       "est_bytes": self.est_bytes},
            "engine": self.engine, "params": self.params, "key": self.key, "out_key": self.out_key,
            "label": self.label,
        }
        if self.faults:
            d["faults"] = self.faults
        if self.primers is not None:
            d["primers"] = [list(p) for p in self.primers]
        if self.targets is not None:
            d["targets"] = [list(t) for t in self.targets]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegionTask:
        r, ref = d["region"], d["reference"]
        return cls(
            sample=d["sample"], store=d["store"], bams=tuple(BamSlice.from_dict(b) for b in d["bams"]),
            reference=ObjectRef(ref["key"], ref.get("bucket")), fai=FaiEntry(**ref["fai"]), index=r["index"],
            region=Span(r["chrom"], r["start"], r["end"]),
            context=Span(r["chrom"], r["context_start"], r["context_end"]), est_bytes=r["est_bytes"],
            engine=d["engine"], params=d["params"], key=d["key"], out_key=d["out_key"], faults=d.get("faults"),
            primers=tuple(tuple(p) for p in d["primers"]) if d.get("primers") is not None else None,
            targets=tuple((int(a), int(b)) for a, b in d["targets"]) if d.get("targets") is not None else None,
        )


@dataclass(frozen=True)
class IndexRef:
    """The minimap2 index in the store, as the alignment functions load it."""

    obj: ObjectRef
    size: int
    fingerprint: str


@dataclass(frozen=True)
class ChunkTask:
    """One alignment function's work: map one chunk of a sample's read pairs and write
    the sorted ``<out_key>.bam``."""

    sample: str
    store: dict[str, Any]
    index: IndexRef
    fastq_1: ObjectRef
    fastq_2: ObjectRef
    chunk: dict[str, Any]  # the staging index's entry: index, pairs, r1 and r2 byte ranges
    header: str  # the BAM header text of the part
    read_group: str
    params: dict[str, Any]
    key: str
    out_key: str
    faults: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def label(self) -> str:
        return f"{self.sample} chunk {self.chunk['index']}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "sample": self.sample, "label": self.label, "store": self.store,
            "index": {"key": self.index.obj.key, "bucket": self.index.obj.bucket, "size": self.index.size,
                      "fingerprint": self.index.fingerprint},
            "fastq_1": {"key": self.fastq_1.key, "bucket": self.fastq_1.bucket},
            "fastq_2": {"key": self.fastq_2.key, "bucket": self.fastq_2.bucket},
            "chunk": self.chunk, "header": self.header, "read_group": self.read_group, "params": self.params,
            "key": self.key, "out_key": self.out_key,
        }
        if self.faults:
            d["faults"] = self.faults
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChunkTask:
        ix = d["index"]
        return cls(
            sample=d["sample"], store=d["store"],
            index=IndexRef(ObjectRef(ix["key"], ix.get("bucket")), ix["size"], ix["fingerprint"]),
            fastq_1=ObjectRef(d["fastq_1"]["key"], d["fastq_1"].get("bucket")),
            fastq_2=ObjectRef(d["fastq_2"]["key"], d["fastq_2"].get("bucket")),
            chunk=d["chunk"], header=d["header"], read_group=d["read_group"], params=d["params"],
            key=d["key"], out_key=d["out_key"], faults=d.get("faults"),
        )
