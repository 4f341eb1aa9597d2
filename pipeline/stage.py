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

from pipeline.storage import ObjectStore

logger = logging.getLogger(__name__)


class StageError(RuntimeError):
    """An input cannot be staged; the message names the file and the fix."""


def _staged(store: ObjectStore, path: str, key: str) -> dict[str, Any]:
    uploaded = store.put_file(key, path)
    info = store.head(key)
    logger.info("%s %s -> %s (%d bytes)", "staged" if uploaded else "already staged", path, key, info.size)
    return {"path": os.path.abspath(path), "key": key, "size": info.size, "fingerprint": info.fingerprint}


def _write(manifest: dict[str, Any], out: str | Path) -> None:
    tmp = f"{out}.tmp"
    Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out)


def stage_sample(store: ObjectStore, sample: str, bam: str, bai: str, out: str | Path) -> dict[str, Any]:
    if not os.path.exists(bam):
        raise StageError(f"BAM {bam} of sample {sample} not found; fix the path in the sample sheet")
    if not os.path.exists(bai):
        raise StageError(f"BAM {bam} is not indexed; create the index with `samtools index {bam}`")
    base = os.path.basename(bam)
    bam_key = store.key("inputs", sample, base)
    manifest = {
        "sample": sample,
        "bam": _staged(store, bam, bam_key),
        "bai": _staged(store, bai, bam_key + ".bai"),
    }
    _write(manifest, out)
    return manifest


def stage_reference(store: ObjectStore, fasta: str, out: str | Path) -> dict[str, Any]:
    if not os.path.exists(fasta):
        raise StageError(f"reference {fasta} not found; fix 'reference' in the config")
    fai = fasta + ".fai"
    if not os.path.exists(fai):
        logger.info("indexing %s", fasta)
        pysam.faidx(fasta)
    key = store.key("reference", os.path.basename(fasta))
    manifest = {"fasta": _staged(store, fasta, key), "fai": _staged(store, fai, key + ".fai")}
    _write(manifest, out)
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))
