"""Check the inputs (BAMs, their indexes, the reference) before any function runs.

Contract: each ``check_*`` function tests one fact about an input and raises
:class:`InputError`, whose message is one line naming the file, the problem and the
fix. They write nothing. Those that take bytes or headers are pure, so one check
serves a local file (read directly) and an object already in storage (read with a
ranged GET). :func:`fasta_contigs` reads a local FASTA once for each contig's name,
length and MD5 (SAM specification, section 1.3: the MD5 of the uppercase sequence
without line breaks), which is what ``@SQ M5`` in a BAM header holds.

Where each check runs: staging checks a BAM's first and last bytes, its sort order
and its index (building a missing one when it can), and the reference's first bytes
(it must be a plain FASTA); planning checks the BAM header against the reference,
sample by sample, and, in per-sample mode, that the BAM holds one sample's reads,
before the call step fans out.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence

from functions.core.bgzf import EOF_BLOCK, inflate
from functions.core.cram import EOF_CONTAINER, cram_version, is_cram
from functions.core.errors import SvcError
from pipeline.manifests import Contig

# Sequence read per fetch while hashing a reference contig: bounds the memory used.
MD5_CHUNK = 8 << 20
# A BGZF block is at most 64 KiB: the first one tells what a file holds.
HEAD_BYTES = 65536
UNSORTED = ("unsorted", "queryname")


class InputError(SvcError, ValueError):
    """An input file cannot be used; the message names it, the problem and the fix."""


def bam_name(sample: str, path: str) -> str:
    return f"{'CRAM' if is_cram(path) else 'BAM'} {path} of sample {sample}"


def sort_fix(path: str) -> str:
    """The commands that make a coordinate-sorted, indexed copy of ``path``."""
    base = os.path.basename(path)
    if is_cram(path):
        out = base[:-5] + ".sorted.cram"
        return (f"sort and index it with `samtools sort -O cram --reference <reference> -o {out} {path} && "
                f"samtools index {out}` and put {out} in the sample sheet")
    out = (base[:-4] if base.endswith(".bam") else base) + ".sorted.bam"
    return (f"sort and index it with `samtools sort -o {out} {path} && samtools index {out}` "
            f"and put {out} in the sample sheet")


# -- what a file holds -------------------------------------------------------------
def sniff(head: bytes) -> str | None:
    """None if ``head`` (a file's first bytes) starts a BAM, else what the file looks like."""
    if not head:
        return "the file is empty"
    if head[:2] == b"\x1f\x8b":
        text = inflate(head, allow_partial=True)
        if text[:4] == b"BAM\x01":
            return None
        if not text and head[:4] == b"\x1f\x8b\x08\x04" and len(head) < HEAD_BYTES:
            return "its first BGZF block is cut short"
        kind = _text_kind(text)
        return f"it is a compressed {kind} file" if kind else "it is gzip-compressed, but not a BAM"
    if head[:4] == b"CRAM":
        return "it is a CRAM file"
    if head[:4] == b"BAI\x01":
        return "it is a BAM index"
    kind = _text_kind(head)
    return f"it looks like a {kind} file" if kind else "it does not start with the BAM magic bytes"


def _text_kind(text: bytes) -> str | None:
    if text[:1] == b">":
        return "FASTA"
    if text[:16] == b"##fileformat=VCF":
        return "VCF"
    if text[:1] == b"@":
        return "SAM" if b"\t" in text.split(b"\n", 1)[0] else "FASTQ"
    return None


def check_bam_start(head: bytes, sample: str, path: str) -> None:
    """``head``: the first bytes (up to :data:`HEAD_BYTES`) of the sample's BAM."""
    kind = sniff(head)
    if kind == "it is a CRAM file":
        raise InputError(f"{bam_name(sample, path)} is not a BAM file ({kind}): name it .cram in the sample sheet, "
                         "with its .crai beside it")
    if kind is not None:
        raise InputError(
            f"{bam_name(sample, path)} is not a BAM file ({kind}): fix its path in the sample sheet "
            "(`samtools view -b` converts SAM or CRAM to BAM)"
        )


def check_eof(tail: bytes, sample: str, path: str) -> None:
    """``tail``: the last bytes of the sample's BAM (28: the BGZF EOF block) or CRAM
    (38: the CRAM 3 EOF container), which must be that end-of-file marker."""
    cram = is_cram(path)
    eof, what = (EOF_CONTAINER, "CRAM end-of-file container") if cram else (EOF_BLOCK, "BGZF end-of-file block")
    if tail != eof:
        raise InputError(
            f"{bam_name(sample, path)} is truncated (it does not end with the {what}): "
            "copy it again from its source, or write it again with samtools"
        )


def check_cram_start(head: bytes, sample: str, path: str) -> None:
    """``head``: the first bytes of the sample's ``.cram``, which must start a CRAM 3.x."""
    version = cram_version(head)
    if version is None:
        kind = sniff(head)
        if kind is None:
            kind = "it is a BAM file"
        raise InputError(f"{bam_name(sample, path)} is not a CRAM file ({kind}): fix its path in the sample sheet")
    if version[0] != 3:
        raise InputError(
            f"{bam_name(sample, path)} is CRAM version {version[0]}.{version[1]}, which is not read (only 3.0 and "
            "3.1): write it again with `samtools view -C --output-fmt-option version=3.0 --reference <reference>`"
        )


def check_sort_order(sort_order: str | None, sample: str, path: str) -> None:
    """A BAM whose header says it is not sorted by coordinate cannot be indexed or sliced."""
    if sort_order in UNSORTED:
        raise InputError(
            f"{bam_name(sample, path)} is not sorted by coordinate (its header says @HD SO:{sort_order}): "
            + sort_fix(path)
        )


def check_reference_start(head: bytes, path: str) -> None:
    """``head``: the first bytes (at least 18) of the reference, which must not be compressed.

    Functions read the reference by byte ranges through its .fai, which only a plain
    FASTA allows: a bgzip-compressed one (its .fai holds offsets into the uncompressed
    text) and a gzip-compressed one are refused, each with the command that decompresses it.
    """
    if head[:2] != b"\x1f\x8b":
        return
    kind, tool = ("bgzip-compressed", "bgzip -d") if is_bgzf(head) else ("gzip-compressed", "gunzip")
    remote = path.startswith("s3://")
    base, ext = os.path.splitext(path)
    plain = base if ext == ".gz" else f"{base}.plain{ext or '.fa'}"
    src, dst = (os.path.basename(path), os.path.basename(plain)) if remote else (path, plain)
    command = f"{tool} -k {src}" if ext == ".gz" else f"{tool} -c {src} > {dst}"
    fix = (f"download it, decompress it with `{command}`, upload {dst} with its .fai (`samtools faidx {dst}`) "
           if remote else f"decompress it with `{command}` ")
    raise InputError(
        f"reference {path} is {kind}, but the functions read the reference by byte ranges through its .fai, "
        f"which needs a plain FASTA: {fix}and set 'reference' in the config to {plain}"
    )


def is_bgzf(head: bytes) -> bool:
    """True if ``head`` starts a BGZF block: gzip with the extra subfield 'BC' (SAM specification, 4.1)."""
    if head[:4] != b"\x1f\x8b\x08\x04" or len(head) < 12:
        return False
    xlen = int.from_bytes(head[10:12], "little")
    extra, pos = head[12 : 12 + xlen], 0
    while pos + 4 <= len(extra):
        slen = int.from_bytes(extra[pos + 2 : pos + 4], "little")
        if extra[pos : pos + 2] == b"BC":
            return True
        pos += 4 + slen
    return False


def check_index_age(index: str, data: str, kind: str, fix: str) -> None:
    """A local index must not be older than its data file (compared in whole seconds, as htslib does).

    ``kind`` names the data file (``BAM``, ``reference``); ``fix`` is the command that rebuilds the index.
    """
    if int(os.path.getmtime(index)) < int(os.path.getmtime(data)):
        raise InputError(
            f"index {index} is older than its {kind} {data} (the {kind} changed after it was indexed): "
            f"rebuild the index with `{fix}`"
        )


# -- the BAM header against the reference --------------------------------------------
def sq_tags(header_text: str, tag: str) -> dict[str, str]:
    """``tag`` (e.g. ``M5``) of each ``@SQ`` line that has it, by contig name."""
    out = {}
    for line in header_text.splitlines():
        if line.startswith("@SQ\t"):
            fields = dict(f.split(":", 1) for f in line.split("\t")[1:] if ":" in f)
            if "SN" in fields and tag in fields:
                out[fields["SN"]] = fields[tag]
    return out


def check_contigs(
    sample: str,
    bam_contigs: Sequence[tuple[str, int]],
    bam_md5: Mapping[str, str],
    reference: str,
    ref_contigs: Sequence[Contig],
    what: str = "BAM",
) -> None:
    """Every contig of the BAM header is in the reference, with the same length and,
    where both sides know it (a contig's ``md5`` may be None), the same MD5."""
    ref = {c.name: c for c in ref_contigs}
    fix = ("use the reference the CRAM was written against" if what == "CRAM"
           else "use the reference the reads were aligned to")
    for name, length in bam_contigs:
        entry = ref.get(name)
        if entry is None:
            names = [c.name for c in ref_contigs]
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise InputError(
                f"contig {name!r} of sample {sample}'s {what} is not in reference {reference} "
                f"(its contigs: {shown}): {fix}"
            )
        if entry.length != length:
            raise InputError(
                f"contig {name!r} is {length:,} bp in sample {sample}'s {what} but {entry.length:,} bp "
                f"in reference {reference}: {fix}"
            )
        m5, md5 = bam_md5.get(name), entry.md5
        if m5 and md5 and m5.lower() != md5.lower():
            raise InputError(
                f"contig {name!r} has MD5 {m5.lower()} in sample {sample}'s {what} header (@SQ M5) but "
                f"{md5} in reference {reference}: {fix}"
            )


def read_group_samples(header_text: str) -> list[str]:
    """The distinct ``SM`` values of the header's ``@RG`` lines, in header order."""
    out: list[str] = []
    for line in header_text.splitlines():
        if line.startswith("@RG\t"):
            for f in line.split("\t")[1:]:
                if f.startswith("SM:") and f[3:] not in out:
                    out.append(f[3:])
    return out


def check_one_sample(header_text: str, sample: str, path: str) -> None:
    """A BAM called on its own holds one sample's reads: its read groups (``@RG``) name
    at most one ``SM`` (several read groups of one sample are fine).

    bcftools gives each SM its own column, so a BAM of several samples would make a
    multi-sample VCF out of what the sample sheet calls one sample.
    """
    names = read_group_samples(header_text)
    if len(names) > 1:
        shown = ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
        raise InputError(
            f"{bam_name(sample, path)} holds reads of {len(names)} samples (its read groups have SM {shown}), "
            "but calling.mode per_sample calls each BAM as one sample: call them together with "
            f"`calling.mode: joint`, or split it with `samtools split {path}` and list each part "
            "in the sample sheet"
        )


# -- the reference -------------------------------------------------------------------
def fasta_contigs(fasta: str) -> list[Contig]:
    """Name, length and MD5 of each contig of an indexed local FASTA, in .fai order."""
    import pysam

    out = []
    with pysam.FastaFile(fasta) as fa:
        for name, length in zip(fa.references, fa.lengths, strict=True):
            md5 = hashlib.md5()
            for start in range(0, length, MD5_CHUNK):
                md5.update(fa.fetch(name, start, min(length, start + MD5_CHUNK)).upper().encode())
            out.append(Contig(name, length, md5.hexdigest()))
    return out
