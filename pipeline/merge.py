"""Merge a sample's VCF fragments into one bgzipped, indexed VCF.

Contract: :func:`merge_sample` reads the call manifest, fetches every fragment from
the store and checks it is present and intact (the md5 recorded by the function
that wrote it), that its records lie inside its region and that regions follow each
other without overlap. Only then does it write ``<out>`` (bgzipped VCF with one
header: contigs, source, engine and parameters), its ``.tbi`` and a
``bcftools stats`` report. Outputs are written under temporary names and renamed
at the end, so a failure leaves no partial VCF.
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

from pipeline.stage import read_manifest
from pipeline.storage import ObjectMissingError, ObjectStore

logger = logging.getLogger(__name__)


class MergeError(RuntimeError):
    """A fragment is missing or damaged; no VCF is written."""


def _fragment_body(store: ObjectStore, frag: dict[str, Any], sample: str,
                   rerun: str) -> tuple[list[str], list[str]]:
    key = frag["out_key"] + ".vcf.gz"
    fix = f"`snakemake --cores 2 --forcerun {rerun}` recomputes it (and reuses the intact fragments)"
    try:
        data = store.get(key)
    except ObjectMissingError as exc:
        raise MergeError(f"sample {sample} region {frag['name']}: fragment {key} is missing; {fix}") from exc
    if hashlib.md5(data).hexdigest() != frag["md5"]:
        raise MergeError(
            f"sample {sample} region {frag['name']}: fragment {key} is damaged (md5 mismatch); "
            f"it changed in the store after it was written: {fix}"
        )
    text = gzip.decompress(data).decode()
    header: list[str] = []
    body: list[str] = []
    for line in text.splitlines(keepends=True):
        (header if line.startswith("#") else body).append(line)
    return header, body


def merged_header(first_header: list[str], manifest: dict[str, Any], reference: str) -> list[str]:
    """The fragment header with bcftools' per-run command lines replaced by ours."""
    keep = [
        ln for ln in first_header
        if not ln.startswith(("##bcftools_", "##source=", "##reference="))
    ]
    ours = [
        f"##source={manifest['code']}\n",
        f"##reference=file://{os.path.abspath(reference)}\n",
        f"##svc_engine={manifest['engine']}\n",
        f"##svc_command={manifest['command']}\n",
        f"##svc_regions={len(manifest['fragments'])}\n",
    ]
    return [keep[0], *ours, *keep[1:]]


def merge_sample(
    store: ObjectStore, call_manifest: str | Path, reference: str, out_vcf: str, out_stats: str,
    rerun: str = "call",
) -> int:
    """Merge; returns the number of records written. ``rerun``: the rule that recomputes
    fragments (named in the fix of an error)."""
    manifest = read_manifest(call_manifest)
    sample = manifest["sample"]
    frags = sorted(manifest["fragments"], key=lambda f: f["region"])
    header: list[str] | None = None
    body: list[str] = []
    last: tuple[str, int] | None = None
    for frag in frags:
        fh, fb = _fragment_body(store, frag, sample, rerun)
        header = header or fh
        chrom, span = frag["name"].rsplit(":", 1)
        start, end = (int(x) for x in span.split("-"))
        if last and last[0] == chrom and last[1] >= start:
            raise MergeError(f"sample {sample}: region {frag['name']} overlaps the previous region; re-plan")
        last = (chrom, end)
        for line in fb:
            c, p = line.split("\t", 2)[:2]
            if c != chrom or not start <= int(p) <= end:
                raise MergeError(
                    f"sample {sample}: fragment of {frag['name']} holds a record at {c}:{p} "
                    f"outside its region; rerun with `snakemake --forcerun {rerun}`"
                )
        body.extend(fb)
    if header is None:
        raise MergeError(f"sample {sample}: no fragments to merge; the plan has no regions")
    tmp_vcf = out_vcf + ".part.vcf.gz"
    with pysam.BGZFile(tmp_vcf, "wb") as out:  # type: ignore[call-arg]
        out.write("".join(merged_header(header, manifest, reference)).encode())
        for line in body:
            out.write(line.encode())
    pysam.tabix_index(tmp_vcf, preset="vcf", force=True)
    io = f"# svc merge: {len(frags)} fragments read from object storage in {store.counts.line()}\n"
    stats = io + str(pysam.bcftools.stats(tmp_vcf))
    Path(out_stats + ".tmp").write_text(stats)
    os.replace(out_stats + ".tmp", out_stats)
    os.replace(tmp_vcf + ".tbi", out_vcf + ".tbi")
    os.replace(tmp_vcf, out_vcf)
    logger.info("merged %d fragments of %s: %d records -> %s; read %s",
                len(frags), sample, len(body), out_vcf, store.counts.line())
    return len(body)
