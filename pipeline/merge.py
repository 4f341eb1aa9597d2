"""Merge a sample's VCF fragments into one bgzipped, indexed VCF.

Contract: :func:`merge_sample` reads the call manifest, fetches every fragment from
the store and checks it is present and intact (the md5 recorded by the function
that wrote it), that its records lie inside its region and that regions follow each
other without overlap. Only then does it write ``<out>`` (bgzipped VCF with one
header: contigs, source, engine and parameters), its ``.tbi`` and a
``bcftools stats`` report. Outputs are written under hidden temporary names and
renamed at the end (:mod:`functions.core.atomic`), so a failure, a full disk or a kill
leaves no file that looks like a VCF; the space the VCF needs is checked first.

A missing or damaged fragment raises :class:`FragmentError`: the call manifest no
longer describes what is in the store, and the step that catches it removes that
manifest so that the next plain run of the workflow calls the region again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pysam
import pysam.bcftools
from Bio.bgzf import BgzfWriter

from functions.core.atomic import atomic_outputs
from functions.core.errors import SvcError
from functions.core.storage import ObjectMissingError, ObjectStore
from functions.core.tasks import Span
from functions.engines import make_params, scores_at_merge
from functions.lowfreq import add_noise_tables, finalize
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


def _fragment_body(store: ObjectStore, frag: dict[str, Any], sample: str,
                   rerun: str) -> tuple[list[str], list[str]]:
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
    text = gzip.decompress(data).decode()
    header: list[str] = []
    body: list[str] = []
    for line in text.splitlines(keepends=True):
        (header if line.startswith("#") else body).append(line)
    return header, body


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


def score_candidates(body: list[str], frags: list[dict[str, Any]], manifest: CallResults, sample: str,
                     rerun: str) -> list[str]:
    """The engine's reported records from its fragments' candidates, scored under what
    every region's noise table says of the whole sample (lowfreq: its error spectrum)."""
    if any("noise" not in f for f in frags):
        raise FragmentError(f"sample {sample}: fragments written before the {manifest.engine} engine kept a noise "
                            f"table cannot be scored; `snakemake --cores 2 --forcerun {rerun}` calls them again")
    params = make_params(manifest.engine, manifest.params)
    return finalize(body, add_noise_tables([f["noise"] for f in frags]), params)  # type: ignore[arg-type]


def merged_header(first_header: list[str], manifest: CallResults, reference: str) -> list[str]:
    """The fragment header with bcftools' per-run command lines replaced by ours."""
    keep = [
        ln for ln in first_header
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
    rerun: str = "call",
) -> int:
    """Merge; returns the number of records written. ``rerun``: the rule that recomputes
    fragments (named in the fix of an error)."""
    manifest = CallResults.read(call_manifest)
    sample = manifest.sample
    frags: list[dict[str, Any]] = sorted((dict(f) for f in manifest.fragments), key=lambda f: f["region"])
    header: list[str] | None = None
    body: list[str] = []
    last: Span | None = None
    for frag in frags:
        fh, fb = _fragment_body(store, frag, sample, rerun)
        header = header or fh
        span = Span(frag["chrom"], frag["start"], frag["end"])
        if last and last.chrom == span.chrom and last.end > span.start:
            raise MergeError(f"sample {sample}: region {span.name} overlaps the previous region; re-plan")
        last = span
        for line in fb:
            c, p = line.split("\t", 2)[:2]
            if not span.owns(c, int(p)):
                raise MergeError(
                    f"sample {sample}: fragment of {span.name} holds a record at {c}:{p} "
                    f"outside its region; rerun with `snakemake --forcerun {rerun}`"
                )
        body.extend(fb)
    if header is None:
        raise MergeError(f"sample {sample}: no fragments to merge; the plan has no regions")
    if scores_at_merge(manifest.engine):
        body = score_candidates(body, frags, manifest, sample, rerun)
    # The VCF takes about the fragments' compressed bytes; its index and stats a little more.
    needed = sum(int(f.get("size", 0)) for f in frags) + (256 << 10)
    with atomic_outputs(out_stats, out_vcf + ".tbi", out_vcf, needed=needed) as (tmp_stats, tmp_tbi, tmp_vcf):
        # The file is opened here, by Python, so that an unwritable folder is an OSError
        # (pysam.BGZFile opening a path it cannot write crashes the process).
        with open(tmp_vcf, "wb") as raw, BgzfWriter(fileobj=raw) as out:
            out.write("".join(merged_header(header, manifest, reference)).encode())
            for line in body:
                out.write(line.encode())
        pysam.tabix_index(tmp_vcf, preset="vcf", force=True, index=tmp_tbi)
        io = f"# svc merge: {len(frags)} fragments read from object storage in {store.counts.line()}\n"
        # bcftools names the file it read: the VCF's own name, not its temporary one (MultiQC
        # takes the sample's name from it). Per-sample and PASS-only counts for the report.
        stats = stats_text(tmp_vcf, out_vcf)
        Path(tmp_stats).write_text(io + stats)
    for warning in unusable_reads(manifest):
        logger.warning("warning: %s", warning)
    logger.info("merged %d fragments of %s: %d records -> %s; read %s",
                len(frags), sample, len(body), out_vcf, store.counts.line())
    return len(body)
