#!/usr/bin/env python
"""The benchmark harness: every caller on the same data in one run, one table, and a
scaling model of a human genome in the cloud.

``python bench/harness.py`` (about 6 minutes on 2 cores, 2 of them generating the data
on the first run):

1. Generates, or reuses from ``--data`` (default ``~/.cache/svc-bench``), two datasets:

   * germline: ``test_data/generate.py`` (seed 42), 5 Mb, 30x, 2 x 150 bp, sampleA,
     with its truth VCF (``truth/sampleA.vcf.gz``);
   * viral: ``test_data/viral.py`` (seed 7), a 30 kb mixture at 5000x with minor
     haplotypes at 50 % to 1 % (216 true alleles, ``truth.vcf.gz``) and error hotspots.

2. Runs each tool in its own process tree, ``--repeats`` times (default 1):

   germline
     * the pipeline through the real ``snakemake`` CLI in a scratch folder, Lithops
       localhost with 2 workers and the local object store (``--regions``, 16);
     * the same with a local Ceph RADOS Gateway as the S3 store
       (``tests/services/ceph.sh``; started before and stopped after that run, also on
       an error or Ctrl-C; it needs ports 7480, 3300 and 6789, so it cannot run while
       the test suite's Ceph does: the harness says so and stops);
     * ``bcftools mpileup | bcftools call -m``, Debian's bcftools, one process: the
       baseline of the ratio column; the pipeline's own parameters
       (``calling.bcftools`` of ``config/config.yaml``);
     * the same through pysam's bcftools (the pipeline's engine,
       :func:`functions.bcftools_engine.run_bcftools`), one process: its VCF must be
       record for record the pipeline's;
     * bcftools over ``--scatter-regions`` equal-length regions, ``parallel -j2``,
       then ``bcftools concat``;
     * ``freebayes`` (defaults), one process;
     * freebayes-parallel's recipe: ``parallel -k -j2`` over the same regions, then
       the first header, sorted records, duplicates at region edges dropped
       (``vcffirstheader | vcfstreamsort | vcfuniq``, done here in Python).

   viral
     * the pipeline with ``config/lowfreq.yaml`` (engine ``lowfreq``);
     * ``bcftools mpileup | call -m --ploidy 1`` (max depth 100,000), one process;
     * ``samtools mpileup -aa -A -d 0 -B -Q 0 | ivar variants -q 20 -t 0.01``.

3. Scores every tool against its truth: germline with
   :func:`bench.evaluation.vcfcompare.accuracy` (CHROM, POS, REF, ALT after ``bcftools norm``;
   genotypes ignored), SNVs and indels together, freebayes' calls with QUAL >= 20;
   viral with :mod:`bench.evaluation.afeval`: every designed allele is a truth (1 % to 50 %),
   calls are PASS records (iVar: PASS=TRUE rows), anything else called is a false
   positive.

4. Prints one table (wall, CPU, peak RSS, ratio, precision, recall, F1), the scaling
   model (10, 100, 1000 functions for a 30x human genome, every assumption stated),
   and writes the same as JSON (``--json``) and Markdown (``--markdown``) with the
   machine, the tool versions and the command. The full run (every tool, the default
   datasets) writes ``bench/results.json`` and ``bench/RESULTS.md`` unless told
   otherwise; any other run writes only the files it is given, so that it never
   replaces the committed results of the full run.

Prints figures; asserts nothing. Exit status 0 when every selected tool ran, 1 when
one failed (its row says why), 2 when the harness could not start.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))  # ceph_gateway: the tests' Ceph gateway

import scaling  # noqa: E402
from bench_align import ToolError, timed  # noqa: E402
from bench_cohort import background_cores, machine_cpu, phases, workflow_dir  # noqa: E402
from bench_cohort import ensure_data as ensure_germline  # noqa: E402
from bench_lowfreq import ensure_data as ensure_viral  # noqa: E402

from bench.evaluation.vcfcompare import Accuracy, accuracy, vcf_body  # noqa: E402
from functions.bcftools_engine import BcftoolsParams  # noqa: E402
from pipeline.phases import run_breakdown  # noqa: E402

SAMPLE = "sampleA"
VIRAL_SAMPLE = "mixture"
CEPH_PORTS = (7480, 3300, 6789)  # the gateway, the monitor (v2, v1): fixed in tests/services/ceph.sh
VIRAL_BCFTOOLS = BcftoolsParams(ploidy=1, max_depth=100_000)  # as bench_lowfreq's bcftools run
GERMLINE_TOOLS = ("pipeline", "pipeline-ceph", "pipeline-cram", "bcftools", "bcftools-pysam", "bcftools-scatter",
                  "freebayes", "freebayes-parallel")
VIRAL_TOOLS = ("viral-pipeline", "viral-bcftools", "viral-ivar")
BASELINE = {"germline": "bcftools", "viral": "viral-bcftools"}

COLUMNS = {
    "wall s": "wall-clock seconds of the tool's whole run (for the pipeline: the snakemake command, all steps, "
              "from start to exit); median over the repeats",
    "CPU s": "user + system CPU seconds of the tool's process tree (the process and every descendant it waited "
             "for, from wait4); median over the repeats. Not counted: processes that detach (Lithops' cleaner, "
             "about 0.2 s) and the Ceph daemons (given in the notes)",
    "max RSS MiB": "peak resident memory of the largest single process of the tree (GNU time's %M: wait4's "
                   "ru_maxrss), max over the repeats; not the sum over processes",
    "ratio": "wall / wall of the single-process Debian bcftools run on the same dataset (germline: diploid, the "
             "pipeline's parameters; viral: --ploidy 1)",
    "precision, recall, F1": "against the dataset's truth (germline: SNVs and indels together; viral: every "
                             "designed allele); see 'Scoring'",
}


# -- small pure helpers (unit-tested) ---------------------------------------------------
def split_regions(contigs: list[tuple[str, int]], n: int) -> list[tuple[str, int, int]]:
    """Regions covering every contig, in order, as 0-based half-open ``(chrom, start,
    end)``: each contig gets pieces in proportion to its length (largest remainders
    first), cut in equal lengths, as ``fasta_generate_regions.py`` cuts by size. ``n``
    regions, unless contigs too short for a piece of their own still need one each."""
    total = sum(length for _, length in contigs)
    shares = [length * n / total for _, length in contigs]
    pieces = [max(1, int(x)) for x in shares]
    for i in sorted(range(len(contigs)), key=lambda i: int(shares[i]) - shares[i]):
        if sum(pieces) >= n:
            break
        pieces[i] += 1
    out = []
    for (chrom, length), k in zip(contigs, pieces, strict=True):
        cuts = [length * j // k for j in range(k + 1)]
        out += [(chrom, a, b) for a, b in zip(cuts, cuts[1:], strict=False)]
    return out


def bcftools_region(r: tuple[str, int, int]) -> str:
    """A region as bcftools' ``--regions`` takes it: 1-based, inclusive."""
    return f"{r[0]}:{r[1] + 1}-{r[2]}"


