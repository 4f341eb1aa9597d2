"""Consensus genomes (pipeline/consensus.py).

* the rules, on hand-made records: majority base at >= min_af, IUPAC codes of the
  fewest bases that reach it (as ``ivar consensus``), N below min_depth, indels applied;
* the same consensus whatever the plan: 1, 4 and 17 regions on the viral mixture give
  the same FASTA, equal to the one built from a whole-genome run of the engine;
* against ``ivar consensus`` (samtools mpileup | ivar consensus -t 0.75 -m 10) on the
  same mixture: the same sequence but for the first and last 5 bases of the genome
  (only read ends cover them, and lowfreq never counts the ``end_skip`` bases at a
  read's ends) and the N that ivar inserts for an insertion below the threshold.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pysam
import pytest
from helpers import run_core, serial

from functions.lowfreq import LowfreqParams, run_lowfreq
from functions.pileup import Evidence
from pipeline.consensus import ConsensusSettings, consensus_fasta, contig_consensus
from pipeline.manifests import CallResults

S = ConsensusSettings(min_af=0.75, min_depth=10, ambiguity="iupac")


def test_majority_iupac_n_and_indels() -> None:
    ref = "ACGTACGTACGTACGTACGT"
    depth = np.full(len(ref), 100)
    depth[18:] = 3  # the last two positions are too shallow
    records = [
        (1, "C", "T", 0.9),  # majority alt
        (2, "G", "A", 0.5),  # A/G: R
        (3, "T", "C", 0.6), (3, "T", "G", 0.3),  # C 0.6 + G 0.3 reach 0.75: S
        (5, "C", "A", 0.2),  # ref keeps 0.8: C
        (8, "ACG", "A", 0.8),  # deletion of CG at 9-10
        (12, "A", "ATT", 0.9),  # insertion of TT after 12
        (14, "G", "GAA", 0.5),  # below min_af: not applied
        (15, "T", "TCC", 0.9),  # after position 15 (depth 100): applied
    ]
    got = contig_consensus(ref, records, depth, S)
    want = "ATRSACGTA" + "" + "TA" + "TT" + "CGT" + "CC" + "AC" + "NN"  # "" where C, G were deleted
    assert got == want
    assert contig_consensus(ref, records, depth, ConsensusSettings(0.75, 10, "N"))[2:4] == "NN"
    # An insertion after an N position is not applied.
    assert contig_consensus("ACGT", [(1, "C", "CAA", 1.0)], np.array([100, 0, 100, 100]), S) == "ANGT"


@pytest.fixture(scope="module")
def mixture(viral_mixture: Path) -> Path:
    return viral_mixture


def _plan_consensus(store, mixture: Path, work: Path, n: int) -> str:  # type: ignore[no-untyped-def]
    vcf, _, _ = run_core(store, "mixture", work, serial(store), n, params=LowfreqParams(),
                         bam=mixture / "mixture.bam", reference=mixture / "virus.fa")
    frags = CallResults.read(work / "mixture.calls.json").fragments
    return consensus_fasta("mixture", str(mixture / "virus.fa"), vcf, frags, S)


def _whole_consensus(mixture: Path, work: Path) -> str:
    """The consensus from one whole-genome run of the engine and its evidence's depth."""
    depth: dict[str, np.ndarray] = {}

    def keep(ev: Evidence) -> None:
        depth[ev.chrom] = ev.counts.sum(axis=(1, 2))

    raw = str(work / "whole.vcf")
    run_lowfreq(str(mixture / "mixture.bam"), str(mixture / "virus.fa"), LowfreqParams(), raw, on_evidence=keep)
    pysam.tabix_compress(raw, raw + ".gz", force=True)
    from pipeline.consensus import read_pass_records

    records = read_pass_records(raw + ".gz")
    with pysam.FastaFile(str(mixture / "virus.fa")) as fa:
        (name,) = fa.references
        seq = contig_consensus(fa.fetch(name), records.get(name, []), depth[name], S)
    return ">mixture\n" + "".join(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))


def test_consensus_is_the_same_whatever_the_plan(store, mixture: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    whole = _whole_consensus(mixture, tmp_path)
    assert whole.count("R") + whole.count("Y") + whole.count("S") + whole.count("W") + whole.count("K") \
        + whole.count("M") >= 1, "the mixture has 50 % alleles: some IUPAC codes"
    for n in (1, 4, 17):
        assert _plan_consensus(store, mixture, tmp_path / f"n{n}", n) == whole, n


@pytest.mark.skipif(shutil.which("ivar") is None, reason="ivar not installed (tests/install.sh installs it)")
def test_consensus_agrees_with_ivar_consensus(mixture: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    ours = "".join(_whole_consensus(mixture, tmp_path).splitlines()[1:])
    pileup = subprocess.run(["samtools", "mpileup", "-aa", "-A", "-d", "0", "-Q", "0",
                             str(mixture / "mixture.bam")], capture_output=True, check=True)
    subprocess.run(["ivar", "consensus", "-p", str(tmp_path / "ivar"), "-t", "0.75", "-m", "10", "-q", "20",
                    "-n", "N"], input=pileup.stdout, capture_output=True, check=True)
    theirs = "".join((tmp_path / "ivar.fa").read_text().splitlines()[1:])
    diff = differences(ours, theirs)
    with capsys.disabled():
        print(f"\n[consensus vs ivar consensus on the mixture: {len(diff)} differences in {len(ours)} positions: "
              f"{diff[:12]}]")
    # The first and last 5 bases (end_skip): only read ends cover them, which lowfreq never counts.
    # Inside, ivar writes an N for an insertion below the threshold; lowfreq leaves it out.
    inner = [d for d in diff if 5 <= d[0] < len(ours) - 5]
    assert len(inner) <= 3 and all(d[1:] == ("-", "N") for d in inner), inner


def differences(a: str, b: str) -> list[tuple[int, str, str]]:
    """(position in ``a``, base in ``a``, base in ``b``) of each difference of a global
    alignment of two near-identical sequences (a gap shows as '-')."""
    from Bio import Align

    aligner = Align.PairwiseAligner(mode="global", match_score=1, mismatch_score=-1, open_gap_score=-4,
                                    extend_gap_score=-1)
    aln = aligner.align(a, b)[0]
    out, i = [], 0
    for x, y in zip(aln[0], aln[1], strict=True):
        if x != y:
            out.append((i, x, y))
        if x != "-":
            i += 1
    return out
