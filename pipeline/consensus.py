"""Consensus genomes: a sample's majority sequence, from its VCF and its depth track.

Contract: :func:`write_consensus` writes ``results/<sample>.consensus.fa`` from the
merged lowfreq VCF, the reference and the sample's depth track (the informative depth
of every position, which each region's function keeps in its stats:
:func:`depth_track` joins them). For every contig:

* a position with fewer than ``min_depth`` informative reads is ``N``;
* else the base is the allele whose frequency reaches ``min_af``: a PASS SNV (or MNP)
  with ``AF >= min_af``, or the reference base when the SNVs and the deletions over
  the position leave it that share (1 minus their AFs). Where no base reaches it,
  ``ambiguity: iupac`` writes the IUPAC code of the fewest alleles that together reach
  ``min_af``, most frequent first (ties in base order), as ``ivar consensus`` does (N
  when they include a deletion: a gap has no code); ``ambiguity: N`` writes N;
* a PASS insertion or deletion with ``AF >= min_af`` is applied (an insertion only
  after a position that is not N).

Every input is per position and the same for any plan (the VCF and the depth track
equal a whole-genome run's), so the consensus is the same whatever the region cuts.
The FASTA names each sequence ``<sample>`` (one contig) or ``<sample>|<contig>``, in
the reference's contig order, 60 bases per line.
"""

from __future__ import annotations

import base64
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pysam

from functions.core.atomic import atomic_outputs
from functions.core.errors import SvcError

# IUPAC codes of base sets.
IUPAC = {
    frozenset("A"): "A", frozenset("C"): "C", frozenset("G"): "G", frozenset("T"): "T",
    frozenset("AG"): "R", frozenset("CT"): "Y", frozenset("CG"): "S", frozenset("AT"): "W",
    frozenset("GT"): "K", frozenset("AC"): "M", frozenset("CGT"): "B", frozenset("AGT"): "D",
    frozenset("ACT"): "H", frozenset("ACG"): "V", frozenset("ACGT"): "N",
}
LINE = 60


class ConsensusError(SvcError, ValueError):
    """The consensus cannot be made from what the run left."""


@dataclass(frozen=True)
class ConsensusSettings:
    min_af: float = 0.75
    min_depth: int = 10
    ambiguity: str = "iupac"  # or "N"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConsensusSettings:
        return cls(float(d["min_af"]), int(d["min_depth"]), str(d["ambiguity"]))


def decode_depth(stats: Mapping[str, Any]) -> tuple[str, int, np.ndarray]:
    """(contig, start, depth of each position from start) of one region's stats."""
    d = stats["depth"]
    depth = np.frombuffer(zlib.decompress(base64.b64decode(d["zlib_u32"])), dtype="<u4")
    if len(depth) != d["end"] - d["start"]:
        raise ConsensusError(f"the depth track of region {stats.get('name')} has {len(depth)} positions, "
                             f"not {d['end'] - d['start']}; rerun its calls")
    return str(stats["chrom"]), int(d["start"]), depth


def depth_track(fragments: Iterable[Mapping[str, Any]], contigs: Mapping[str, int]) -> dict[str, np.ndarray]:
    """The informative depth of every position of every contig (0 where no region lies)."""
    track = {name: np.zeros(length, dtype=np.int64) for name, length in contigs.items()}
    for frag in fragments:
        if "depth" not in frag:
            raise ConsensusError(f"region {frag.get('name')} has no depth track (fragment made by an older "
                                 "version): run `snakemake --cores 2 --forcerun call` to make it again")
        chrom, start, depth = decode_depth(frag)
        track[chrom][start : start + len(depth)] = depth
    return track


def _majority(ref: str, snvs: list[tuple[str, float]], gap: float, settings: ConsensusSettings) -> str:
    """The consensus base at a position with SNV alleles ``snvs`` (alt base, AF) and
    deletions over it of total frequency ``gap`` (a gap is no base: a code that would
    need it is N, as in ``ivar consensus``)."""
    freq: dict[str, float] = defaultdict(float)
    for alt, af in snvs:
        freq[alt] += af
    if gap > 0:
        freq["-"] = gap
    freq[ref] += max(0.0, 1.0 - sum(af for _, af in snvs) - gap)
    ranked = sorted(freq.items(), key=lambda kv: (-kv[1], "ACGT-".find(kv[0])))
    if ranked[0][1] >= settings.min_af:
        return ranked[0][0]
    if settings.ambiguity == "N":
        return "N"
    chosen, total = set(), 0.0
    for base, f in ranked:
        chosen.add(base)
        total += f
        if total >= settings.min_af:
            break
    return IUPAC.get(frozenset(chosen), "N")  # a set with the gap has no code: N


