"""Merge a sample's VCF fragments into one bgzipped, indexed VCF.

Contract: :func:`merge_sample` reads the call manifest, fetches every fragment from
the store and checks it is present and intact (the md5 recorded by the function
that wrote it), that its records lie inside its region and that regions follow each
other without overlap, as it writes ``<out>`` (bgzipped VCF with one header:
contigs, source, engine and parameters) one fragment at a time, so its memory does
not grow with the record count; then its ``.tbi`` and a ``bcftools stats`` report.
Outputs are written under hidden temporary names and renamed only when every fragment
passed (:mod:`functions.core.atomic`), so a bad fragment, a failure, a full disk or a
kill leaves no file that looks like a VCF; the space the VCF needs is checked first.

A missing or damaged fragment raises :class:`FragmentError`: the call manifest no
longer describes what is in the store, and the step that catches it removes that
manifest so that the next plain run of the workflow calls the region again.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import logging
import os
import re
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pysam
import pysam.bcftools

from functions.bcftools_engine import NORM_MARGIN
from functions.core.atomic import atomic_outputs
from functions.core.bgzf import EOF_BLOCK, BgzfError, block_at, deflate_blocks, inflate, inflate_block
from functions.core.errors import SvcError
from functions.core.storage import ObjectMissingError, ObjectStore
from functions.core.tasks import Span
from functions.engines import make_params, scores_at_merge
from functions.lowfreq import add_noise_tables, finalize, null_band, sample_model, threshold_line, with_budget
from functions.worker import peak_rss
from pipeline.forked import forked
from pipeline.manifests import CallResults
from pipeline.report import stats_text

logger = logging.getLogger(__name__)


class MergeError(SvcError, RuntimeError):
    """The fragments cannot be merged; no VCF is written."""


class FragmentError(MergeError):
    """A fragment is missing or damaged: the call manifest must be made again."""


def rerun_fix(rerun: str) -> str:
    """How a user gets a lost fragment computed again: a plain run, once the merge has
    removed the call manifest (the ``call`` rule), or forcing the rule that computes it."""
    if rerun == "call":
        return "run `snakemake --cores 2` again: it recomputes it (and reuses the intact fragments)"
    return f"`snakemake --cores 2 --forcerun {rerun}` recomputes it (and reuses the intact fragments)"


@dataclass
class Fragment:
    """A fragment as the merge uses it: its header lines, and its records either as the
    function's own BGZF blocks (``blocks``, when its records start a block: copied as
    they are, never decompressed whole) or as text (``body``)."""

    header: list[str]
    blocks: bytes | None = None
    first: str = ""  # with blocks: the first and last record lines
    last: str = ""
    body: str = ""


def _fragment(store: ObjectStore, frag: dict[str, Any], sample: str, rerun: str, text: bool) -> Fragment:
    """Fetch a fragment and check its md5 is the one its function recorded; its records
    as text when ``text`` (or when they do not start a BGZF block)."""
    key = frag["out_key"] + ".vcf.gz"
    fix = rerun_fix(rerun)
    try:
        data = store.get(key)
    except ObjectMissingError as exc:
        raise FragmentError(f"sample {sample} region {frag['name']}: fragment {key} is missing; {fix}") from exc
    if hashlib.md5(data).hexdigest() != frag["md5"]:
        raise FragmentError(
            f"sample {sample} region {frag['name']}: fragment {key} is damaged (md5 mismatch); "
            f"it changed in the store after it was written: {fix}"
        )
    try:
        starts = _block_starts(data)
    except BgzfError:  # plain gzip (not written by a function): read as text
        return _split_header(gzip.decompress(data), sample, frag, key, fix)
    head, cut, i = b"", 0, 0
    for i, at in enumerate(starts[:-1]):
        head += inflate_block(data, at, starts[i + 1] - at)
        chrom = head.find(b"\n#CHROM\t")
        cut = head.find(b"\n", chrom + 1) + 1 if chrom >= 0 else 0
        if cut:
            break
    if text or not cut or cut < len(head):
        return _split_header(head + inflate(data[starts[i + 1] :]), sample, frag, key, fix)
    header = head[:cut].decode().splitlines(keepends=True)
    body = starts[i + 1 :]  # block starts of the records, and the end of the data
    blocks = data[body[0] : body[-1]]
    if not blocks:
        return Fragment(header, blocks=b"")
    # The first and last records, from the blocks at each end (a line may span two).
    lead = inflate(data[body[0] : body[min(2, len(body) - 1)]]).decode()
    tail = inflate(data[body[max(0, len(body) - 3)] : body[-1]]).decode()
    return Fragment(header, blocks=blocks, first=lead.split("\n", 1)[0] + "\n",
                    last=tail.rstrip("\n").rsplit("\n", 1)[-1] + "\n")


def _split_header(data: bytes, sample: str, frag: dict[str, Any], key: str, fix: str) -> Fragment:
    text = data.decode()
    at = text.find("\n#CHROM\t")
    if at < 0:
        raise FragmentError(f"sample {sample} region {frag['name']}: fragment {key} has no #CHROM line: it is not "
                            f"a VCF the pipeline wrote; {fix}")
    cut = text.find("\n", at + 1) + 1 or len(text)
    return Fragment(text[:cut].splitlines(keepends=True), body=text[cut:])


def _block_starts(data: bytes) -> list[int]:
    """Where each BGZF block of ``data`` starts, empty (EOF) blocks excluded, then the end
    of the last block that is not empty."""
    starts, at, end = [], 0, 0
    while at < len(data):
        size = block_at(data, at)
        if size is None:
            raise BgzfError(f"BGZF block at byte {at} runs past the end of the data")
        if data[at : at + size] != EOF_BLOCK:
            starts.append(at)
            end = at + size
        at += size
    return [*starts, end]


def _write_bgzf(out: Any, data: bytes) -> None:
    """``data`` as whole BGZF blocks (so that other blocks may follow them as they are)."""
    for block, _ in deflate_blocks(data):
        out.write(block)


def check_owned(body: str, span: Span, sample: str, rerun: str) -> int:
    """The number of records of a fragment's ``body`` (VCF lines, sorted, as the engines
    write them), once every one is seen to lie in ``span``: all on its contig, the first
    and last inside it (whole strings searched, not a loop over lines)."""
    if not body:
        return 0
    n = body.count("\n") + (not body.endswith("\n"))
    prefix = span.chrom + "\t"
    on_contig = body.startswith(prefix) + body.count("\n" + prefix, 0, len(body) - 1)
    last = body.rfind("\n", 0, len(body) - 1) + 1
    first_pos = body[len(prefix) : body.find("\t", len(prefix))]
    last_pos = body[last + len(prefix) : body.find("\t", last + len(prefix))]
    if (on_contig == n and first_pos.isdigit() and last_pos.isdigit()
            and span.owns(span.chrom, int(first_pos)) and span.owns(span.chrom, int(last_pos))):
        return n
    for line in body.splitlines():
        c, p = line.split("\t", 2)[:2]
        if not (p.isdigit() and span.owns(c, int(p))):
            break
    raise MergeError(
        f"sample {sample}: fragment of {span.name} holds a record at {c}:{p} "
        f"outside its region; rerun with `snakemake --forcerun {rerun}`"
    )


def _pos(line: str) -> int:
    return int(line.split("\t", 2)[1])


def check_normalized(lines: list[str], span: Span, sample: str, rerun: str) -> None:
    """A normalised fragment's records lie on its contig, none after its region and none
    :data:`NORM_MARGIN` bases or more before it (left-alignment moves records left)."""
    for line in lines:
        c, p = line.split("\t", 2)[:2]
        if not (c == span.chrom and p.isdigit() and span.start - NORM_MARGIN < int(p) <= span.end):
            raise MergeError(
                f"sample {sample}: normalised fragment of {span.name} holds a record at {c}:{p} "
                f"outside its region and the {NORM_MARGIN} bases before it; rerun with `snakemake --forcerun {rerun}`"
            )


class NormalizedOrder:
    """Sorts the normalised records of consecutive regions while they stream through.

    Left-alignment moves a record at most :data:`NORM_MARGIN` bases before its region,
    so a record of a later region can only go before the records of this contig within
    that many bases of the regions' end so far: those wait (``pending``), the rest are
    written. Records at the same position keep the order of their regions (those of an
    earlier region first), as one whole-genome `bcftools norm` keeps its input's.
    """

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.chrom = ""

    def add(self, lines: list[str], span: Span) -> list[str]:
        """The records ready to write once the region ``span``'s ``lines`` are in."""
        out: list[str] = []
        if span.chrom != self.chrom:
            out, self.pending, self.chrom = self.pending, [], span.chrom
        merged = list(heapq.merge(self.pending, lines, key=_pos))  # stable: pending first on ties
        keep = next((i for i, line in enumerate(merged) if _pos(line) > span.end - NORM_MARGIN), len(merged))
        self.pending = merged[keep:]
        return out + merged[:keep]

    def flush(self) -> list[str]:
        out, self.pending = self.pending, []
        return out


