"""The ``bcftools`` engine: pysam's bundled ``bcftools mpileup | bcftools call -m``.

Contract: :class:`BcftoolsParams` holds every parameter that changes a call;
:func:`run_bcftools` runs the two commands on a BAM (or several, called jointly: one
sample column per BAM, in the order given) and a reference, over one region or the
whole genome, and writes an uncompressed VCF. The same argument lists serve
the per-region functions and the whole-genome reference run, which is what makes
their records comparable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import pysam
import pysam.bcftools

from functions.capture import stderr_into
from functions.core.errors import SvcError
from functions.core.tasks import Span


class EngineError(SvcError, RuntimeError):
    """bcftools failed; the message carries its own stderr."""


@dataclass(frozen=True)
class BcftoolsParams:
    ENGINE: ClassVar[str] = "bcftools"
    JOINT: ClassVar[bool] = True  # mpileup takes several BAMs; call -m genotypes them together
    WHOLE_CONTIG: ClassVar[bool] = True  # mpileup loads each contig's reference from base 0 to its end
    # mpileup's partial BAQ realigns a read at the first column it covers where the
    # pileup shows indels or clips, judged from every read covering that column: a
    # call depends on the columns of every read piled up there, so a region's calls
    # equal a whole-genome run's only if every read overlapping the region lies inside
    # its context (checked by each function: functions.call_region.check_reach).
    READS_IN_CONTEXT: ClassVar[bool] = True

    min_mapq: int = 0
    min_baseq: int = 13
    max_depth: int = 250
    ploidy: int = 2
    annotations: tuple[str, ...] = ("FORMAT/AD", "FORMAT/DP")
    variants_only: bool = True
    extra_mpileup: tuple[str, ...] = field(default_factory=tuple)
    # calling.normalize: each region's records left-aligned and multi-allelic records
    # split, as `bcftools norm -f <reference> -m-` of the whole-genome VCF would.
    normalize: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BcftoolsParams:
        d = dict(d)
        for k in ("annotations", "extra_mpileup"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["annotations"] = list(self.annotations)
        d["extra_mpileup"] = list(self.extra_mpileup)
        return d

    def mpileup_args(self) -> list[str]:
        args = [
            "--min-MQ", str(self.min_mapq),
            "--min-BQ", str(self.min_baseq),
            "--max-depth", str(self.max_depth),
        ]
        if self.annotations:
            args += ["--annotate", ",".join(self.annotations)]
        return args + list(self.extra_mpileup)

    def call_args(self, workdir: str) -> list[str]:
        args = ["--multiallelic-caller"]
        if self.variants_only:
            args.append("--variants-only")
        if self.ploidy == 1:
            args += ["--ploidy", "1"]
        elif self.ploidy != 2:
            ploidy_file = os.path.join(workdir, "ploidy.txt")
            with open(ploidy_file, "w") as fh:
                fh.write(f"* * * * {self.ploidy}\n")
            args += ["--ploidy-file", ploidy_file]
        return args

    def context_padding(self) -> int:
        """Context a region needs on each side: the reference span of the longest read
        (see ``READS_IN_CONTEXT``); 500 bp covers short reads (2 x 300 bp and their
        deletions). Longer reads stop their region with the padding they need."""
        return 500

    def describe(self) -> str:
        """The command lines, for VCF headers and logs."""
        return (
            "bcftools mpileup " + " ".join(self.mpileup_args())
            + " | bcftools call " + " ".join(self.call_args("."))
            + (" | bcftools norm -f <reference> " + " ".join(NORM_ARGS) if self.normalize else "")
        )


# bcftools norm's arguments after its reference (calling.normalize).
NORM_ARGS = ("-m-",)
# How far left normalising may move a record: a region's fragment holds records from
# this many bases before its start, the merge orders records across that stretch, and
# a record that would move further stops the region with an error.
NORM_MARGIN = 1000


def normalize_vcf(vcf: str, reference: str, out_vcf: str, workdir: str) -> str:
    """``bcftools norm -f reference -m-`` of ``vcf`` into the uncompressed ``out_vcf``."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        _bcftools(pysam.bcftools.norm, ["-f", reference, *NORM_ARGS, "-Ov", "-o", out_vcf, vcf], tmp, "norm")
    return out_vcf


def bcftools_version() -> str:
    return f"bcftools {pysam.__samtools_version__} (pysam {pysam.__version__})"


def run_bcftools(
    bam: str | Sequence[str],
    reference: str,
    params: BcftoolsParams,
    out_vcf: str,
    region: Span | None = None,
    workdir: str | None = None,
) -> str:
    """``mpileup | call`` on ``bam`` or a list of BAMs (optionally one region); uncompressed VCF at out_vcf."""
    bams = [bam] if isinstance(bam, str) else list(bam)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        bcf = os.path.join(tmp, "pileup.bcf")
        mp = ["--fasta-ref", reference, *params.mpileup_args(), "-Ou", "-o", bcf]
        where = region.name if region else ""
        if region:
            # A regions file, not a string: bcftools splits ``--regions`` strings at
            # every ':', so names SAM allows (``HLA-A*01:01:01:01``) would not parse.
            regions = os.path.join(tmp, "regions.tsv")
            with open(regions, "w") as fh:
                fh.write(f"{region.chrom}\t{region.start + 1}\t{region.end}\n")
            mp += ["--regions-file", regions]
        _bcftools(pysam.bcftools.mpileup, [*mp, *bams], tmp, f"mpileup {where}")
        _bcftools(pysam.bcftools.call, [*params.call_args(tmp), "-Ov", "-o", out_vcf, bcf], tmp, f"call {where}")
    return out_vcf


def _bcftools(tool: Any, args: list[str], tmp: str, what: str) -> None:
    """Run one bcftools subcommand, capturing its stderr for the error message."""
    err_path = os.path.join(tmp, "stderr.txt")
    with open(err_path, "wb") as err:
        try:
            with stderr_into(err):
                tool(*args, catch_stdout=False)
            failed = None
        except pysam.utils.SamtoolsError as exc:
            failed = exc
    if failed is not None:
        with open(err_path, errors="replace") as fh:
            msg = " ".join(line.strip() for line in fh if line.strip())
        raise EngineError(f"bcftools {what} failed: {msg or failed}")