def freebayes_region(r: tuple[str, int, int]) -> str:
    """A region as freebayes' ``--region`` takes it: 0-based, end excluded."""
    return f"{r[0]}:{r[1]}-{r[2]}"


def merge_region_vcfs(lines: Iterable[str]) -> Iterator[str]:
    """What freebayes-parallel pipes its ``parallel -k`` output through
    (``vcffirstheader | vcfstreamsort | vcfuniq``): the first VCF header only (up to its
    ``#CHROM`` line; a region without records adds no second one), the records sorted by
    contig (in the header's ``##contig`` order, else first seen) and position (stable),
    and a record dropped when one with the same CHROM, POS, REF and ALT came before it
    (regions overlapping at their edges)."""
    header: list[str] = []
    records: list[str] = []
    for line in lines:
        if line.startswith("#"):
            if not header or not header[-1].startswith("#CHROM"):
                header.append(line)
        elif line.strip():
            records.append(line if line.endswith("\n") else line + "\n")
    order = {line.split("ID=", 1)[1].split(",", 1)[0].rstrip(">\n"): i
             for i, line in enumerate(h for h in header if h.startswith("##contig=<"))}
    for rec in records:
        order.setdefault(rec.split("\t", 1)[0], len(order))

    def key(rec: str) -> tuple[int, int]:
        chrom, pos = rec.split("\t", 2)[:2]
        return order[chrom], int(pos)

    yield from header
    seen: set[tuple[str, ...]] = set()
    last_pos: tuple[int, int] | None = None
    for rec in sorted(records, key=key):
        pos = key(rec)
        if pos != last_pos:
            seen, last_pos = set(), pos
        f = rec.split("\t", 5)
        ident = (f[0], f[1], f[3], f[4])
        if ident not in seen:
            seen.add(ident)
            yield rec


def combined(acc: dict[str, Accuracy]) -> Accuracy:
    """SNVs and indels together."""
    return Accuracy("all", *(sum(getattr(a, k) for a in acc.values()) for k in ("tp", "fp", "fn")))


def prf(tp: int, fp: int, fn: int) -> tuple[float | None, float, float]:
    """Precision, recall and F1 as :class:`bench.evaluation.vcfcompare.Accuracy` defines them,
    except that precision is None (not 1) when nothing was called."""
    a = Accuracy("all", tp, fp, fn)
    return (a.precision if tp + fp else None), a.recall, a.f1


# -- results ------------------------------------------------------------------------------
@dataclass
class Row:
    """One tool on one dataset: its runs and its calls scored against the truth."""

    dataset: str
    key: str
    tool: str
    command: str = ""
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    rsss: list[float] = field(default_factory=list)
    others_cpu: list[float] = field(default_factory=list)  # CPU the rest of the machine used meanwhile
    tp: int | None = None
    fp: int | None = None
    fn: int | None = None
    classes: dict[str, dict[str, int]] = field(default_factory=dict)
    ratio: float | None = None
    notes: list[str] = field(default_factory=list)
    failed: str = ""

    @property
    def wall(self) -> float | None:
        return statistics.median(self.walls) if self.walls else None

    @property
    def cpu(self) -> float | None:
        return statistics.median(self.cpus) if self.cpus else None

    @property
    def rss(self) -> float | None:
        return max(self.rsss) if self.rsss else None

    @property
    def scores(self) -> tuple[float | None, float, float] | None:
        return None if self.tp is None else prf(self.tp, self.fp or 0, self.fn or 0)

    def as_dict(self) -> dict[str, Any]:
        s = self.scores
        return {**asdict(self), "wall_s": self.wall, "cpu_s": self.cpu, "max_rss_mib": self.rss,
                "precision": s and s[0], "recall": s and s[1], "f1": s and s[2]}


@dataclass
class Timing:
    wall: float
    cpu: float
    rss: float
    others: float | None


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def measure(cmd: list[str], env: dict[str, str] | None = None) -> Timing:
    """Run ``cmd`` (stdout discarded) as :func:`bench_align.timed` does, and the CPU the
    rest of the machine used meanwhile.

    The peak RSS comes from GNU time (``/usr/bin/time -f %M``: the same wait4 figure, of
    its child): a process forked from this one starts with this process' RSS, which
    wait4 would report as a floor of about 80 MiB. Without GNU time that floor stays
    (the notes then say so).
    """
    with tempfile.TemporaryDirectory(prefix="svc-time-") as tmp:
        rss_file = Path(tmp) / "maxrss"
        wrapped = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd] if GNU_TIME else cmd
        before = machine_cpu()
        wall, cpu, rss = timed(wrapped, env=env)
        after = machine_cpu()
        if GNU_TIME:
            rss = int(rss_file.read_text().split()[-1]) / 1024
    others = max(0.0, after[0] - before[0] - cpu) if before and after else None
    return Timing(wall, cpu, rss, others)