def unusable_reads(manifest: CallResults) -> list[str]:
    """A warning for each sample of a call manifest whose regions held reads of which the
    caller could use none (every one flagged duplicate, secondary, QC-fail or unmapped):
    its VCF is empty for a reason the user must hear. Fragments written before the
    functions counted reads give no warning."""
    frags: list[dict[str, Any]] = [dict(f) for f in manifest.fragments]
    if not frags or any("usable_reads" not in f for f in frags):
        return []
    warnings = []
    for i, name in enumerate(manifest.sample_names):
        total = sum(f["reads"][i] for f in frags)
        if total and not sum(f["usable_reads"][i] for f in frags):
            warnings.append(
                f"sample {name}: none of its {total:,} reads can be used by the caller (every one is flagged "
                "duplicate, secondary, QC-fail or unmapped: the reads bcftools skips), so it has no calls; check "
                "how its BAM was made (duplicate marking run on the wrong data, say)"
            )
    return warnings


def noise_model(frags: list[dict[str, Any]], manifest: CallResults, sample: str, rerun: str) -> Any:
    """What the engine scores candidates with: every region's noise table added up, and
    the sample's error model made from it (lowfreq: its error spectrum)."""
    if any("noise" not in f for f in frags):
        raise FragmentError(f"sample {sample}: fragments written before the {manifest.engine} engine kept a noise "
                            f"table cannot be scored; `snakemake --cores 2 --forcerun {rerun}` calls them again")
    params = make_params(manifest.engine, manifest.params)
    return sample_model(add_noise_tables([f["noise"] for f in frags]), params)  # type: ignore[arg-type]


