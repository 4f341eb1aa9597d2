"""Put a sample's BAM + BAI, and the reference FASTA + FAI, into object storage.

Contract: :func:`stage_sample` and :func:`stage_reference` copy (or, with the local
store, link) local files into the store through :class:`pipeline.storage.ObjectStore`,
skipping objects already there with the same size, and write a small JSON manifest
naming each object's key, size and fingerprint. Every later step reads the inputs
from the store only, through these manifests. A missing FASTA index is built first;
a missing BAM index is built when the BAM is coordinate-sorted.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pysam

from pipeline.storage import ObjectMissingError, ObjectStore, split_url

logger = logging.getLogger(__name__)


class StageError(RuntimeError):
    """An input cannot be staged; the message names the file and the fix."""


def _staged(store: ObjectStore, path: str, key: str) -> dict[str, Any]:
    uploaded = store.put_file(key, path)
    info = store.head(key)
    logger.info("%s %s -> %s (%d bytes)", "staged" if uploaded else "already staged", path, key, info.size)
    return {"path": os.path.abspath(path), "bucket": store.bucket, "key": key, "size": info.size,
            "fingerprint": info.fingerprint}


def _in_place(store: ObjectStore, url: str, what: str, fix: str) -> dict[str, Any]:
    """An input already in object storage: used where it is, never copied."""
    if store.backend == "localhost":
        raise StageError(
            f"{what} {url} is in object storage, but the Lithops config uses the local store; "
            "set an S3 storage backend (e.g. config/lithops/ceph.yaml)"
        )
    bucket, key = split_url(url) or ("", "")
    try:
        info = store.head(key, bucket)
    except ObjectMissingError as exc:
        raise StageError(f"{what} {url} not found in object storage; {fix}") from exc
    logger.info("using %s in place (%d bytes)", url, info.size)
    return {"path": url, "bucket": bucket, "key": key, "size": info.size, "fingerprint": info.fingerprint}


def _write(manifest: dict[str, Any], out: str | Path) -> None:
    tmp = f"{out}.tmp"
    Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out)


def stage_sample(store: ObjectStore, sample: str, bam: str, bai: str, out: str | Path) -> dict[str, Any]:
    if split_url(bam):
        fix_bai = f"index it with `samtools index` and upload the .bai beside {bam}"
        manifest = {
            "sample": sample,
            "bam": _in_place(store, bam, "BAM", "fix the path in the sample sheet"),
            "bai": _in_place(store, bam + ".bai", "index of BAM", fix_bai),
        }
    else:
        if not os.path.exists(bam):
            raise StageError(f"BAM {bam} of sample {sample} not found; fix the path in the sample sheet")
        if not os.path.exists(bai):
            raise StageError(f"BAM {bam} is not indexed; create the index with `samtools index {bam}`")
        bam_key = store.key("inputs", sample, os.path.basename(bam))
        manifest = {
            "sample": sample,
            "bam": _staged(store, bam, bam_key),
            "bai": _staged(store, bai, bam_key + ".bai"),
        }
    _write(manifest, out)
    return manifest


def stage_reference(store: ObjectStore, fasta: str, out: str | Path) -> dict[str, Any]:
    if split_url(fasta):
        fix_fai = f"index it with `samtools faidx` and upload the .fai beside {fasta}"
        manifest = {
            "fasta": _in_place(store, fasta, "reference", "fix 'reference' in the config"),
            "fai": _in_place(store, fasta + ".fai", "index of reference", fix_fai),
        }
    else:
        if not os.path.exists(fasta):
            raise StageError(f"reference {fasta} not found; fix 'reference' in the config")
        if not os.path.exists(fasta + ".fai"):
            logger.info("indexing %s", fasta)
            pysam.faidx(fasta)
        key = store.key("reference", os.path.basename(fasta))
        manifest = {"fasta": _staged(store, fasta, key), "fai": _staged(store, fasta + ".fai", key + ".fai")}
    _write(manifest, out)
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))