def contig_consensus(ref: str, records: list[tuple[int, str, str, float]], depth: np.ndarray,
                     settings: ConsensusSettings) -> str:
    """The consensus of one contig: ``ref`` its sequence, ``records`` its PASS alleles
    (0-based POS, REF, ALT, AF), ``depth`` its depth track."""
    seq = list(ref.upper())
    snvs: dict[int, list[tuple[str, float]]] = defaultdict(list)
    gaps: dict[int, float] = defaultdict(float)
    indels = []
    for pos, r, a, af in records:
        if len(r) == len(a) == 1:
            snvs[pos].append((a, af))
        elif len(r) == len(a):  # an MNP: each base in turn
            for i, (rb, ab) in enumerate(zip(r, a, strict=True)):
                if rb != ab:
                    snvs[pos + i].append((ab, af))
        else:
            for p in range(pos + len(a), pos + len(r)):  # the bases a deletion removes
                gaps[p] += af
            if af >= settings.min_af:
                indels.append((pos, r, a))
    for pos in set(snvs) | set(gaps):
        seq[pos] = _majority(seq[pos], snvs.get(pos, []), gaps.get(pos, 0.0), settings)
    low = np.flatnonzero(depth < settings.min_depth)
    for pos in low.tolist():
        seq[pos] = "N"
    # Indels, right to left so that earlier positions keep their index.
    for pos, r, a in sorted(indels, reverse=True):
        if len(r) > len(a):  # deletion of ref[pos+1 : pos+len(r)]
            del seq[pos + len(a) : pos + len(r)]
        elif seq[pos] != "N":  # insertion after pos
            seq[pos + 1 : pos + 1] = list(a[1:])
    return "".join(seq)


def read_pass_records(vcf: str) -> dict[str, list[tuple[int, str, str, float]]]:
    """The PASS records of a single-sample lowfreq VCF by contig: (0-based POS, REF, ALT, AF)."""
    out: dict[str, list[tuple[int, str, str, float]]] = defaultdict(list)
    with pysam.VariantFile(vcf) as fh:
        for rec in fh:
            if list(rec.filter.keys()) not in ([], ["PASS"]):
                continue
            afs = rec.info.get("AF")
            if afs is None:
                raise ConsensusError(f"{vcf}: record {rec.chrom}:{rec.pos} has no INFO/AF; a consensus needs the "
                                     "lowfreq engine's VCF")
            for alt, af in zip(rec.alts or (), afs if isinstance(afs, tuple) else (afs,), strict=True):
                out[rec.chrom].append((rec.pos - 1, str(rec.ref), alt, float(af)))
    return out


def consensus_fasta(sample: str, reference: str, vcf: str, fragments: Iterable[Mapping[str, Any]],
                    settings: ConsensusSettings) -> str:
    """The consensus FASTA text of ``sample`` (see the module's contract)."""
    with pysam.FastaFile(reference) as fa:
        contigs = dict(zip(fa.references, fa.lengths, strict=True))
        track = depth_track(fragments, contigs)
        records = read_pass_records(vcf)
        out = []
        for name in contigs:
            seq = contig_consensus(fa.fetch(name), records.get(name, []), track[name], settings)
            out.append(f">{sample}" + (f"|{name}" if len(contigs) > 1 else "") + "\n")
            out.extend(seq[i : i + LINE] + "\n" for i in range(0, len(seq), LINE))
    return "".join(out)


def write_consensus(sample: str, reference: str, vcf: str, fragments: Iterable[Mapping[str, Any]],
                    settings: ConsensusSettings, out: str | Path) -> str:
    """Write :func:`consensus_fasta` to ``out`` atomically; the text."""
    text = consensus_fasta(sample, reference, vcf, fragments, settings)
    with atomic_outputs(str(out)) as (tmp,):
        Path(tmp).write_text(text)
    return text