def sample_threshold(store: ObjectStore, frags: list[dict[str, Any]], model: Any, params: Any, sample: str,
                     rerun: str) -> Any:
    """``model`` with the sample's own QUAL threshold when the engine sets one from an
    expected-false-positive budget (lowfreq ``fp_budget``): it needs every fragment's
    candidates scored first, so this reads them all once before the merge writes."""
    if getattr(params, "fp_budget", None) is None:
        return model
    band = sum(null_band(_fragment(store, frag, sample, rerun, text=True).body.splitlines(keepends=True), model,
                         params) for frag in frags)
    model = with_budget(model, band, params)
    logger.info("sample %s: %s", sample, threshold_line(model, params).strip().removeprefix("##lowfreqThreshold="))
    return model


def peak_rss_mb() -> float:
    """Peak RSS (MB) of this process or any of its forked helpers (index, stats), whichever
    is larger (this process' from /proc: its ``ru_maxrss`` would count the process that
    exec'd it, Snakemake's fork)."""
    return max(peak_rss() or 0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024) / 1e6


CONTIG_LINE = re.compile(r"^##contig=<ID=([^,>]+)(.*)>\s*$")


def with_md5(line: str, md5s: Mapping[str, str]) -> str:
    """A ``##contig`` line with ``md5=`` of the contig's sequence added (VCF 4.2), when
    known and not there."""
    m = CONTIG_LINE.match(line)
    if not m or m.group(1) not in md5s or "md5=" in m.group(2):
        return line
    return f"##contig=<ID={m.group(1)}{m.group(2)},md5={md5s[m.group(1)]}>\n"


def merged_header(first_header: list[str], manifest: CallResults, reference: str,
                  contig_md5: Mapping[str, str] | None = None) -> list[str]:
    """The fragment header with bcftools' per-run command lines replaced by ours, and
    the contigs' MD5s (from the staged reference) in their lines."""
    keep = [
        with_md5(ln, contig_md5 or {}) for ln in first_header
        if not ln.startswith(("##bcftools_", "##source=", "##reference="))
    ]
    ours = [
        f"##source={manifest.code}\n",
        f"##reference=file://{os.path.abspath(reference)}\n",
        f"##svc_engine={manifest.engine}\n",
        f"##svc_command={manifest.command}\n",
        f"##svc_regions={len(manifest.fragments)}\n",
    ]
    return [keep[0], *ours, *keep[1:]]


