"""The calling engines, by the name the config gives them.

Contract: :data:`ENGINES` maps an engine name (config ``calling.engine``) to its
parameters class and its run function. Every engine has the same shape: a frozen
parameters dataclass with ``ENGINE`` (its name), ``from_dict``, ``as_dict`` and
``describe``, and ``run(bam, reference, params, out_vcf, region=None, workdir=None)``
writing an uncompressed VCF. An engine whose parameters say ``JOINT = True`` also
takes a list of BAMs and calls their samples together (one VCF column each). The
functions, the fragment keys and the whole-genome reference runs all go through
here, so adding an engine is one entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from functions.bcftools_engine import BcftoolsParams, run_bcftools
from functions.core.primers import PrimerScheme
from functions.core.tasks import Span
from functions.lowfreq import LowfreqParams, run_lowfreq


class EngineParams(Protocol):
    ENGINE: str

    def as_dict(self) -> dict[str, Any]: ...

    def describe(self) -> str: ...

    def context_padding(self) -> int: ...


ENGINES: dict[str, tuple[Any, Any]] = {
    "bcftools": (BcftoolsParams, run_bcftools),
    "lowfreq": (LowfreqParams, run_lowfreq),
}


def make_params(engine: str, values: dict[str, Any]) -> EngineParams:
    """The engine's parameters from a config mapping."""
    cls, _ = ENGINES[engine]
    return cls.from_dict(values)  # type: ignore[no-any-return]


def joint_capable(engine: str) -> bool:
    """Can the engine call several samples together?"""
    cls, _ = ENGINES[engine]
    return bool(getattr(cls, "JOINT", False))


def context_padding(engine: str, values: dict[str, Any]) -> int:
    """The bases of context a region needs on each side for the engine's calls in it to
    equal a whole-genome run's (``plan.padding: null``): the engine parameters'
    ``context_padding()``."""
    return make_params(engine, values).context_padding()


def needs_reads_in_context(engine: str) -> bool:
    """Are the engine's calls in a region exact only when every read overlapping the
    region lies inside its context (bcftools: see ``BcftoolsParams.READS_IN_CONTEXT``)?"""
    cls, _ = ENGINES[engine]
    return bool(getattr(cls, "READS_IN_CONTEXT", False))


def keeps_depth(engine: str) -> bool:
    """Does the engine keep each region's depth track in its stats (for consensus genomes)?"""
    cls, _ = ENGINES[engine]
    return bool(getattr(cls, "DEPTH", False))


def scores_at_merge(engine: str) -> bool:
    """Does the engine score its records at the merge, from every region's noise table
    (its fragments hold candidates; lowfreq's SNVs under the sample's error spectrum)?"""
    cls, _ = ENGINES[engine]
    return bool(getattr(cls, "SPECTRUM", False))


def loads_whole_contig(engine: str) -> bool:
    """Does the engine load a contig's reference from its first base, whatever the region
    (so that a region far along a contig costs more unless its reads are moved)?"""
    cls, _ = ENGINES[engine]
    return bool(getattr(cls, "WHOLE_CONTIG", False))


def trims_primers(engine: str) -> bool:
    """Does the engine take a primer scheme (and leave primer bases out of its evidence)?"""
    cls, _ = ENGINES[engine]
    return bool(getattr(cls, "PRIMERS", False))


def run_engine(params: EngineParams, bam: str | Sequence[str], reference: str, out_vcf: str,
               region: Span | None = None, workdir: str | None = None,
               primers: PrimerScheme | None = None, **extra: Any) -> str:
    """Run the engine ``params`` belong to on one BAM, or on several (joint engines only),
    over the whole genome or one ``region``; ``primers`` only for engines that trim them;
    ``extra``: the engine's own keywords (lowfreq's ``on_evidence``)."""
    _, run = ENGINES[params.ENGINE]
    bams = [bam] if isinstance(bam, str) else list(bam)
    if len(bams) != 1 and not joint_capable(params.ENGINE):
        raise ValueError(f"the {params.ENGINE} engine calls one sample at a time, not {len(bams)}")
    arg = bams[0] if len(bams) == 1 else bams
    if primers is not None:
        if not trims_primers(params.ENGINE):
            raise ValueError(f"the {params.ENGINE} engine does not trim primers")
        extra["primers"] = primers
    return run(arg, reference, params, out_vcf, region=region, workdir=workdir, **extra)  # type: ignore[no-any-return]