def bash(script: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", script]


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table_rows(rows: list[Row]) -> list[list[str]]:
    """The table's cells: dataset, tool, wall, CPU, RSS, ratio, precision, recall, F1."""
    out = []
    for r in rows:
        s = r.scores
        out.append([r.dataset, r.tool, _fmt(r.wall, ".1f"), _fmt(r.cpu, ".1f"), _fmt(r.rss, ".0f"),
                    _fmt(r.ratio, ".2f"), _fmt(s and s[0], ".4f"), _fmt(s and s[1], ".4f"), _fmt(s and s[2], ".4f")])
    return out


HEAD = ["dataset", "tool", "wall s", "CPU s", "max RSS MiB", "ratio", "precision", "recall", "F1"]


def text_table(rows: list[Row]) -> str:
    cells = table_rows(rows)
    widths = [max(len(c[i]) for c in [HEAD, *cells]) for i in range(len(HEAD))]
    line = "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(HEAD, widths, strict=True)))
    out = [line, "-" * len(line)]
    for r, c in zip(rows, cells, strict=True):
        text = "  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths, strict=True)))
        out.append(text + (f"   FAILED: {r.failed}" if r.failed else ""))
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    out = ["| " + " | ".join(HEAD) + " |", "|---|---|" + "---:|" * (len(HEAD) - 2)]
    for r, c in zip(rows, table_rows(rows), strict=True):
        c[1] = c[1] + (f" (**failed**: {r.failed})" if r.failed else "")
        out.append("| " + " | ".join(x.replace("|", "\\|") for x in c) + " |")
    return "\n".join(out)


# -- the machine ---------------------------------------------------------------------------
def _first_line(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (res.stdout or res.stderr).strip()
    return text.splitlines()[0].strip() if text else "?"


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python and the versions of every tool benchmarked."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    mem = next((int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), 0) if Path("/proc/meminfo").exists() else 0
    osr = Path("/etc/os-release")
    pretty = next((ln.split("=", 1)[1].strip('"') for ln in osr.read_text().splitlines()
                   if ln.startswith("PRETTY_NAME=")), platform.system()) if osr.exists() else platform.system()
    from functions.bcftools_engine import bcftools_version

    def pkg(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu": model, "cores": os.cpu_count(), "ram_gib": round(mem / 2**20, 1),
        "os": f"{pretty}, Linux {platform.release()}", "python": platform.python_version(),
        "tools": {
            "bcftools (Debian)": _first_line(["bcftools", "--version"]),
            "bcftools (pysam, the pipeline's engine)": bcftools_version(),
            "freebayes": _first_line(["freebayes", "--version"]).replace("version:", "").strip(),
            "ivar": _first_line(["ivar", "version"]),
            "samtools": _first_line(["samtools", "--version"]),
            "GNU parallel": _first_line(["parallel", "--version"]),
            "ceph (radosgw)": _first_line(["radosgw", "--version"]).split(" (")[0],
            "lithops": pkg("lithops"), "snakemake": pkg("snakemake"), "pysam": pkg("pysam"),
        },
    }


# -- the pipeline -----------------------------------------------------------------------------
def run_workflow(run_dir: Path, samples: dict[str, Path], reference: Path, overrides: dict[str, Any],
                 overlays: tuple[Path, ...] = ()) -> tuple[Timing, dict[str, Any], str]:
    """The workflow through the real ``snakemake`` CLI in a fresh ``run_dir``: the
    project's config with ``overlays`` (config files) and ``overrides`` laid on top, the
    reference and a sheet of ``samples``; ``TMPDIR`` (so Lithops' local store) inside
    ``run_dir``. Returns its timing, its phases (:func:`bench_cohort.phases`) and the
    command line (with the config changes as a comment)."""
    cmd, env = workflow_dir(run_dir, samples, reference, overrides, overlays)
    start = time.time()
    t = measure(cmd, env=env)
    changes = ", ".join(f"{k}={v}" for k, v in flatten(overrides).items())
    overlaid = "".join(f" + {o.relative_to(ROOT)}" for o in overlays)
    command = f"TMPDIR={run_dir / 'tmp'} {shlex.join(cmd)}  # config/config.yaml{overlaid}, {changes}"
    ph = phases(run_dir, list(samples), start, t.wall)
    ph["breakdown"] = run_breakdown(run_dir / "work", start, start + t.wall)
    return t, ph, command


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def busy_ports(ports: Iterable[int], host: str = "127.0.0.1") -> list[int]:
    """The ports in ``ports`` something listens on."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                busy.append(port)
    return busy


def ceph_missing() -> str:
    """Empty if Ceph's daemons and boto3 are there, else what is missing."""
    missing = [t for t in ("monmaptool", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph")
               if shutil.which(t) is None]
    try:
        import boto3  # noqa: F401
    except ImportError:
        missing.append("boto3 (pip)")
    return f"not installed: {' '.join(missing)} (bash tests/install.sh installs them)" if missing else ""


def ceph_cpu(state: Path) -> float:
    """CPU seconds the Ceph daemons of ``state`` have used so far (from /proc)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pidfile in (state / "run").glob("*.pid"):
        try:
            fields = Path(f"/proc/{pidfile.read_text().strip()}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return total


@contextmanager
def ceph_gateway(state: Path, bucket: str = "svc-bench") -> Iterator[dict[str, str]]:
    """The tests' Ceph RADOS Gateway (tests/ceph_gateway.py: tests/services/ceph.sh) with an
    empty ``bucket``, stopped on leaving, whatever happens. Yields endpoint, keys and bucket."""
    from ceph_gateway import CephError
    from ceph_gateway import ceph_gateway as gateway

    try:
        with gateway(state, bucket) as ceph:
            yield ceph
    except CephError as exc:
        raise ToolError(f"could not start Ceph: {str(exc)[-500:]}") from exc


def ceph_lithops_config(ceph: dict[str, str], path: Path) -> Path:
    """``config/lithops/ceph.yaml`` with the gateway's endpoint, keys and bucket, at ``path``."""
    cfg = yaml.safe_load((ROOT / "config" / "lithops" / "ceph.yaml").read_text())
    cfg["ceph"] = {**cfg["ceph"], "endpoint": ceph["endpoint"], "access_key_id": ceph["access_key"],
                   "secret_access_key": ceph["secret_key"], "storage_bucket": ceph["bucket"]}
    path.write_text(yaml.safe_dump(cfg))
    return path


# -- the benchmark ------------------------------------------------------------------------------
@dataclass
class Context:
    args: argparse.Namespace
    work: Path
    germline: Path | None = None
    viral: Path | None = None
    params: BcftoolsParams = field(default_factory=BcftoolsParams)
    regions: list[tuple[str, int, int]] = field(default_factory=list)
    pipeline_run: dict[str, Any] = field(default_factory=dict)  # the germline local run, for the scaling model
    vcfs: dict[str, Path] = field(default_factory=dict)  # tool key -> its last VCF
    generated: list[str] = field(default_factory=list)  # datasets generated (not reused) in this run
    # tool key -> where its workflow run's time went (pipeline.phases), last repeat
    breakdowns: dict[str, Any] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)  # when the harness started


def contigs_of(fai: Path) -> list[tuple[str, int]]:
    return [(f[0], int(f[1])) for f in (ln.split("\t") for ln in fai.read_text().splitlines() if ln)]


def score_germline(ctx: Context, row: Row, vcf: Path, min_qual: float = 0.0) -> None:
    assert ctx.germline is not None
    acc = accuracy(str(vcf), str(ctx.germline / "truth" / f"{SAMPLE}.vcf.gz"), str(ctx.germline / "ref.fa"),
                   min_qual)
    a = combined(acc)
    row.tp, row.fp, row.fn = a.tp, a.fp, a.fn
    row.classes = {k: {"tp": v.tp, "fp": v.fp, "fn": v.fn} for k, v in acc.items()}


def score_viral(ctx: Context, row: Row, calls: dict[Any, Any]) -> None:
    from bench.evaluation.afeval import evaluate, read_artefacts, read_truth

    assert ctx.viral is not None
    truth = read_truth(str(ctx.viral / "truth.vcf.gz"))
    ev = evaluate(calls, truth, ctx.args.viral_length, artefacts=read_artefacts(str(ctx.viral / "artefacts.tsv")))
    tp = sum(tp for tp, _ in ev.found["all"].values())
    row.tp, row.fp, row.fn = tp, len(ev.false_positives), len(ev.false_negatives)
    row.classes = {kind: {"tp": sum(tp for tp, _ in ev.found[kind].values()),
                          "n": sum(n for _, n in ev.found[kind].values())} for kind in ("snv", "indel")}
    row.classes["false_positives_at_artefacts"] = {"n": len(ev.artefact_false_positives)}


def bcftools_pipe(ref: Path, bam: Path, params: BcftoolsParams, out: Path, region: str | None = None,
                  fmt: str = "v", regions_file: Path | None = None) -> str:
    """``bcftools mpileup | bcftools call`` with ``params`` (as the pipeline's engine
    builds them), Debian's bcftools, writing ``out`` in format ``fmt``; over ``region``
    or the regions in ``regions_file`` (for contig names holding ``:``) if given."""
    mp = ["bcftools", "mpileup", "--fasta-ref", str(ref), *params.mpileup_args(), "-Ou",
          *(["--regions", region] if region else []),
          *(["--regions-file", str(regions_file)] if regions_file else []), str(bam)]
    call = ["bcftools", "call", *params.call_args(str(out.parent)), f"-O{fmt}", "-o", str(out)]
    return shlex.join(mp) + " | " + shlex.join(call)


def parallel_jobs(jobs: list[str], path: Path, keep_order: bool = False) -> str:
    """GNU parallel running the shell commands in ``jobs`` (written to ``path``), 2 at a
    time; with ``keep_order`` their outputs come in the order of ``jobs`` (``-k``)."""
    path.write_text("".join(j + "\n" for j in jobs))
    return f"parallel --will-cite --halt now,fail=1{' -k' if keep_order else ''} -j2 :::: {shlex.quote(str(path))}"


def run_germline_tool(ctx: Context, row: Row, cmd: str | list[str], vcf: Path, min_qual: float = 0.0) -> Timing:
    """Time ``cmd`` (a shell line, or an argument list), then score the VCF it wrote."""
    row.command = row.command or (cmd if isinstance(cmd, str) else shlex.join(cmd))
    t = measure(bash(cmd) if isinstance(cmd, str) else cmd)
    ctx.vcfs[row.key] = vcf
    score_germline(ctx, row, vcf, min_qual)
    return t


def _run_pipeline_germline(ctx: Context, row: Row, out: Path, ceph: dict[str, str] | None = None,
                           bam: Path | None = None) -> Timing:
    assert ctx.germline is not None
    overrides: dict[str, Any] = {"plan": {"n_regions": ctx.args.regions},
                                 "storage": {"prefix": f"bench-{out.name}"}}
    if ceph:
        overrides["lithops_config"] = str(ceph_lithops_config(ceph, out.parent / f"{out.name}-lithops.yaml"))
        overrides["storage"]["bucket"] = ceph["bucket"]
    t, ph, row.command = run_workflow(out, {SAMPLE: bam or ctx.germline / f"{SAMPLE}.bam"},
                                      ctx.germline / "ref.fa", overrides)
    vcf = out / "results" / f"{SAMPLE}.vcf.gz"
    ctx.vcfs[row.key] = vcf
    if not ceph and bam is None:
        ctx.pipeline_run = {"dir": out, "phases": ph}
    ctx.breakdowns[row.key] = ph["breakdown"]
    row.notes = [f"phases: {ph['before_call']:.1f} s start+stage+plan, {ph['call']:.1f} s call step, "
                 f"{ph['after_call']:.1f} s merge+report, {ph['exit']:.1f} s exit; {ph['call_summary']}"
                 if ph.get("call") is not None else "phases: not available"]
    score_germline(ctx, row, vcf)
    return t


def tool_pipeline(ctx: Context, row: Row, out: Path) -> Timing:
    return _run_pipeline_germline(ctx, row, out)


def tool_pipeline_cram(ctx: Context, row: Row, out: Path) -> Timing:
    """The workflow on the germline BAM as a CRAM (``samtools view -C`` with samtools'
    defaults, made once beside the dataset and not timed)."""
    import pysam

    assert ctx.germline is not None
    cram = ctx.germline / f"{SAMPLE}.cram"
    if not (cram.exists() and Path(f"{cram}.crai").exists()):
        tmp = cram.with_suffix(".tmp.cram")
        pysam.view("-C", "-T", str(ctx.germline / "ref.fa"), "-o", str(tmp), str(ctx.germline / f"{SAMPLE}.bam"),
                   catch_stdout=False)
        pysam.index(str(tmp), str(f"{cram}.crai"))
        os.replace(tmp, cram)
    bam_size = (ctx.germline / f"{SAMPLE}.bam").stat().st_size
    t = _run_pipeline_germline(ctx, row, out, bam=cram)
    row.notes.append(f"the CRAM is {cram.stat().st_size / 1e6:.1f} MB, the BAM {bam_size / 1e6:.1f} MB")
    return t


def tool_pipeline_ceph(ctx: Context, row: Row, out: Path) -> Timing:
    busy = busy_ports(CEPH_PORTS)
    if busy:
        raise ToolError(f"port {busy[0]} is in use (the test suite's Ceph?): cannot start the gateway")
    state = out.parent / f"{out.name}-ceph"
    t0 = time.perf_counter()
    with ceph_gateway(state) as ceph:
        print(f"      Ceph gateway up at {ceph['endpoint']} in {time.perf_counter() - t0:.0f} s", flush=True)
        before = ceph_cpu(state)
        t = _run_pipeline_germline(ctx, row, out, ceph)
        daemons = ceph_cpu(state) - before
    row.notes.append(f"the Ceph daemons used {daemons:.1f} CPU s during the run (not in the CPU column); "
                     "the wall time includes uploading the BAM to the gateway")
    return t


def tool_bcftools(ctx: Context, row: Row, out: Path) -> Timing:
    assert ctx.germline is not None
    out.mkdir(parents=True, exist_ok=True)
    vcf = out / "calls.vcf"
    return run_germline_tool(ctx, row, bcftools_pipe(ctx.germline / "ref.fa", ctx.germline / f"{SAMPLE}.bam",
                                                     ctx.params, vcf), vcf)


def tool_bcftools_pysam(ctx: Context, row: Row, out: Path) -> Timing:
    assert ctx.germline is not None
    out.mkdir(parents=True, exist_ok=True)
    vcf = out / "calls.vcf"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-bcftools", str(ctx.germline / f"{SAMPLE}.bam"),
           str(ctx.germline / "ref.fa"), str(vcf)]
    row.command = shlex.join(cmd) + "  # functions.bcftools_engine.run_bcftools with calling.bcftools of the config"
    return run_germline_tool(ctx, row, cmd, vcf)


def tool_bcftools_scatter(ctx: Context, row: Row, out: Path) -> Timing:
    assert ctx.germline is not None
    out.mkdir(parents=True, exist_ok=True)
    ref, bam = ctx.germline / "ref.fa", ctx.germline / f"{SAMPLE}.bam"
    parts = [out / f"part{i:04d}.bcf" for i in range(len(ctx.regions))]
    jobs = [bcftools_pipe(ref, bam, ctx.params, p, bcftools_region(r), fmt="u") for p, r in zip(parts, ctx.regions,
                                                                                               strict=True)]
    (out / "parts.txt").write_text("".join(f"{p}\n" for p in parts))
    vcf = out / "calls.vcf"
    return run_germline_tool(ctx, row, parallel_jobs(jobs, out / "jobs.txt")
                             + f" && bcftools concat --file-list {shlex.quote(str(out / 'parts.txt'))} -Ov -o {vcf}",
                             vcf)


def tool_freebayes(ctx: Context, row: Row, out: Path) -> Timing:
    assert ctx.germline is not None
    out.mkdir(parents=True, exist_ok=True)
    vcf = out / "calls.vcf"
    cmd = shlex.join(["freebayes", "-f", str(ctx.germline / "ref.fa"), str(ctx.germline / f"{SAMPLE}.bam")])
    return run_germline_tool(ctx, row, f"{cmd} > {shlex.quote(str(vcf))}", vcf, ctx.args.freebayes_min_qual)


def tool_freebayes_parallel(ctx: Context, row: Row, out: Path) -> Timing:
    assert ctx.germline is not None
    out.mkdir(parents=True, exist_ok=True)
    ref, bam = ctx.germline / "ref.fa", ctx.germline / f"{SAMPLE}.bam"
    jobs = [shlex.join(["freebayes", "-f", str(ref), "--region", freebayes_region(r), str(bam)]) for r in ctx.regions]
    vcf = out / "calls.vcf"
    merge = shlex.join([sys.executable, str(Path(__file__).resolve()), "--merge-region-vcfs"])
    return run_germline_tool(ctx, row, parallel_jobs(jobs, out / "jobs.txt", keep_order=True)
                             + f" | {merge} > {shlex.quote(str(vcf))}", vcf, ctx.args.freebayes_min_qual)


def tool_viral_pipeline(ctx: Context, row: Row, out: Path) -> Timing:
    from bench.evaluation.afeval import read_vcf_calls

    assert ctx.viral is not None
    overrides: dict[str, Any] = {"storage": {"prefix": f"bench-{out.name}"}}
    if ctx.args.viral_regions:
        overrides["plan"] = {"n_regions": ctx.args.viral_regions}
    t, ph, row.command = run_workflow(out, {VIRAL_SAMPLE: ctx.viral / "mixture.bam"}, ctx.viral / "virus.fa",
                                      overrides, overlays=(ROOT / "config" / "lowfreq.yaml",))
    ctx.breakdowns[row.key] = ph["breakdown"]
    if ph.get("call") is not None:
        row.notes = [f"phases: {ph['before_call']:.1f} s start+stage+plan, {ph['call']:.1f} s call step, "
                     f"{ph['after_call']:.1f} s merge+report, {ph['exit']:.1f} s exit; {ph['call_summary']}"]
    vcf = out / "results" / f"{VIRAL_SAMPLE}.vcf.gz"
    score_viral(ctx, row, read_vcf_calls(str(vcf), str(ctx.viral / "virus.fa")))
    return t


def tool_viral_bcftools(ctx: Context, row: Row, out: Path) -> Timing:
    from bench.evaluation.afeval import read_vcf_calls

    assert ctx.viral is not None
    out.mkdir(parents=True, exist_ok=True)
    vcf = out / "calls.vcf"
    row.command = bcftools_pipe(ctx.viral / "virus.fa", ctx.viral / "mixture.bam", VIRAL_BCFTOOLS, vcf)
    t = measure(bash(row.command))
    score_viral(ctx, row, read_vcf_calls(str(vcf), str(ctx.viral / "virus.fa")))
    return t


def tool_viral_ivar(ctx: Context, row: Row, out: Path) -> Timing:
    from bench.evaluation.afeval import read_ivar_tsv

    assert ctx.viral is not None
    out.mkdir(parents=True, exist_ok=True)
    ref, bam, prefix = ctx.viral / "virus.fa", ctx.viral / "mixture.bam", out / "ivar"
    q = shlex.quote
    row.command = (f"samtools mpileup -aa -A -d 0 -B -Q 0 --reference {q(str(ref))} {q(str(bam))}"
                   f" | ivar variants -p {q(str(prefix))} -q 20 -t 0.01 -r {q(str(ref))}")
    t = measure(bash(row.command))
    score_viral(ctx, row, read_ivar_tsv(str(prefix) + ".tsv", str(ref)))
    return t


@dataclass(frozen=True)
class Tool:
    key: str
    dataset: str
    label: str
    run: Callable[[Context, Row, Path], Timing]


def tools(args: argparse.Namespace, n: int) -> list[Tool]:
    """Every tool the harness knows, in the order it runs them; ``n`` scattered regions."""
    fq = args.freebayes_min_qual
    return [
        Tool("pipeline", "germline", f"pipeline: snakemake, Lithops localhost, local store ({args.regions} regions, "
                                     "2 workers)", tool_pipeline),
        Tool("pipeline-ceph", "germline", "pipeline: the same, Ceph RADOS Gateway as S3 store", tool_pipeline_ceph),
        Tool("pipeline-cram", "germline", "pipeline: the same, the sample as a CRAM (samtools view -C)",
             tool_pipeline_cram),
        Tool("bcftools", "germline", "bcftools mpileup | call -m, one process (Debian)", tool_bcftools),
        Tool("bcftools-pysam", "germline", "bcftools via pysam (the pipeline's engine), one process",
             tool_bcftools_pysam),
        Tool("bcftools-scatter", "germline", f"bcftools, {n} regions, parallel -j2, concat", tool_bcftools_scatter),
        Tool("freebayes", "germline", f"freebayes, one process (QUAL >= {fq:g})", tool_freebayes),
        Tool("freebayes-parallel", "germline", f"freebayes, {n} regions, parallel -j2, sort+uniq (QUAL >= {fq:g})",
             tool_freebayes_parallel),
        Tool("viral-pipeline", "viral", "pipeline: snakemake, engine lowfreq, local store (2 workers)",
             tool_viral_pipeline),
        Tool("viral-bcftools", "viral", "bcftools mpileup | call -m --ploidy 1, one process (Debian)",
             tool_viral_bcftools),
        Tool("viral-ivar", "viral", "samtools mpileup | ivar variants -t 0.01 (PASS)", tool_viral_ivar),
    ]


def checks(ctx: Context) -> dict[str, str]:
    """Whether VCFs that must be equal are ("yes", "no" or "not run"): the pipeline's
    against its engine run alone, the Ceph run's against the local run's; and how many
    sites Debian's and pysam's bcftools versions call differently."""
    def same(a: str, b: str) -> str:
        if a not in ctx.vcfs or b not in ctx.vcfs:
            return "not run"
        return "yes" if vcf_body(str(ctx.vcfs[a])) == vcf_body(str(ctx.vcfs[b])) else "no"

    def site_diff(a: str, b: str) -> str:
        if a not in ctx.vcfs or b not in ctx.vcfs:
            return "not run"
        sa, sb = set(sites(ctx.vcfs[a])), set(sites(ctx.vcfs[b]))
        return f"{len(sa ^ sb)} of {len(sa | sb)} (QUAL and INFO values differ between the versions)"

    return {"pipeline VCF records identical to one pysam bcftools run": same("pipeline", "bcftools-pysam"),
            "Ceph-store pipeline VCF records identical to the local-store one": same("pipeline-ceph", "pipeline"),
            "CRAM pipeline VCF records identical to one pysam bcftools run (on the BAM the CRAM holds)":
                same("pipeline-cram", "bcftools-pysam"),
            "sites (CHROM, POS, REF, ALT) called by only one of Debian's and pysam's bcftools":
                site_diff("bcftools", "bcftools-pysam")}


def sites(vcf: Path) -> list[tuple[str, ...]]:
    """CHROM, POS, REF, ALT of every record."""
    return [tuple(line.split("\t", 5)[i] for i in (0, 1, 3, 4)) for line in vcf_body(str(vcf))]


# -- the scaling model ------------------------------------------------------------------------
def scaling_model(ctx: Context, cpu: str) -> dict[str, Any] | None:
    """The scaling model from the germline local pipeline run (None without one)."""
    if not ctx.pipeline_run or ctx.pipeline_run["phases"].get("call") is None:
        return None
    run_dir: Path = ctx.pipeline_run["dir"]
    vcf = run_dir / "results" / f"{SAMPLE}.vcf.gz"
    t0 = time.perf_counter()
    print(f"[scaling model, {scaling.fmt_duration(t0 - ctx.t0)} in] timing the merge on 200,000 synthetic records ...",
          flush=True)
    try:
        rate: float | None = scaling.calibrate_merge(vcf, ctx.germline / "ref.fa",  # type: ignore[operator]
                                                     run_dir / "work" / "calls" / f"{SAMPLE}.json")
    except Exception as exc:  # noqa: BLE001 - the model then says the merge is not scaled
        print(f"warning: merge calibration failed ({exc!r}); the merge time is not scaled", file=sys.stderr)
        rate = None
    if rate:
        print(f"      {rate:,.0f} records/s ({time.perf_counter() - t0:.1f} s)", flush=True)
    measured = scaling.measure_run(run_dir, SAMPLE, ctx.pipeline_run["phases"], len(vcf_body(str(vcf))), rate, cpu)
    a = ctx.args
    assumptions = scaling.Assumptions(bam_bytes=a.human_bam_gb * 1e9, records=a.human_records,
                                      overhead_s=a.overhead_s, bandwidth_mb_s=a.bandwidth_mb_s,
                                      concurrency=a.concurrency)
    prices, prices_from = scaling.load_prices()
    scenarios = [scaling.model(measured, assumptions, prices, n) for n in a.functions]
    return {"measured": measured, "assumptions": assumptions, "prices": prices, "prices_from": prices_from,
            "scenarios": scenarios,
            "lines": scaling.assumption_lines(measured, assumptions, prices, prices_from),
            "table": scaling.scenario_table(scenarios, prices["currency"])}


# -- reports ------------------------------------------------------------------------------------
SCORING = [
    "germline: calls against `truth/sampleA.vcf.gz` of the generator by CHROM, POS, REF and ALT after `bcftools "
    "norm -m -any` of both (bench/evaluation/vcfcompare.py `accuracy`), genotypes ignored, records with a 0/0 or "
    "missing genotype skipped; SNVs and indels together (per class in the JSON and below). bcftools calls are taken "
    "unfiltered, as the pipeline writes them; freebayes calls with QUAL >= {fq:g}, as a user would filter them. "
    "freebayes' MNP and complex alleles are not decomposed (no vcfallelicprimitives): each counts as a false "
    "positive and its SNVs as false negatives.",
    "viral: the designed truth of test_data/viral.py, every true allele from 1 % to 50 % "
    "(bench/evaluation/afeval.py `evaluate`); calls are FILTER=PASS records (iVar: PASS=TRUE rows) after "
    "`bcftools norm`; a call not in the truth is a false positive (those at the mixture's error hotspots included).",
]


def notes_lines(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        for n in r.notes:
            out.append(f"{r.dataset} / {r.tool}: {n}")
    return out


def class_lines(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        if r.classes and r.dataset == "germline":
            s, i = r.classes["snv"], r.classes["indel"]
            out.append(f"{r.tool}: SNV TP {s['tp']} FP {s['fp']} FN {s['fn']}; indel TP {i['tp']} FP {i['fp']} "
                       f"FN {i['fn']}")
        elif r.classes:
            s, i = r.classes["snv"], r.classes["indel"]
            out.append(f"{r.tool}: SNVs found {s['tp']}/{s['n']}, indels found {i['tp']}/{i['n']}, false positives "
                       f"{r.fp} ({r.classes['false_positives_at_artefacts']['n']} at artefact sites)")
    return out


def write_markdown(path: Path, report: dict[str, Any], rows: list[Row], model: dict[str, Any] | None) -> None:
    m = report["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/harness.py` on {report['date']}. Do not edit: run the harness again.",
        "",
        f"Command: `{report['command']}` (whole run {report['total_wall_s'] / 60:.1f} min, data "
        f"generated: {', '.join(report['generated']) or 'none, all reused'}; {report['data_s']:.0f} s of it).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['os']}; Python {m['python']}. "
        f"{report['background']}",
        "",
        "Tools: " + "; ".join(f"{k}: {v}" for k, v in m["tools"].items()) + ".",
        "",
        "Datasets: " + "; ".join(f"**{k}**: {v['what']}" for k, v in report["datasets"].items()) + ".",
        "",
        markdown_table(rows),
        "",
        "Columns:",
        "",
        *[f"- **{k}**: {v}." for k, v in COLUMNS.items()],
        "",
        "Scoring:",
        "",
        *[f"- {s}" for s in report["scoring"]],
        "",
        "Per class:",
        "",
        *[f"- {c}" for c in class_lines(rows)],
        "",
        "Checks:",
        "",
        *[f"- {k}: {v}" for k, v in report["checks"].items()],
        "",
        "Notes:",
        "",
        *[f"- {n}" for n in report["notes"]],
        "",
        f"Commands (last repeat; `$DATA` is {report['data']}, `$WORK` the scratch folder):",
        "",
        *[f"- {r.tool}: `{short_paths(r.command, report)}`" for r in rows if r.command],
        "",
    ]
    for b in report["breakdowns"].values():
        lines += [f"## Where the time went: {b['tool']}", "",
                  "Each instant of the run's wall goes to the most specific thing running then (a function, else a "
                  "step's work, else a step's start-up: interpreter and imports); the rest is Snakemake's own. "
                  "From the steps' timing lines and the functions' stats (`pipeline/phases.py`).", "",
                  "```", b["table"], "```", ""]
    if model:
        lines += ["## Scaling model: a 30x human genome in the cloud", "",
                  "Modelled from the germline pipeline run above (`bench/scaling.py`); nothing here ran in a cloud.",
                  "", "```", model["table"], "```", "", "Inputs:", "", "```", *model["lines"], "```", ""]
    path.write_text("\n".join(lines))


def short_paths(text: str, report: dict[str, Any]) -> str:
    """``text`` with the data folder, the scratch folder and this Python written as
    ``$DATA``, ``$WORK`` and ``python``."""
    for path, name in ((report["work"], "$WORK"), (report["data"], "$DATA"), (sys.executable, "python"),
                       (str(ROOT) + "/", "")):
        text = text.replace(str(path), name)
    return text


def to_json(x: Any) -> Any:
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "as_dict"):
        return to_json(x.as_dict())
    if hasattr(x, "__dataclass_fields__"):
        return to_json(asdict(x))
    if isinstance(x, dict):
        return {str(k): to_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_json(v) for v in x]
    return x


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache" / "svc-bench",
                    help="dataset cache folder (one subfolder per dataset and parameters; reused when complete)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (every tool's output)")
    ap.add_argument("--json", type=Path, default=None,
                    help="results as JSON (the full run: bench/results.json unless given)")
    ap.add_argument("--markdown", type=Path, default=None,
                    help="results as Markdown (the full run: bench/RESULTS.md unless given)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each tool; medians are reported")
    ap.add_argument("--tools", default=",".join(GERMLINE_TOOLS + VIRAL_TOOLS),
                    help="comma-separated subset of: " + ", ".join(GERMLINE_TOOLS + VIRAL_TOOLS))
    ap.add_argument("--no-ceph", action="store_true", help="skip the Ceph-store pipeline run")
    g = ap.add_argument_group("germline dataset and tools")
    g.add_argument("--genome-size", type=int, default=5_000_000)
    g.add_argument("--coverage", type=float, default=30.0)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--regions", type=int, default=16, help="plan.n_regions of the germline pipeline runs")
    g.add_argument("--scatter-regions", type=int, default=16, help="regions of the parallel bcftools/freebayes runs")
    g.add_argument("--freebayes-min-qual", type=float, default=20.0, help="QUAL filter of freebayes' calls")
    v = ap.add_argument_group("viral dataset and tools")
    v.add_argument("--viral-length", type=int, default=30_000)
    v.add_argument("--viral-depth", type=float, default=5000.0)
    v.add_argument("--viral-seed", type=int, default=7)
    v.add_argument("--viral-regions", type=int, default=None,
                   help="plan.n_regions of the lowfreq pipeline run (default: config/lowfreq.yaml's)")
    s = ap.add_argument_group("scaling model (assumptions)")
    s.add_argument("--functions", type=lambda x: [int(n) for n in x.split(",")], default=[10, 100, 1000],
                   help="function counts to model")
    s.add_argument("--human-bam-gb", type=float, default=100.0)
    s.add_argument("--human-records", type=float, default=4.5e6)
    s.add_argument("--overhead-s", type=float, default=2.0, help="invocation overhead per function, s")
    s.add_argument("--bandwidth-mb-s", type=float, default=75.0, help="object store bandwidth per function, MB/s")
    s.add_argument("--concurrency", type=int, default=1000, help="functions running at once")
    args = ap.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    unknown = set(args.tools) - set(GERMLINE_TOOLS + VIRAL_TOOLS)
    if unknown:
        ap.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if args.no_ceph and "pipeline-ceph" in args.tools:
        args.tools.remove("pipeline-ceph")
    if is_full_run(ap, args):
        args.json = args.json or ROOT / "bench" / "results.json"
        args.markdown = args.markdown or ROOT / "bench" / "RESULTS.md"
    return args


# What makes a run the one bench/RESULTS.md records: every tool, on the default datasets.
FULL_RUN_DEFAULTS = ("genome_size", "coverage", "seed", "regions", "scatter_regions", "freebayes_min_qual",
                     "viral_length", "viral_depth", "viral_seed", "viral_regions", "repeats")


def is_full_run(ap: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Does this run select every tool on the default datasets and settings?"""
    return (sorted(args.tools) == sorted(GERMLINE_TOOLS + VIRAL_TOOLS)
            and all(getattr(args, name) == ap.get_default(name) for name in FULL_RUN_DEFAULTS))


def prepare_data(ctx: Context) -> float:
    """Generate or reuse the datasets the selected tools need; the seconds it took."""
    a, t0 = ctx.args, time.perf_counter()
    a.data.mkdir(parents=True, exist_ok=True)
    if any(t in GERMLINE_TOOLS for t in a.tools):
        ctx.germline = a.data / f"germline-{a.genome_size}-{a.coverage:g}x-s{a.seed}"
        if not (ctx.germline / f"{SAMPLE}.bam.bai").exists():
            ctx.generated.append("germline")
        ensure_germline(ctx.germline, a.genome_size, a.coverage, a.seed, 1)
        ctx.regions = split_regions(contigs_of(ctx.germline / "ref.fa.fai"), a.scatter_regions)
    if any(t in VIRAL_TOOLS for t in a.tools):
        ctx.viral = a.data / f"viral-{a.viral_length}-{a.viral_depth:g}x-s{a.viral_seed}"
        if not (ctx.viral / "mixture.bam.bai").exists():
            ctx.generated.append("viral")
        ensure_viral(ctx.viral, seed=a.viral_seed, genome_length=a.viral_length, depth=a.viral_depth)
    return time.perf_counter() - t0


def run_tools(ctx: Context) -> list[Row]:
    """Every selected tool, ``repeats`` times, with a progress line before and after each."""
    selected = [t for t in tools(ctx.args, len(ctx.regions)) if t.key in ctx.args.tools]
    rows = {t.key: Row(t.dataset, t.key, t.label) for t in selected}
    total, i = len(selected) * ctx.args.repeats, 0
    for rep in range(ctx.args.repeats):
        for tool in selected:
            i += 1
            row = rows[tool.key]
            if row.failed:
                continue
            print(f"[{i:>2}/{total}, {scaling.fmt_duration(time.perf_counter() - ctx.t0)} in] {tool.dataset}: "
                  f"{tool.label} ...", flush=True)
            t0 = time.perf_counter()
            try:
                t = tool.run(ctx, row, ctx.work / f"{tool.key}-{rep + 1}")
            except Exception as exc:  # one tool failing (or its scoring) must not lose the others' results
                row.failed = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else repr(exc)
                print(f"      FAILED after {time.perf_counter() - t0:.1f} s: {exc!r}", file=sys.stderr, flush=True)
                continue
            row.walls.append(t.wall)
            row.cpus.append(t.cpu)
            row.rsss.append(t.rss)
            if t.others is not None:
                row.others_cpu.append(t.others)
            s = row.scores
            print(f"      {t.wall:.1f} s wall, {t.cpu:.1f} s CPU, {t.rss:.0f} MiB; "
                  f"{'F1 ' + format(s[2], '.4f') if s else 'not scored'} "
                  f"(step took {time.perf_counter() - t0:.1f} s with scoring)", flush=True)
    out = list(rows.values())
    for row in out:
        base = rows.get(BASELINE[row.dataset])
        if row.wall is not None and base is not None and base.wall:
            row.ratio = row.wall / base.wall
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--merge-region-vcfs"]:  # internal: freebayes-parallel's merge, stdin -> stdout
        sys.stdout.writelines(merge_region_vcfs(sys.stdin))
        return 0
    if argv[:1] == ["--run-bcftools"]:  # internal: the pipeline's engine on a whole BAM, in a child process
        from functions.bcftools_engine import run_bcftools

        cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        run_bcftools(argv[1], argv[2], BcftoolsParams.from_dict(cfg["calling"].get("bcftools", {})), argv[3])
        return 0
    started, t_start = datetime.datetime.now().astimezone(), time.perf_counter()
    args = parse_args(argv)
    if "pipeline-ceph" in args.tools:
        busy = busy_ports(CEPH_PORTS)
        if busy:
            print(f"error: port {busy[0]} is in use (the test suite's Ceph gateway?): the Ceph run needs ports "
                  f"{', '.join(map(str, CEPH_PORTS))}; wait until it stops, or pass --no-ceph", file=sys.stderr)
            return 2
        missing = ceph_missing()
        if missing:
            print(f"error: the Ceph run cannot start: {missing}; or pass --no-ceph", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks stop Ceph
    work = args.work or Path(tempfile.mkdtemp(prefix="svc-harness-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, work, t0=t_start)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    ctx.params = BcftoolsParams.from_dict(cfg["calling"].get("bcftools", {}))
    try:
        data_s = prepare_data(ctx)
        print(f"data ready in {data_s:.0f} s", flush=True)
        idle = background_cores()
        background = (f"Other processes kept {idle:.2f} of {os.cpu_count()} cores busy just before the runs."
                      if idle is not None else "")
        if idle is not None and idle > 0.2:
            print(f"warning: {background} The timings will be off.", flush=True)
        rows = run_tools(ctx)
        mach = machine()
        model = scaling_model(ctx, mach["cpu"])
        report = build_report(ctx, rows, model, mach, started, t_start, data_s, background)
    finally:
        if args.keep:
            print(f"kept {work}")
        elif args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print_report(report, rows, model)
    written = []
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(report), indent=1) + "\n")
        written.append(str(args.json))
    if args.markdown:
        write_markdown(args.markdown, report, rows, model)
        written.append(str(args.markdown))
    where = ", ".join(written) if written else "not written (not the full run: give --json or --markdown)"
    print(f"\nresults: {where}; the whole run took {report['total_wall_s'] / 60:.1f} min")
    return 1 if any(r.failed for r in rows) else 0


def build_report(ctx: Context, rows: list[Row], model: dict[str, Any] | None, mach: dict[str, Any],
                 started: datetime.datetime, t_start: float, data_s: float, background: str) -> dict[str, Any]:
    a = ctx.args
    datasets = {}
    if ctx.germline:
        bam = ctx.germline / f"{SAMPLE}.bam"
        datasets["germline"] = {
            "path": ctx.germline, "bam_mb": round(bam.stat().st_size / 1e6, 1),
            "what": f"test_data/generate.py --genome-size {a.genome_size} --coverage {a.coverage:g} --seed {a.seed} "
                    f"(sampleA, 2 x 150 bp, BAM {bam.stat().st_size / 1e6:.0f} MB)"}
    if ctx.viral:
        bam = ctx.viral / "mixture.bam"
        datasets["viral"] = {
            "path": ctx.viral, "bam_mb": round(bam.stat().st_size / 1e6, 1),
            "what": f"test_data/viral.py --length {a.viral_length} --depth {a.viral_depth:g} --seed {a.viral_seed} "
                    f"(BAM {bam.stat().st_size / 1e6:.0f} MB)"}
    others = [o for r in rows for o in r.others_cpu]
    notes = notes_lines(rows)
    if others:
        notes.append(f"other processes on the machine used {sum(others):.0f} CPU s during the timed runs "
                     f"(timings on a shared machine are noisy)")
    if GNU_TIME is None:
        notes.append("no /usr/bin/time (Debian package time): max RSS has a floor of the harness' own RSS")
    notes.append(f"repeats: {a.repeats}; regions of the scattered runs: {len(ctx.regions)} of about equal length "
                 "(as fasta_generate_regions.py cuts)")
    return {
        "date": started.isoformat(timespec="seconds"), "data": str(a.data), "work": str(ctx.work),
        "command": shlex.join(["python", "bench/harness.py", *sys.argv[1:]]),
        "machine": mach, "background": background,
        "datasets": datasets, "data_s": data_s, "generated": ctx.generated,
        "columns": COLUMNS, "scoring": [s.format(fq=a.freebayes_min_qual) for s in SCORING],
        "rows": rows, "checks": checks(ctx), "notes": notes,
        "scaling": None if model is None else {k: v for k, v in model.items() if k not in ("lines", "table")}
        | {"text": model["lines"]},
        "total_wall_s": time.perf_counter() - t_start,
        "breakdowns": {key: {"tool": next(r.tool for r in rows if r.key == key), "table": b.table(), **b.as_dict()}
                       for key, b in ctx.breakdowns.items()},
    }


def print_report(report: dict[str, Any], rows: list[Row], model: dict[str, Any] | None) -> None:
    m = report["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; {m['os']}; Python {m['python']}")
    for name, d in report["datasets"].items():
        print(f"{name}: {d['what']}")
    print()
    print(text_table(rows))
    print()
    for k, v in COLUMNS.items():
        print(f"{k}: {v}")
    for s in report["scoring"]:
        print(f"scoring, {s}")
    for c in class_lines(rows):
        print(f"per class, {c}")
    for k, v in report["checks"].items():
        print(f"check: {k}: {v}")
    for n in report["notes"]:
        print(f"note: {n}")
    for b in report["breakdowns"].values():
        print(f"\nwhere the time went: {b['tool']} (pipeline/phases.py)")
        print(b["table"])
    if model:
        print("\nscaling model: a 30x human genome in the cloud (modelled, nothing ran in a cloud)")
        print(model["table"])
        print("\n".join(model["lines"]))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted (Ceph, if it ran, is stopped; the scratch folder is removed unless --keep)",
              file=sys.stderr)
        sys.exit(130)