def merge_sample(
    store: ObjectStore, call_manifest: str | Path, reference: str, out_vcf: str, out_stats: str,
    rerun: str = "call", contig_md5: Mapping[str, str] | None = None,
) -> int:
    """Merge; returns the number of records written. ``rerun``: the rule that recomputes
    fragments (named in the fix of an error)."""
    t0 = time.monotonic()
    manifest = CallResults.read(call_manifest)
    sample = manifest.sample
    frags: list[dict[str, Any]] = sorted((dict(f) for f in manifest.fragments), key=lambda f: f["region"])
    if not frags:
        raise MergeError(f"sample {sample}: no fragments to merge; the plan has no regions")
    params = make_params(manifest.engine, manifest.params)
    model = noise_model(frags, manifest, sample, rerun) if scores_at_merge(manifest.engine) else None
    if model is not None:
        model = sample_threshold(store, frags, model, params, sample, rerun)
    # The VCF takes about the fragments' compressed bytes; its index and stats a little more.
    needed = sum(int(f.get("size", 0)) for f in frags) + (256 << 10)
    records = 0
    order = NormalizedOrder() if manifest.params.get("normalize") else None
    with atomic_outputs(out_stats, out_vcf + ".tbi", out_vcf, needed=needed) as (tmp_stats, tmp_tbi, tmp_vcf):
        # One fragment in memory at a time: the merge's memory does not grow with the
        # record count. A bad fragment further on raises, and atomic_outputs removes what
        # was written. The file is opened here, by Python, so that an unwritable folder is
        # an OSError (pysam.BGZFile opening a path it cannot write crashes the process).
        with open(tmp_vcf, "wb") as out:
            last: Span | None = None
            for frag in frags:
                f = _fragment(store, frag, sample, rerun, text=model is not None or order is not None)
                if last is None:
                    header = merged_header(f.header, manifest, reference, contig_md5)
                    if model is not None and getattr(model, "min_qual", None) is not None:
                        header.insert(len(header) - 1, threshold_line(model, params))  # type: ignore[arg-type]
                    _write_bgzf(out, "".join(header).encode())
                span = Span(frag["chrom"], frag["start"], frag["end"])
                if last and last.chrom == span.chrom and last.end > span.start:
                    raise MergeError(f"sample {sample}: region {span.name} overlaps the previous region; re-plan")
                last = span
                if order is not None:
                    lines = f.body.splitlines(keepends=True)
                    check_normalized(lines, span, sample, rerun)
                    _write_bgzf(out, "".join(order.add(lines, span)).encode())
                    records += len(lines)
                    continue
                if f.blocks is not None:
                    # The function's own blocks, copied: its first and last records are
                    # checked, and it wrote only records its region owns.
                    check_owned(f.first + f.last if f.blocks else "", span, sample, rerun)
                    out.write(f.blocks)
                    records += int(frag["records"])
                    continue
                n = check_owned(f.body, span, sample, rerun)
                body = f.body
                if model is not None and n:
                    lines = finalize(body.splitlines(keepends=True), model, params)  # type: ignore[arg-type]
                    body, n = "".join(lines), len(lines)
                _write_bgzf(out, body.encode())
                records += n
            if order is not None:
                _write_bgzf(out, "".join(order.flush()).encode())
            out.write(EOF_BLOCK)
        indexed = forked(pysam.tabix_index, tmp_vcf, preset="vcf", force=True, index=tmp_tbi)  # beside the stats
        io = f"# svc merge: {len(frags)} fragments read from object storage in {store.counts.line()}\n"
        # bcftools names the file it read: the VCF's own name, not its temporary one (MultiQC
        # takes the sample's name from it). Per-sample and PASS-only counts for the report.
        stats = stats_text(tmp_vcf, out_vcf)
        indexed()
        Path(tmp_stats).write_text(io + stats)
    for warning in unusable_reads(manifest):
        logger.warning("warning: %s", warning)
    secs = time.monotonic() - t0
    logger.info("merged %d fragments of %s: %d records -> %s in %.1f s (%.0f records/s, peak RSS %.0f MB); read %s",
                len(frags), sample, records, out_vcf, secs, records / max(secs, 1e-6), peak_rss_mb(),
                store.counts.line())
    return records
