"""The run report: what a run called, where its time went, what it read and would cost.

Contract: :func:`load_run` reads what a finished run left (the ``bcftools stats`` the
merge wrote beside each VCF, the call manifests ``work/calls/<callset>.json`` with each
function's stats, the region plans, the staged-BAM manifests, the alignment manifests
of FASTQ samples and the step logs; never the VCFs' records) and :func:`build_report`
writes

* ``results/report.html``: one self-contained page (inline CSS and SVG; no script,
  no network) with, per sample, the variants by type, Ts/Tv, genotypes and PASS
  sites, and the depth distribution per VCF, all as ``bcftools stats`` counts them
  (:func:`stats_text` says what the stats file holds, :func:`read_stats` what is
  taken from it); the fan-out as a timeline (one bar per function attempt, coloured by
  stage and retry); the function durations with the stragglers named; planned
  against actual bytes per region; bytes and GETs read; and an estimated cloud cost
  from the price table in the config (``report.cost``), which the page states; and
* ``results/run_metrics_mqc.tsv``: the run metrics as a MultiQC custom-content table
  (MultiQC also picks up the ``results/<callset>.stats.txt`` files of ``bcftools
  stats``).

Nothing here changes a result; the report only reads.

Definitions used on the page (and in the tests):

* A function *attempt* is one run of the calling or alignment function. Its time is
  measured inside the function (``started``, ``seconds`` in its stats; failed tries as
  the executor saw them), so the time a backend spends starting a worker is not in it.
* A *straggler* is a function that took more than :data:`STRAGGLER_FACTOR` times the
  median of its stage.
* Estimated cost = GB-seconds (each attempt's seconds x ``function_memory_mb`` / 1024)
  x ``per_gb_second`` + attempts x ``per_million_invocations`` / 10^6 + GETs x
  ``per_thousand_gets`` / 1000 + PUTs (2 per finished function: its output and its
  stats) x ``per_thousand_puts`` / 1000. It counts the functions that made the
  results, also those of fragments reused from an earlier run; the local steps
  (staging, planning, merging) and storage per month are not in it.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pysam
import pysam.bcftools

from functions.core.atomic import atomic_outputs
from functions.core.errors import SvcError
from functions.core.primers import Primer, PrimerScheme, read_primer_bed
from pipeline import svgplot
from pipeline.consensus import depth_track
from pipeline.forked import forked
from pipeline.manifests import AlignmentParts, CallResults, StagedSample
from pipeline.phases import Breakdown, breakdown, function_runs, process_start, read_steps
from pipeline.plan import SamplePlan, read_plan
from pipeline.provenance import version_mismatches, versions, versions_tsv

logger = logging.getLogger(__name__)

STRAGGLER_FACTOR = 1.5
# The MultiQC custom-content table's columns, in order (the first names the row).
MQC_COLUMNS = ("Callset", "Regions", "Functions run", "Fragments reused", "Retries", "Function seconds",
               "GB-seconds", "MB read", "GETs", "Read / BAM size", "Estimated cost")
STAGE_COLOURS = {"call": svgplot.PALETTE[0], "align": svgplot.PALETTE[2]}
FAILED_COLOUR = svgplot.PALETTE[5]
RETRIED_OUTLINE = svgplot.PALETTE[1]


# -- variants per sample, from bcftools stats ----------------------------------------------
# The depth bins of the stats: one per read up to 10^6 (bcftools' default stops at 500,
# too low for viral depths).
STATS_DEPTH = "0,1000000,1"
# The lines of the PASS-only stats in a stats file (see stats_text): comments to every
# other reader of the file (MultiQC, plot-vcfstats).
PASS_MARK = "# svc PASS\t"
# bcftools stats' classes, in the order the page shows them.
TYPES = ("snv", "indel", "mnp", "other")


class StatsFileError(SvcError, ValueError):
    """A stats file the report cannot read: not ``bcftools stats`` output as it expects."""


@dataclass
class SampleVariants:
    """What one sample of one VCF carries, as ``bcftools stats`` counts it: alleles by
    type, Ts/Tv, genotypes and PASS sites. ``None``: a figure bcftools stats does not
    give for this VCF (genotypes of a VCF without samples; MNPs and others per sample
    of a multi-sample VCF)."""

    callset: str
    sample: str
    records: int = 0
    types: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(TYPES, 0))
    ts: int = 0
    tv: int = 0
    het: int | None = None
    hom_alt: int | None = None
    passed: int = 0

    @property
    def label(self) -> str:
        """The sample's name, and its VCF's when that is another (a cohort's)."""
        return self.sample if self.sample == self.callset else f"{self.sample} ({self.callset})"

    @property
    def ts_tv(self) -> float | None:
        return self.ts / self.tv if self.tv else None


@dataclass
class CallsetDepth:
    """The depth distribution of one VCF's called sites: ``depth`` -> count of the
    ``source`` values (FORMAT/DP of every genotype of its ``samples``, else INFO/DP of
    every site)."""

    label: str
    samples: int
    source: str
    depth: Counter[int]


@dataclass
class BcftoolsStats:
    """The sections of one ``bcftools stats`` run over one VCF (set 0) that the report
    reads: SN, TSTV, PSC and PSI (per sample, with ``-s -``) and DP, each PSC and PSI
    row as ``{column name: value}`` (the names of the file's own ``# PSC`` line)."""

    sn: dict[str, int] = field(default_factory=dict)  # "number of records" -> 211
    ts: int = 0
    tv: int = 0
    psc: dict[str, dict[str, str]] = field(default_factory=dict)  # sample -> its PSC row
    psi: dict[str, dict[str, str]] = field(default_factory=dict)
    depth_genotypes: Counter[int] = field(default_factory=Counter)
    depth_sites: Counter[int] = field(default_factory=Counter)

    def count(self, what: str) -> int:
        """The SN figure ``number of <what>``."""
        try:
            return self.sn[f"number of {what}"]
        except KeyError:
            raise StatsFileError(f"no SN line 'number of {what}'") from None

    def per_sample(self, sample: str, column: str, section: str = "PSC") -> int:
        rows = self.psc if section == "PSC" else self.psi
        try:
            return int(rows[sample][column])
        except KeyError:
            raise StatsFileError(f"no {section} column {column!r} for sample {sample!r}") from None


def stats_text(vcf: str, name: str | None = None) -> str:
    """What the merge writes as ``results/<callset>.stats.txt`` (after its own first line),
    and what :func:`read_stats` reads: ``bcftools stats -s - -d 0,1000000,1`` of ``vcf``
    (``-s -`` only if it has samples), followed by the SN, PSC and PSI lines of
    ``bcftools stats -f .,PASS`` (the records whose FILTER is PASS or ``.``), each line
    prefixed with :data:`PASS_MARK` so that every other reader of the file sees one plain
    ``bcftools stats`` report. ``name``: the file name the stats should state, when
    ``vcf`` is a temporary name."""
    with pysam.VariantFile(vcf) as fh:
        per_sample = ["-s", "-"] if fh.header.samples else []
    passed_pass = forked(_stats, *per_sample, "-f", ".,PASS", vcf)  # the two passes side by side
    full = _stats(*per_sample, "-d", STATS_DEPTH, vcf)
    passed = passed_pass()
    if name is not None:
        full = full.replace(vcf, name)
    return full + "".join(f"{PASS_MARK}{line}\n" for line in passed.splitlines()
                          if line.startswith(("SN\t", "PSC\t", "PSI\t")))


def _stats(*args: str) -> str:
    return str(pysam.bcftools.stats(*args))


def parse_stats(text: str) -> tuple[BcftoolsStats, BcftoolsStats | None]:
    """The figures of a ``bcftools stats`` report of one VCF and, when the text has them
    (:func:`stats_text`), those of its PASS records (else ``None``).

    Raises :class:`StatsFileError` if the text is not such a report."""
    full, passed = BcftoolsStats(), BcftoolsStats()
    columns: dict[str, list[str]] = {}  # section -> its column names, from its "# PSC\t[2]id..." line
    has_pass = False
    for line in text.splitlines():
        stats = full
        if line.startswith(PASS_MARK):
            line, stats, has_pass = line[len(PASS_MARK):], passed, True
        elif line.startswith("# ") and "\t[2]" in line:
            head = line[2:].split("\t")
            columns[head[0]] = [re.sub(r"^\[\d+\]", "", c) for c in head]
            continue
        f = line.split("\t")
        if line.startswith("#") or len(f) < 3 or f[1] != "0":
            continue
        try:
            if f[0] == "SN":
                stats.sn[f[2].rstrip(":")] = int(f[3])
            elif f[0] == "TSTV":
                stats.ts, stats.tv = int(f[2]), int(f[3])
            elif f[0] in ("PSC", "PSI"):
                rows = stats.psc if f[0] == "PSC" else stats.psi
                rows[f[2]] = dict(zip(columns.get(f[0], []), f, strict=False))
            elif f[0] == "DP":
                depth = int(f[2]) if f[2][:1] != ">" else int(f[2][1:]) + 1  # ">1000000": deeper
                for counter, n in ((stats.depth_genotypes, f[3]), (stats.depth_sites, f[5])):
                    if int(n):
                        counter[depth] += int(n)
        except (IndexError, ValueError):
            raise StatsFileError(f"unexpected {f[0]} line {line[:80]!r}") from None
    if "number of records" not in full.sn:
        raise StatsFileError("no SN section (not the output of bcftools stats)")
    return full, passed if has_pass else None


def variants_of(full: BcftoolsStats, passed: BcftoolsStats, callset: str) -> list[SampleVariants]:
    """One :class:`SampleVariants` per sample of the VCF (one named after the callset for a
    VCF without samples). A VCF with at most one sample takes its counts from SN and
    TSTV (every record and ALT); a multi-sample VCF from each sample's PSC and PSI rows
    (the genotypes it carries: ``bcftools stats`` counts SNVs and indels per sample, not
    MNPs and others). Genotypes: PSC's SNV genotypes plus PSI's indel genotypes."""
    n_samples = full.count("samples")
    samples = list(full.psc) if n_samples else [callset]
    if len(samples) != max(1, n_samples):
        raise StatsFileError(f"{n_samples} samples but PSC rows for {len(full.psc)}: not run with -s -")

    def genotypes(stats: BcftoolsStats, s: str) -> tuple[int, int]:
        het = (stats.per_sample(s, "nHets") + stats.per_sample(s, "nInsHets", "PSI")
               + stats.per_sample(s, "nDelHets", "PSI"))
        hom = (stats.per_sample(s, "nNonRefHom") + stats.per_sample(s, "nInsAltHoms", "PSI")
               + stats.per_sample(s, "nDelAltHoms", "PSI"))
        return het, hom

    out = []
    for s in samples:
        sv = SampleVariants(callset, s)
        if n_samples <= 1:
            sv.records, sv.passed = full.count("records"), passed.count("records")
            sv.ts, sv.tv = full.ts, full.tv
            sv.types = {"snv": full.count("SNPs"), "indel": full.count("indels"), "mnp": full.count("MNPs"),
                        "other": full.count("others")}
            if n_samples:
                sv.het, sv.hom_alt = genotypes(full, s)
        else:
            sv.het, sv.hom_alt = genotypes(full, s)
            sv.records, sv.passed = sv.het + sv.hom_alt, sum(genotypes(passed, s))
            sv.ts, sv.tv = full.per_sample(s, "nTransitions"), full.per_sample(s, "nTransversions")
            sv.types = {"snv": sv.ts + sv.tv, "indel": full.per_sample(s, "nIndels"), "mnp": None, "other": None}
        out.append(sv)
    return out


def depth_of(full: BcftoolsStats, variants: list[SampleVariants], callset: str) -> CallsetDepth:
    """The depth the page draws for one VCF: its genotypes' FORMAT/DP (in a multi-sample
    VCF, all samples' together: bcftools stats has no per-sample distribution), else its
    sites' INFO/DP."""
    n = full.sn.get("number of samples", 0)
    label = variants[0].label if n <= 1 else f"{callset} (all {n} samples)"
    if full.depth_genotypes:
        return CallsetDepth(label, n, "FORMAT/DP", full.depth_genotypes)
    return CallsetDepth(label, n, "INFO/DP", full.depth_sites)


def stats_path(vcf: str | Path) -> Path:
    """Where the merge writes the stats of ``results/<callset>.vcf.gz``: ``results/<callset>.stats.txt``."""
    vcf = Path(vcf)
    return vcf.with_name(vcf.name.removesuffix(".gz").removesuffix(".vcf") + ".stats.txt")


def read_stats(stats: str | Path, vcf: str | Path, callset: str) -> tuple[list[SampleVariants], CallsetDepth]:
    """The figures of one callset from its stats file (as :func:`stats_text` writes it).
    A stats file without the PASS lines (written by an earlier version of the merge) is
    replaced, for the report only, by :func:`stats_text` of ``vcf``."""
    path = Path(stats)
    try:
        full, passed = parse_stats(path.read_text())
        if passed is None:
            logger.info("%s holds no PASS figures (an earlier merge wrote it): running bcftools stats on %s",
                        path, vcf)
            full, passed = parse_stats(stats_text(str(vcf)))
        variants = variants_of(full, passed or BcftoolsStats(), callset)
    except (OSError, StatsFileError) as e:
        raise StatsFileError(f"cannot read the bcftools stats of {callset} in {path} ({e}): rerun the merge "
                             f"(`snakemake --forcerun merge`)") from None
    return variants, depth_of(full, variants, callset)


def depth_bins(depth: Counter[int], n_bins: int = 30) -> list[tuple[float, float]]:
    """(bin start, sites) over [0, the 99th percentile of depth]; deeper sites go into the last bin."""
    if not depth:
        return []
    total, seen, p99 = sum(depth.values()), 0, 0
    for d in sorted(depth):
        seen += depth[d]
        p99 = d
        if seen >= 0.99 * total:
            break
    width = max(1, -(-(p99 + 1) // n_bins))
    bins: Counter[int] = Counter()
    for d, n in depth.items():
        bins[min(d // width, n_bins - 1)] += n
    return [(b * width, bins.get(b, 0)) for b in range(min(n_bins, p99 // width + 1))]


# -- the functions --------------------------------------------------------------------
@dataclass
class Attempt:
    """One run of a function: its stage, what it worked on, when, how it ended."""

    stage: str  # call | align
    label: str
    started: float  # epoch seconds
    seconds: float
    ok: bool
    after_retry: bool = False
    error: str = ""


def attempts_of(stage: str, label: str, stats: dict[str, Any]) -> list[Attempt]:
    """The failed tries and the finished run of one function (none if it was reused)."""
    if stats.get("reused") or "started" not in stats:
        return []
    failed = [Attempt(stage, label, f["started"], f["seconds"], False, error=f.get("error", ""))
              for f in stats.get("failed_attempts", [])]
    return failed + [Attempt(stage, label, stats["started"], stats["seconds"], True,
                             after_retry=stats.get("attempts", 1) > 1)]


def stragglers(attempts: list[Attempt]) -> tuple[dict[str, float], list[Attempt]]:
    """Per stage, the straggler threshold (``STRAGGLER_FACTOR`` x the median of the
    finished functions), and the finished functions above it, slowest first."""
    limits: dict[str, float] = {}
    slow: list[Attempt] = []
    for stage in sorted({a.stage for a in attempts}):
        done = [a for a in attempts if a.ok and a.stage == stage]
        if len(done) < 2:
            continue
        limits[stage] = STRAGGLER_FACTOR * statistics.median(a.seconds for a in done)
        slow += [a for a in done if a.seconds > limits[stage]]
    return limits, sorted(slow, key=lambda a: -a.seconds)


@dataclass
class Cost:
    """An estimate of what the functions would cost in the cloud, by the config's prices."""

    gb_seconds: float
    invocations: int
    gets: int
    puts: int
    prices: dict[str, Any]

    @property
    def compute(self) -> float:
        return self.gb_seconds * self.prices["per_gb_second"]

    @property
    def requests(self) -> float:
        return (self.invocations * self.prices["per_million_invocations"] / 1e6
                + self.gets * self.prices["per_thousand_gets"] / 1e3
                + self.puts * self.prices["per_thousand_puts"] / 1e3)

    @property
    def total(self) -> float:
        return self.compute + self.requests


def estimate_cost(functions: list[dict[str, Any]], prices: dict[str, Any]) -> Cost:
    """The cost of the functions that made ``functions`` (fragment or part stats): every
    attempt's seconds, the GETs of the finished ones, 2 PUTs each."""
    gb = prices["function_memory_mb"] / 1024
    seconds = sum(f["seconds"] + sum(a["seconds"] for a in f.get("failed_attempts", [])) for f in functions)
    return Cost(
        gb_seconds=seconds * gb,
        invocations=sum(f.get("attempts", 1) for f in functions),
        gets=sum(f["gets"] for f in functions),
        puts=2 * len(functions),
        prices=prices,
    )


# -- the run --------------------------------------------------------------------------
@dataclass
class Callset:
    """One VCF of the run and the functions that made it."""

    name: str
    manifest: CallResults
    vcf: Path
    samples: list[str]  # the BAMs it was called from
    bam_bytes: int
    planned: dict[int, int]  # region index -> planned BAM bytes (all its samples)

    @property
    def fragments(self) -> list[dict[str, Any]]:
        return [dict(f) for f in self.manifest.fragments]


@dataclass
class Run:
    callsets: list[Callset]
    variants: list[SampleVariants]
    depths: list[CallsetDepth]  # one per callset
    attempts: list[Attempt]
    align: dict[str, AlignmentParts]  # FASTQ sample -> its alignment manifest
    steps: list[tuple[str, float, float]]  # (log name, start epoch, seconds)
    settings: dict[str, Any]  # the workflow config
    lithops: dict[str, Any]  # the Lithops config
    viral: ViralRun | None = None  # depth, amplicons and minority variants (engines with a depth track)
    breakdown: Breakdown | None = None  # where the time went, until the report's step started
    versions: str = ""  # results/versions.tsv (pipeline.provenance.versions_tsv)

    def functions(self) -> list[dict[str, Any]]:
        """The stats of every function that made the results: fragments and alignment parts."""
        return ([f for cs in self.callsets for f in cs.fragments]
                + [dict(p) for m in self.align.values() for p in m.parts])


def planned_bytes(plans: list[SamplePlan]) -> dict[int, int]:
    """Region index -> the BAM bytes its plans say a function fetches (header included)."""
    out: Counter[int] = Counter()
    for plan in plans:
        for r in plan.regions:
            out[r.index] += plan.header.end + r.fetch_bytes
    return dict(out)


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def step_times(log_dir: str | Path) -> list[tuple[str, float, float]]:
    """(step, start, seconds) of each step log, from its first and last time stamps."""
    out = []
    for log in sorted(Path(log_dir).glob("*.log")):
        stamps = [m.group(1) for line in log.read_text(errors="replace").splitlines()
                  if (m := LOG_TIME.match(line))]
        if stamps:
            t0, t1 = (dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").timestamp() for s in (stamps[0], stamps[-1]))
            out.append((log.stem, t0, t1 - t0))
    return sorted(out, key=lambda s: s[1])


def load_run(settings: dict[str, Any], lithops: dict[str, Any], calls: list[str | Path], vcfs: list[str | Path],
             plans: list[str | Path], staged: list[str | Path], aligned: list[str | Path],
             log_dir: str | Path | None, stats_files: list[str | Path] | None = None,
             viral: Mapping[str, Any] | None = None, consensus: Sequence[str | Path] = ()) -> Run:
    """Everything the report shows, read from the run's files. ``stats_files``: the
    ``bcftools stats`` of each VCF, by default :func:`stats_path` of each (beside it).
    ``viral``: the report's ``viral`` settings (``min_depth``, ``primers``; given with
    an engine that keeps a depth track), ``consensus``: the consensus FASTAs
    (``results/<sample>.consensus.fa``); the depth, amplicon and minority-variant
    figures (:func:`load_viral`) are read when ``viral`` is given or when every
    fragment carries a depth track."""
    bams = {m.sample: m.bam.size for m in map(StagedSample.read, staged)}
    plan_of = {plan.sample: plan for plan in map(read_plan, plans)}
    callsets, variants, depths, attempts = [], [], [], []
    for call_path, vcf, stats in zip(calls, vcfs, stats_files or [stats_path(v) for v in vcfs], strict=True):
        manifest = CallResults.read(call_path)
        name = manifest.sample
        samples = list(manifest.sample_names)
        cs = Callset(name, manifest, Path(vcf), samples, sum(bams.get(s, 0) for s in samples),
                     planned_bytes([plan_of[s] for s in samples if s in plan_of]))
        callsets.append(cs)
        found, depth = read_stats(stats, vcf, name)
        variants += found
        depths.append(depth)
        for f in cs.fragments:
            label = f"{name} {f['name']}"
            attempts += attempts_of("call", label, f)
    align = {}
    for path in aligned:
        parts = AlignmentParts.read(path)
        align[parts.sample] = parts
        for p in parts.parts:
            attempts += attempts_of("align", f"{parts.sample} chunk {p['chunk']}", dict(p))
    steps = step_times(log_dir) if log_dir and Path(log_dir).is_dir() else []
    timed = read_steps(log_dir) if log_dir and Path(log_dir).is_dir() else []
    runs = function_runs([f for cs in callsets for f in cs.fragments]
                         + [dict(p) for m in align.values() for p in m.parts])
    now = process_start() or time.time()  # this step's start: the breakdown stops there
    breakdown_ = breakdown(timed, runs, t1=now) if timed else None
    viral_run = None
    if viral is not None or has_depth_tracks(callsets):
        v = viral or {}
        viral_run = load_viral(callsets, consensus, int(v.get("min_depth", DEFAULT_MIN_DEPTH)), v.get("primers"))
    run = Run(callsets, variants, depths, sorted(attempts, key=lambda a: a.started), align, steps, settings, lithops,
              viral_run, breakdown_)
    run.versions = versions_tsv(versions(), run.functions())
    return run


# -- viral runs: depth along the genome, amplicons, minority variants ---------------------
MINORITY_COLUMNS = ("sample", "chrom", "pos", "ref", "alt", "af", "depth", "filter")
NOT_CALLED = "not_called"
DEFAULT_MIN_DEPTH = 10  # consensus.min_depth's default
DEPTH_BINS = 500  # bins of the depth profiles, over the whole genome
BREADTH = (10, 100)  # the depths whose breadth the table gives
WEAK_SHARE = 0.05  # a weak amplicon: median depth below this share of the sample's median amplicon
# The heatmap's AF classes: (upper bound, label), one Viridis colour each, light to dark.
AF_CLASSES = ((0.02, "< 2 %"), (0.05, "2-5 %"), (0.1, "5-10 %"), (0.2, "10-20 %"), (0.5, "20-50 %"),
              (0.75, "50-75 %"), (math.inf, ">= 75 %"))
NO_COVERAGE = "#bdbdbd"


class ReportError(SvcError, ValueError):
    """The report cannot be written from what the run left."""


@dataclass(frozen=True)
class Allele:
    """One ALT allele of a VCF record in its shortest form: the bases REF and ALT share
    at the end, then at the start, are trimmed (as ``bcftools norm -m-`` leaves a split
    allele), so that an allele has the same key whichever record of whichever sample's
    VCF holds it. ``pos`` is 1-based, as in the VCF."""

    chrom: str
    pos: int
    ref: str
    alt: str

    def label(self, with_contig: bool = False) -> str:
        """``pos ref>alt`` (alleles over 6 bases cut short), with the contig if asked."""
        def short(a: str) -> str:
            return a if len(a) <= 6 else a[:5] + "…"

        where = f"{self.chrom}:{self.pos:,}" if with_contig else f"{self.pos:,}"
        return f"{where} {short(self.ref)}>{short(self.alt)}"


@dataclass(frozen=True)
class AlleleCall:
    """What a sample's VCF says of an allele: its AF and the record's FILTER."""

    af: float
    filter: str  # PASS, or the filters it failed, joined by ';' ('.': none applied)

    @property
    def passed(self) -> bool:
        return self.filter in ("PASS", ".")


def normalise(pos: int, ref: str, alt: str) -> tuple[int, str, str]:
    """The shortest form of an allele (see :class:`Allele`)."""
    while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt, pos = ref[1:], alt[1:], pos + 1
    return pos, ref, alt


def read_contigs(vcf: str | Path) -> dict[str, int]:
    """The contigs of a VCF's header and their lengths, in its order (the reference's)."""
    with pysam.VariantFile(str(vcf)) as fh:
        return {str(name): int(c.length or 0) for name, c in fh.header.contigs.items()}


def read_allele_calls(vcf: str | Path) -> dict[Allele, AlleleCall]:
    """Every ALT allele of a VCF (any FILTER) with its INFO/AF (NaN if it has none)."""
    out: dict[Allele, AlleleCall] = {}
    with pysam.VariantFile(str(vcf)) as fh:
        has_af = "AF" in fh.header.info
        for rec in fh:
            keys = [str(k) for k in rec.filter.keys()]
            filt = ";".join(keys) if keys else "."
            afs = rec.info.get("AF") if has_af else None
            if afs is not None and not isinstance(afs, tuple):
                afs = (afs,)
            for i, alt in enumerate(rec.alts or ()):
                if alt.startswith("<") or alt == "*":
                    continue
                pos, ref, a = normalise(rec.pos, str(rec.ref), alt)
                af = float(afs[i]) if afs is not None and i < len(afs) and afs[i] is not None else math.nan
                out[Allele(rec.chrom, pos, ref, a)] = AlleleCall(af, filt)
    return out


@dataclass(frozen=True)
class Amplicon:
    """An amplicon of a primer scheme: its insert, from the end of its LEFT primer to the
    start of its RIGHT primer (0-based, half-open; with alternative primers, the
    innermost ends)."""

    name: str
    chrom: str
    start: int
    end: int


def amplicons_of(scheme: PrimerScheme) -> list[Amplicon]:
    """The amplicons of a scheme, in its order. An amplicon whose primers overlap (no
    insert between them) is taken whole, from its LEFT primer's start to its RIGHT
    primer's end."""
    sides: dict[str, dict[str, list[Primer]]] = {}
    for p in scheme.primers:
        sides.setdefault(p.amplicon, {}).setdefault(p.side, []).append(p)
    out = []
    for name, by_side in sides.items():
        left, right = by_side.get("LEFT", []), by_side.get("RIGHT", [])
        if not left or not right:
            continue  # the scheme's check refuses these
        start, end = max(p.end for p in left), min(p.start for p in right)
        if end <= start:
            start, end = min(p.start for p in left), max(p.end for p in right)
        out.append(Amplicon(name, left[0].chrom, start, end))
    return out


@dataclass
class ViralSample:
    """One sample's depth, consensus and amplicon figures and its calls."""

    name: str
    length: int  # reference positions
    mean_depth: float
    breadth: dict[int, float]  # depth -> share of the reference positions with at least that depth
    below_min: int  # positions with fewer than min_depth informative reads
    consensus_n: int | None  # N in its consensus FASTA (None: no FASTA)
    consensus_length: int | None
    primer_trimmed: int
    primer_dropped: int
    bins: list[tuple[int, int, float, bool]]  # (start, end, mean depth, a position < min_depth) end to end
    amplicon_depth: dict[str, float]  # amplicon -> median depth of its insert
    dropped: list[str]  # amplicons with median depth < min_depth
    weak: list[str]  # the others below WEAK_SHARE x the median of the sample's amplicon medians
    calls: dict[Allele, AlleleCall]
    depth_at: dict[Allele, int]  # informative depth at each allele of the run (every sample's)


@dataclass
class ViralRun:
    """The run's viral view: the samples (in the run's order), the union of their alleles
    (reference order), the consensus depth threshold and the amplicons of the scheme."""

    contigs: dict[str, int]
    samples: list[ViralSample]
    alleles: list[Allele]
    min_depth: int
    primers: str | None = None
    amplicons: list[Amplicon] = field(default_factory=list)

    def offsets(self) -> dict[str, int]:
        """Where each contig starts with the contigs end to end."""
        out, at = {}, 0
        for name, length in self.contigs.items():
            out[name], at = at, at + length
        return out


def has_depth_tracks(callsets: Sequence[Callset]) -> bool:
    """Do all callsets have one sample each and a depth track in every fragment?"""
    return bool(callsets) and all(
        len(cs.samples) == 1 and cs.fragments and all("depth" in f for f in cs.fragments) for cs in callsets)


def count_n(fasta: str | Path) -> tuple[int, int]:
    """(N bases, all bases) of a FASTA."""
    n = total = 0
    with open(fasta) as fh:
        for line in fh:
            if not line.startswith(">"):
                seq = line.strip()
                total += len(seq)
                n += seq.count("N") + seq.count("n")
    return n, total


def _bins(track: np.ndarray, offset: int, width: int, min_depth: int) -> list[tuple[int, int, float, bool]]:
    if not len(track):
        return []
    starts = np.arange(0, len(track), width)
    sums = np.add.reduceat(track, starts)
    lows = np.minimum.reduceat(track, starts)
    ends = np.append(starts[1:], len(track))
    return [(offset + int(a), offset + int(b), float(s) / (b - a), bool(lo < min_depth))
            for a, b, s, lo in zip(starts, ends, sums, lows, strict=True)]


def viral_sample(cs: Callset, contigs: Mapping[str, int], alleles: Sequence[Allele], calls: dict[Allele, AlleleCall],
                 min_depth: int, amplicons: Sequence[Amplicon], consensus: str | Path | None) -> ViralSample:
    """The figures of one single-sample callset (see :class:`ViralSample`)."""
    frags = cs.fragments
    track = depth_track(frags, contigs)
    length = sum(contigs.values())
    whole = np.concatenate([track[c] for c in contigs]) if contigs else np.zeros(0, dtype=np.int64)
    width = max(1, -(-length // DEPTH_BINS))
    bins, at = [], 0
    for name, size in contigs.items():
        bins += _bins(track[name], at, width, min_depth)
        at += size
    amp_depth = {}
    for a in amplicons:
        t = track.get(a.chrom)
        part = t[a.start : a.end] if t is not None else np.zeros(0, dtype=np.int64)
        amp_depth[a.name] = float(np.median(part)) if len(part) else 0.0
    dropped = [a.name for a in amplicons if amp_depth[a.name] < min_depth]
    typical = statistics.median(amp_depth.values()) if amp_depth else 0.0
    weak = [a.name for a in amplicons if a.name not in dropped and amp_depth[a.name] < WEAK_SHARE * typical]
    n, total = count_n(consensus) if consensus else (None, None)
    return ViralSample(
        name=cs.name, length=length, mean_depth=float(whole.mean()) if length else 0.0,
        breadth={d: float((whole >= d).mean()) if length else 0.0 for d in BREADTH},
        below_min=int((whole < min_depth).sum()), consensus_n=n, consensus_length=total,
        primer_trimmed=sum(int(f.get("primer_trimmed", 0)) for f in frags),
        primer_dropped=sum(int(f.get("primer_dropped", 0)) for f in frags),
        bins=bins, amplicon_depth=amp_depth, dropped=dropped, weak=weak, calls=calls,
        depth_at={a: int(track[a.chrom][a.pos - 1]) if a.chrom in track and 0 < a.pos <= len(track[a.chrom]) else 0
                  for a in alleles},
    )


def load_viral(callsets: Sequence[Callset], consensus: Sequence[str | Path] = (), min_depth: int = DEFAULT_MIN_DEPTH,
               primers: str | None = None) -> ViralRun:
    """The viral view of the run: each callset's depth track (from its fragments' stats),
    its VCF's alleles, its consensus FASTA (``consensus``, matched by name:
    ``<sample>.consensus.fa``) and the amplicons of the primer BED ``primers``."""
    for cs in callsets:
        if len(cs.samples) != 1:
            raise ReportError(f"callset {cs.name} holds {len(cs.samples)} samples: the depth and minority-variant "
                              "figures are per sample (the lowfreq engine calls one sample at a time)")
    contigs: dict[str, int] = {}
    calls = {}
    for cs in callsets:
        for name, length in read_contigs(cs.vcf).items():
            contigs[name] = max(contigs.get(name, 0), length)
        calls[cs.name] = read_allele_calls(cs.vcf)
    for cs in callsets:  # a contig the header gives no length (or none at all): as far as the regions go
        for f in cs.fragments:
            contigs[f["chrom"]] = max(contigs.get(f["chrom"], 0), int(f["end"]))
    order = {name: i for i, name in enumerate(contigs)}
    alleles = sorted({a for c in calls.values() for a in c},
                     key=lambda a: (order.get(a.chrom, len(order)), a.pos, a.ref, a.alt))
    fasta = {Path(p).name.removesuffix(".consensus.fa"): p for p in consensus}
    amplicons = amplicons_of(read_primer_bed(primers)) if primers else []
    samples = [viral_sample(cs, contigs, alleles, calls[cs.name], min_depth, amplicons, fasta.get(cs.name))
               for cs in callsets]
    return ViralRun(contigs, samples, alleles, min_depth, primers, amplicons)


def _af_text(af: float) -> str:
    return "" if math.isnan(af) else f"{af:.6g}"


def minority_rows(vr: ViralRun) -> Iterator[list[str]]:
    """One row per (allele, sample), alleles in reference order and samples in the run's
    (see :data:`MINORITY_COLUMNS`): af 0 and filter ``not_called`` where the sample's
    VCF does not hold the allele; depth: the sample's informative depth at POS."""
    for a in vr.alleles:
        for s in vr.samples:
            c = s.calls.get(a)
            yield [s.name, a.chrom, str(a.pos), a.ref, a.alt, _af_text(c.af) if c else "0", str(s.depth_at[a]),
                   c.filter if c else NOT_CALLED]


def minority_tsv(vr: ViralRun) -> str:
    """``results/minority_variants.tsv``: a header line, then :func:`minority_rows`."""
    return "".join("\t".join(row) + "\n" for row in [list(MINORITY_COLUMNS), *minority_rows(vr)])


# -- the page -------------------------------------------------------------------------
CSS = """
body { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 16px; line-height: 1.45; color: #1a1a1a;
       max-width: 960px; margin: 0 auto; padding: 24px; background: #ffffff; }
h1 { font-size: 28px; margin: 0 0 4px; } h2 { font-size: 22px; margin-top: 36px; border-bottom: 2px solid #0072B2; }
h3 { font-size: 18px; margin-top: 24px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 15px; }
th, td { border: 1px solid #c8c8c8; padding: 4px 10px; text-align: right; }
th { background: #eef3f8; } td:first-child, th:first-child { text-align: left; }
.note { color: #444; font-size: 15px; } .figure { margin: 16px 0 28px; }
code { background: #f2f2f2; padding: 0 3px; }
.warning { background: #fff3d6; border-left: 4px solid #E69F00; padding: 6px 10px; }
table.names td { text-align: left; }
"""


def _table(head: list[str] | None, rows: Sequence[Sequence[Any]]) -> str:
    """A table; without ``head``, the first column heads each row."""
    th = "<thead><tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in head) + "</tr></thead>" if head else ""
    first = "td" if head else "th"
    body = "".join(f"<tr><{first}>{escape(str(row[0]))}</{first}>"
                   + "".join(f"<td>{escape(str(c))}</td>" for c in row[1:]) + "</tr>" for row in rows)
    return f"<table>{th}<tbody>{body}</tbody></table>"


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def _money(v: float, currency: str) -> str:
    return f"{v:,.6f} {currency}" if v < 0.01 else f"{v:,.4f} {currency}"


def _figure(svg: str, caption: str) -> str:
    return f'<div class="figure">{svg}<p class="note">{escape(caption)}</p></div>'


def callset_metrics(cs: Callset, prices: dict[str, Any]) -> dict[str, Any]:
    """The run-metrics row of one callset (also the MultiQC table's)."""
    frags = cs.fragments
    ran = [f for f in frags if not f.get("reused")]
    cost = estimate_cost(frags, prices)
    read = sum(f["get_bytes"] for f in frags)
    return {
        "Callset": cs.name,
        "Regions": len(frags),
        "Functions run": len(ran),
        "Fragments reused": len(frags) - len(ran),
        "Retries": sum(f.get("attempts", 1) - 1 for f in ran),
        "Function seconds": round(sum(f["seconds"] for f in frags), 2),
        "GB-seconds": round(cost.gb_seconds, 2),
        "MB read": round(read / 1e6, 2),
        "GETs": sum(f["gets"] for f in frags),
        "Read / BAM size": round(sum(f["bam_get_bytes"] for f in frags) / cs.bam_bytes, 3) if cs.bam_bytes else "",
        "Estimated cost": round(cost.total, 6),
    }


def _summary_section(run: Run) -> str:
    s = run.settings
    calling = s["calling"]
    engine = calling["engine"]
    lt = run.lithops.get("lithops", {})
    ran = [a for a in run.attempts if a.ok]
    n_failed = len(run.attempts) - len(ran)
    span = (max(a.started + a.seconds for a in run.attempts) - min(a.started for a in run.attempts)
            if run.attempts else 0.0)
    rows: list[list[Any]] = [
        ["samples", ", ".join(sorted({v.sample for v in run.variants}))],
        ["engine", f"{engine} ({'joint' if calling.get('mode') == 'joint' else 'per sample'})"],
        ["executor", f"{s['executor']['runner']}"
                     + (f", Lithops backend {lt.get('backend', '?')}, storage {lt.get('storage', '?')}" if lt else "")],
        ["regions (all callsets)", sum(len(cs.fragments) for cs in run.callsets)],
        ["functions run in this run", f"{len(ran)}" + (f"; {n_failed} failed tries, each retried" if n_failed else "")],
        ["fan-out span (first start to last end)", f"{span:.1f} s"],
        ["function time (sum)", f"{sum(a.seconds for a in run.attempts):.1f} s"],
    ]
    return "<h2>Run</h2>" + _table(None, rows)


def _warnings_section(run: Run) -> str:
    """What the user must see before trusting the VCFs (empty when all is well)."""
    from pipeline.merge import unusable_reads

    warnings = [w for cs in run.callsets for w in unusable_reads(cs.manifest)] + version_mismatches(run.versions)
    if not warnings:
        return ""
    return "<h2>Warnings</h2>" + "".join(f'<p class="warning">{escape(w)}</p>' for w in warnings)


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _variants_section(run: Run) -> str:
    out = ["<h2>Variants per sample</h2>"]
    rows = []
    for v in run.variants:
        rows.append([v.label, f"{v.records:,}", *(_count(v.types[k]) for k in TYPES),
                     f"{v.ts_tv:.2f}" if v.ts_tv is not None else "-", _count(v.het), _count(v.hom_alt),
                     f"{v.passed:,}"])
    out.append(_table(["sample", "sites", "SNVs", "indels", "MNPs", "other", "Ts/Tv", "het", "hom-alt", "PASS"],
                      rows))
    out.append('<p class="note">From the <code>bcftools stats</code> of each VCF '
               "(<code>results/&lt;callset&gt;.stats.txt</code>), by its classes. A VCF with one sample: its "
               "records and ALT alleles; a cohort's VCF: the genotypes each sample carries (bcftools counts SNVs "
               "and indels per sample, not MNPs and others: -); a VCF without genotypes (the lowfreq engine): "
               "every allele. het and hom-alt: genotypes at SNVs and indels. PASS: sites whose FILTER is PASS "
               "or empty.</p>")
    labels = [v.label for v in run.variants]
    out.append(_figure(svgplot.bars(
        labels, {k: [v.types[k] or 0 for v in run.variants] for k in TYPES},
        "Variants by type per sample", "alleles carried"), "Variants by type, per sample."))
    series = {d.label: depth_bins(d.depth) for d in run.depths if d.depth}
    if series:
        cohort = any(d.samples > 1 for d in run.depths)
        out.append(_figure(svgplot.lines(series, "Depth at the called sites", "depth (reads; bin start)",
                                         "genotypes or sites" if cohort else "sites"),
                           "Depth at the called sites: FORMAT/DP of each genotype (for a cohort's VCF, of all its "
                           "samples together), else each site's INFO/DP, as bcftools stats counts them; in 30 bins "
                           "up to the 99th percentile, deeper ones counted in the last bin."))
    return "\n".join(out)


def _depth_text(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def _share(v: float) -> str:
    return f"{100 * v:.2f}\u00a0%"


def _blocks(n: int, cap: int) -> list[tuple[int, int]]:
    """[start, end) of the blocks of about equal width, at most ``cap`` each, that ``n`` columns make."""
    k = -(-n // max(1, cap))
    per = -(-n // max(1, k))
    return [(a, min(n, a + per)) for a in range(0, n, per)]


def _af_class(af: float) -> int:
    """The AF class of an AF as the VCF writes it (6 decimals; pysam reads it as a float32)."""
    if math.isnan(af):
        return -1  # no AF (not the lowfreq engine's VCF)
    return next(i for i, (hi, _) in enumerate(AF_CLASSES) if round(af, 6) < hi)


def _coverage_section(run: Run) -> str:
    vr = run.viral
    if vr is None:
        return ""
    md = vr.min_depth
    out = ["<h2>Depth and coverage</h2>"]
    offsets = vr.offsets()
    profiles = [svgplot.DepthProfile(
        s.name, s.bins, note=f"mean {_depth_text(s.mean_depth)}x",
        label=f"{s.name}: mean depth {_depth_text(s.mean_depth)}, {_share(s.breadth[BREADTH[0]])} of the genome "
              f">= {BREADTH[0]}x, {s.below_min:,} positions below {md}")
        for s in vr.samples]
    length = sum(vr.contigs.values())
    out.append(_figure(svgplot.depth_panels(
        profiles, length, "Depth along the genome per sample", md,
        contigs=[(name, offsets[name]) for name in vr.contigs],
        x_label="position (bp" + (", contigs end to end)" if len(vr.contigs) > 1 else ")"),
        threshold_label=f"consensus.min_depth {md}"),
        f"Informative depth (the reads the caller counts at each position: mapping and base quality passed, primer "
        f"bases left out) along the genome, one panel per sample, on a shared log scale; the mean of each of "
        f"{len(profiles[0].bins) if profiles else 0} bins"
        + (" (dotted lines: where a contig ends)" if len(vr.contigs) > 1 else "")
        + f". Dashed: consensus.min_depth ({md}); the marks under a panel: bins holding a position below it, "
          "N in the consensus."))
    scheme = vr.primers is not None
    head = ["sample", "mean depth", f">= {BREADTH[0]}x", f">= {BREADTH[1]}x", "consensus N",
            "reads primer-trimmed", "reads dropped after trimming"]
    if scheme:
        head += ["amplicons dropped", "weak amplicons"]
    rows = []
    for s in vr.samples:
        n = "-" if s.consensus_n is None else (
            f"{s.consensus_n:,} ({_share(s.consensus_n / s.consensus_length) if s.consensus_length else '-'})")
        row = [s.name, _depth_text(s.mean_depth), *(_share(s.breadth[d]) for d in BREADTH), n,
               f"{s.primer_trimmed:,}", f"{s.primer_dropped:,}"]
        if scheme:
            row += [f"{len(s.dropped)} of {len(vr.amplicons)}", f"{len(s.weak)}"]
        rows.append(row)
    out.append(_table(head, rows))
    out.append(f'<p class="note">Depth: informative reads per position, from the depth track each region\'s '
               f"function kept; breadth: the share of the {length:,} reference positions with at least that depth; "
               "consensus N: the N bases of <code>results/&lt;sample&gt;.consensus.fa</code> (and their share; - "
               "when there is none); reads primer-trimmed: reads whose primer bases were left out of the evidence, "
               "and reads too short after that to count at all, summed over the regions"
               + ("" if scheme else " (no primer scheme in this run: calling.primers)") + ".</p>")
    if scheme:
        out.append(_amplicon_section(vr))
    return "\n".join(out)


def _amplicon_prefix(names: Sequence[str]) -> str:
    """What every amplicon name starts with, up to its last '_' (e.g. ``nCoV-2019_``)."""
    if not names:
        return ""
    first, last = min(names), max(names)
    common = first[: next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b),
                          min(len(first), len(last)))]
    return common[: common.rfind("_") + 1] if "_" in common else ""


def _amplicon_section(vr: ViralRun) -> str:
    md = vr.min_depth
    out = [f"<h3>Amplicons ({len(vr.amplicons)}, scheme {escape(str(vr.primers))})</h3>"]
    hit = [s for s in vr.samples if s.dropped or s.weak]
    if hit:
        out.append(_table(["sample", f"dropped out (median depth < {md})",
                           f"weak (< {WEAK_SHARE:.0%} of the sample's median amplicon)"],
                          [[s.name, ", ".join(s.dropped) or "-", ", ".join(s.weak) or "-"] for s in hit],
                          ).replace("<table>", '<table class="names">', 1))
    else:
        out.append(f"<p>No amplicon dropped out or was weak in any sample (every median depth at least {md}, "
                   f"and at least {WEAK_SHARE:.0%} of its sample's median amplicon).</p>")
    names = [a.name for a in vr.amplicons]
    prefix = _amplicon_prefix(names)
    classes: list[tuple[float, str, str]] = [(md, f"< {md} (dropped)", svgplot.PALETTE[5])]
    bounds = [b for b in (100, 1000, 10000) if b > md]
    lo: float = md
    for i, hi in enumerate([*bounds, math.inf]):
        colour = svgplot.VIRIDIS[(1, 3, 5, 6)[i] if i < 4 else 6]
        label = f"{svgplot.fmt_number(lo)}-{svgplot.fmt_number(hi)}" if hi != math.inf else \
            f">= {svgplot.fmt_number(lo)}"
        classes.append((hi, label, colour))
        lo = hi
    rows = [s.name for s in vr.samples]
    blocks = _blocks(len(names), svgplot.heatmap_capacity(rows))
    for b0, b1 in blocks:
        block = vr.amplicons[b0:b1]
        cells = {}
        for ri, s in enumerate(vr.samples):
            for ci, a in enumerate(block):
                d = s.amplicon_depth[a.name]
                _, what, colour = next(c for c in classes if d < c[0])
                weak = a.name in s.weak
                cells[(ri, ci)] = svgplot.Cell(
                    colour, f"{s.name} {a.name} ({a.chrom}:{a.start + 1:,}-{a.end:,}): median depth {d:,.0f}"
                            + (" (weak)" if weak else ""), "#000000" if weak else None)
        part = f" ({b0 + 1}-{b1} of {len(names)})" if len(blocks) > 1 else ""
        first = b0 == 0
        legend = [(label, colour) for _, label, colour in classes] + [("weak (crossed)", svgplot.VIRIDIS[1])]
        out.append('<div class="figure">' + svgplot.heatmap(
            rows, [a.name.removeprefix(prefix) for a in block], cells, f"Median depth per amplicon{part}",
            legend if first else (), marks={"weak (crossed)": "#000000"}, col_tips=[a.name for a in block])
            + "</div>")
    out.append('<p class="note">Median informative depth over each amplicon\'s insert (between its primers), one '
               "row per sample" + (f"; amplicons named without their common prefix {escape(prefix)}" if prefix else "")
               + (f"; in {len(blocks)} blocks" if len(blocks) > 1 else "") + ".</p>")
    return "\n".join(out)


def _minority_section(run: Run) -> str:
    vr = run.viral
    if vr is None:
        return ""
    md = vr.min_depth
    n_pass = sum(1 for a in vr.alleles if any(s.calls[a].passed for s in vr.samples if a in s.calls))
    out = ["<h2>Minority variants</h2>",
           f"<p>{len(vr.alleles):,} alleles called in at least one of the {len(vr.samples)} samples (any FILTER), "
           f"{n_pass:,} of them PASS in at least one. Every (allele, sample) pair, with the sample's AF (0 where it "
           f"was not called), its depth there and the FILTER: <code>results/minority_variants.tsv</code>.</p>"]
    if not vr.alleles:
        return "\n".join(out)
    multi = len(vr.contigs) > 1
    rows = [s.name for s in vr.samples]
    blocks = _blocks(len(vr.alleles), svgplot.heatmap_capacity(rows))
    legend = [(label, svgplot.VIRIDIS[i]) for i, (_, label) in enumerate(AF_CLASSES)]
    legend += [("not called", "#ffffff"), (f"not called, depth < {md}", NO_COVERAGE),
               ("filtered (crossed)", svgplot.VIRIDIS[3])]
    for b0, b1 in blocks:
        block = vr.alleles[b0:b1]
        cells = {}
        for ri, s in enumerate(vr.samples):
            for ci, a in enumerate(block):
                where = f"{s.name} {a.chrom}:{a.pos:,} {a.ref}>{a.alt}"
                c = s.calls.get(a)
                d = s.depth_at[a]
                if c is None:
                    if d < md:
                        cells[(ri, ci)] = svgplot.Cell(NO_COVERAGE, f"{where}: not called, depth {d:,} (< {md})")
                    continue
                k = _af_class(c.af)
                af = "AF ?" if math.isnan(c.af) else f"AF {100 * c.af:.2f} %"
                cells[(ri, ci)] = svgplot.Cell(svgplot.VIRIDIS[k] if k >= 0 else "#000000",
                                               f"{where}: {af}, {c.filter}, depth {d:,}",
                                               None if c.passed else ("#000000" if 0 <= k < 3 else "#ffffff"))
        tips = [f"{a.chrom}:{a.pos:,} {a.ref}>{a.alt}: called in "
                f"{sum(a in s.calls for s in vr.samples)} of {len(vr.samples)} samples" for a in block]
        part = f" ({b0 + 1}-{b1} of {len(vr.alleles)})" if len(blocks) > 1 else ""
        out.append('<div class="figure">' + svgplot.heatmap(
            rows, [a.label(multi) for a in block], cells, f"Allele frequency per sample{part}",
            legend if b0 == 0 else (), marks={"filtered (crossed)": "#ffffff"}, col_tips=tips) + "</div>")
    out.append('<p class="note">One row per sample, one column per allele (position, REF&gt;ALT; alleles cut '
               "short after 5 bases), in reference order"
               + (f", in {len(blocks)} blocks (the legend above the first)" if len(blocks) > 1 else "")
               + f". Colour: the sample's AF; crossed: called but not PASS (strand_bias, low_depth); grey: not "
               f"called where the sample has fewer than {md} informative reads (no evidence either way). Hover "
               f"over a cell for its AF, FILTER and depth.</p>")
    return "\n".join(out)


def _fanout_section(run: Run) -> str:
    out = ["<h2>The fan-out</h2>"]
    if not run.attempts:
        return out[0] + "<p>No function ran in this run: every fragment was reused from an earlier run.</p>"
    submitted = [f["submitted"] for f in run.functions() if not f.get("reused") and "submitted" in f]
    t0 = min(submitted + [a.started for a in run.attempts])
    order: dict[str, int] = {}
    for a in run.attempts:
        order.setdefault(a.label, len(order))
    spans = []
    for a in run.attempts:
        colour = STAGE_COLOURS.get(a.stage, svgplot.PALETTE[3]) if a.ok else FAILED_COLOUR
        what = "finished" if a.ok else f"failed: {a.error}"
        spans.append(svgplot.Span(order[a.label], a.started - t0, a.seconds, colour,
                                  f"{a.stage} {a.label}: {a.started - t0:.2f}-{a.started - t0 + a.seconds:.2f} s, "
                                  f"{what}", RETRIED_OUTLINE if a.after_retry else None))
    kinds = [(f"{stage} function", colour) for stage, colour in STAGE_COLOURS.items()
             if any(a.stage == stage for a in run.attempts)]
    kinds += [("failed try", FAILED_COLOUR), ("finished after retries (outline)", RETRIED_OUTLINE)]
    out.append(_figure(svgplot.timeline(spans, len(order), "Fan-out timeline", kinds),
                       "One row per function, in the order they started; a bar from its start to its end "
                       "(time measured inside the function, from the start of the map). Failed tries are "
                       "drawn in their function's row."))
    limits, slow = stragglers(run.attempts)
    for stage in sorted({a.stage for a in run.attempts if a.ok}):
        secs = [a.seconds for a in run.attempts if a.ok and a.stage == stage]
        med = statistics.median(secs)
        out.append(f"<h3>{escape(stage.capitalize())} functions: durations</h3>")
        out.append(_figure(svgplot.histogram(secs, f"Durations of the {stage} functions", "seconds",
                                             mark_from=limits.get(stage)),
                           f"{len(secs)} functions: median {med:.2f} s, slowest {max(secs):.2f} s, "
                           f"sum {sum(secs):.1f} s."))
        mine = [a for a in slow if a.stage == stage]
        if stage in limits:
            if mine:
                out.append(f"<p>Stragglers (more than {STRAGGLER_FACTOR:g} times the median, "
                           f"{limits[stage]:.2f} s):</p>")
                out.append(_table(["function", "seconds", "x median"],
                                  [[a.label, f"{a.seconds:.2f}", f"{a.seconds / med:.1f}"] for a in mine[:20]]))
                if len(mine) > 20:
                    out.append(f"<p>... and {len(mine) - 20} more.</p>")
            else:
                out.append(f"<p>No stragglers: no function took more than {STRAGGLER_FACTOR:g} times the "
                           f"median ({limits[stage]:.2f} s).</p>")
    return "\n".join(out)


def _bytes_section(run: Run, metrics: list[dict[str, Any]]) -> str:
    out = ["<h2>Data read</h2>"]
    points, ratios = [], []
    for cs in run.callsets:
        for f in cs.fragments:
            planned = cs.planned.get(f["region"])
            if planned:
                points.append((planned / 1e6, f["bam_get_bytes"] / 1e6,
                               f"{cs.name} {f['name']}: planned {_mb(planned)}, read {_mb(f['bam_get_bytes'])}"))
                ratios.append((f["bam_get_bytes"] / planned, f"{cs.name} {f['name']}"))
    if points:
        worst = max(ratios)
        out.append(_figure(svgplot.scatter(points, "Planned and actual BAM bytes per region",
                                           "planned (MB, from the index)", "read by the function (MB)"),
                           f"One point per region. Planned: the BAM header and the region's byte ranges in the plan; "
                           f"read: the BAM bytes its function fetched (the last block's tail, which the index does "
                           f"not size, comes on top). Actual / planned: median "
                           f"{statistics.median(r for r, _ in ratios):.3f}, highest {worst[0]:.3f} ({worst[1]})."))
    rows = [[m["Callset"], m["Regions"], f"{m['MB read']:,.2f}", f"{m['GETs']:,}", m["Read / BAM size"]]
            for m in metrics]
    out.append(_table(["callset", "regions", "MB read by functions", "GETs", "BAM bytes read / BAM size"], rows))
    for sample, manifest in run.align.items():
        parts = manifest.parts
        out.append(f"<p>Alignment of {escape(sample)}: {len(parts)} chunks read "
                   f"{_mb(sum(p['get_bytes'] for p in parts))} in {sum(p['gets'] for p in parts):,} GETs.</p>")
    return "\n".join(out)


def _cost_section(run: Run, prices: dict[str, Any]) -> str:
    functions = run.functions()
    cost = estimate_cost(functions, prices)
    cur = prices["currency"]
    out = ["<h2>Estimated cloud cost</h2>",
           f"<p>If the {len(functions):,} functions that made these results ran as cloud functions reading "
           f"from an object store, at the prices below: <strong>{_money(cost.total, cur)}</strong>.</p>",
           _table(["item", "amount", "price", "cost"], [
               ["compute", f"{cost.gb_seconds:,.1f} GB-s", f"{prices['per_gb_second']:g} {cur} per GB-s",
                _money(cost.compute, cur)],
               ["invocations", f"{cost.invocations:,}", f"{prices['per_million_invocations']:g} {cur} per million",
                _money(cost.invocations * prices["per_million_invocations"] / 1e6, cur)],
               ["GET requests", f"{cost.gets:,}", f"{prices['per_thousand_gets']:g} {cur} per 1000",
                _money(cost.gets * prices["per_thousand_gets"] / 1e3, cur)],
               ["PUT requests", f"{cost.puts:,}", f"{prices['per_thousand_puts']:g} {cur} per 1000",
                _money(cost.puts * prices["per_thousand_puts"] / 1e3, cur)],
           ]),
           f'<p class="note">Price table (config <code>report.cost</code>): {escape(prices["source"])}; '
           f"each function given {prices['function_memory_mb']:,} MB. GB-seconds: every attempt's seconds "
           f"(measured inside the function) times its memory; PUTs: 2 per finished function (its output and "
           f"its stats). Fragments reused from an earlier run are counted at what they cost then. Not counted: "
           f"the local steps (staging, planning, merging), data transfer and storage per month.</p>"]
    return "\n".join(out)


def _steps_section(run: Run) -> str:
    if not run.steps:
        return ""
    t0 = run.steps[0][1]
    rows = [[name, f"{start - t0:.1f}", f"{secs:.1f}" if secs >= 0.05 else "< 0.1"] for name, start, secs in run.steps]
    return ("<h2>Steps</h2>" + _table(["step (log in work/logs/)", "started (s after the first)", "seconds"], rows)
            + '<p class="note">From the first and last time stamps of each step\'s log.</p>')


def _time_section(run: Run) -> str:
    b = run.breakdown
    if b is None or b.wall <= 0:
        return ""
    rows = [[label, f"{secs:.2f}", f"{100 * secs / b.wall:.0f} %"] for label, secs in b.rows()]
    rows.append(["wall: the first step's start to this report's", f"{b.wall:.2f}", ""])
    rows.append(["fixed cost: the wall minus the time any function was running", f"{b.fixed:.2f}",
                 f"{100 * b.fixed / b.wall:.0f} %"])
    inside = ", ".join(f"{escape(k)} {v:.2f} s" for k, v in sorted(b.function_phases.items(), key=lambda kv: -kv[1]))
    note = (f"Inside the {b.functions} functions run now ({b.function_seconds:.2f} s summed): {inside}. "
            if b.functions and inside else "")
    return ("<h2>Where the time went</h2>" + _table(["phase", "seconds", "share"], rows)
            + f'<p class="note">{note}Each instant of the wall goes to the most specific thing running then: a '
              "function, else a step's work, else a step's start (its interpreter and imports); the rest is "
              "Snakemake's own (its start, scheduling between jobs, each step's exit). From the timing line at the "
              "end of each step's log and the functions' stats (pipeline/phases.py).</p>")


def render(run: Run, prices: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    """The report page as one string (``metrics``: :func:`callset_metrics` of each callset)."""
    made = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Variant-calling run report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>Variant-calling run report</h1>",
        f'<p class="note">serverless-variant-calling; written {made}. Callsets: '
        f"{escape(', '.join(cs.name for cs in run.callsets))}.</p>",
        _warnings_section(run), _summary_section(run), _variants_section(run), _coverage_section(run),
        _minority_section(run), _fanout_section(run),
        _bytes_section(run, metrics), _cost_section(run, prices), _time_section(run), _steps_section(run),
        "</body></html>",
    ]) + "\n"


def mqc_table(metrics: list[dict[str, Any]], prices: dict[str, Any]) -> str:
    """The run metrics (:func:`callset_metrics` of each callset) as a MultiQC
    custom-content table (``*_mqc.tsv``)."""
    head = [
        "# id: 'svc_run_metrics'",
        "# section_name: 'Serverless variant calling: run metrics'",
        "# description: 'Per callset: regions, functions, bytes read and the estimated cloud cost "
        f"({prices['currency']}; results/report.html states the price table).'",
        "# plot_type: 'table'",
        "# pconfig:",
        "#     id: 'svc_run_metrics_table'",
        "#     namespace: 'svc'",
        "\t".join(MQC_COLUMNS),
    ]
    rows = ["\t".join(str(m[c]) for c in MQC_COLUMNS) for m in metrics]
    return "\n".join(head + rows) + "\n"


def build_report(run: Run, prices: dict[str, Any], out_html: str | Path, out_mqc: str | Path,
                 out_minority: str | Path | None = None, out_versions: str | Path | None = None) -> None:
    """Write the page, the MultiQC table and, if asked, the minority-variant table
    :func:`minority_tsv` (``out_minority``) and what the run ran on
    (``out_versions``: :func:`pipeline.provenance.versions_tsv`), each under a temporary
    name, all renamed once all are written."""
    metrics = [callset_metrics(cs, prices) for cs in run.callsets]
    outputs = {str(out_mqc): mqc_table(metrics, prices)}
    if out_versions is not None:
        outputs[str(out_versions)] = run.versions
    if out_minority is not None:
        if run.viral is None:
            raise ReportError("the minority-variant table needs the depth tracks and allele frequencies of the "
                              "lowfreq engine: set calling.engine: lowfreq")
        outputs[str(out_minority)] = minority_tsv(run.viral)
    outputs[str(out_html)] = render(run, prices, metrics)  # renamed last
    with atomic_outputs(*outputs) as temps:
        for tmp, text in zip(temps, outputs.values(), strict=True):
            Path(tmp).write_text(text)
    logger.info("run report: %s (%d callsets, %d function runs); MultiQC table: %s", out_html,
                len(run.callsets), len(run.attempts), out_mqc)
    if run.viral is not None and out_minority is not None:
        logger.info("minority variants: %s (%d alleles x %d samples)", out_minority, len(run.viral.alleles),
                    len(run.viral.samples))
