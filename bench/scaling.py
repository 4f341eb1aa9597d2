"""Scaling model: the wall time and cloud cost of calling a 30x human genome with N
functions, from the per-region costs measured in one pipeline run on this machine.

Contract:

* :func:`measure_run` reads what one pipeline run measured: its call manifest
  (``work/calls/<sample>.json``: per function ``seconds``, ``bam_get_bytes``, ``gets``)
  and its plan (``work/plans/<sample>.tsv``: BAM size, contigs), plus the local
  phases the caller timed (before the fan-out, the merge, Snakemake's exit).
* :func:`calibrate_merge` times :func:`pipeline.merge.merge_sample` on synthetic
  fragments of a given number of records, from an in-memory store, so the merge of a
  human-sized VCF can be extrapolated from a rate instead of from a few thousand records.
* :class:`Assumptions` holds everything that is not measured here, each with its
  default and where it comes from; :func:`load_prices` reads the price table
  (``report.cost`` of ``config/config.yaml``, with the same defaults when absent).
* :func:`model` gives one :class:`Scenario` per function count: the modelled wall
  time, GB-seconds, requests, cost (:class:`pipeline.report.Cost`, the run report's
  own arithmetic) and the limits a scenario breaks. :func:`assumption_lines` and
  :func:`scenario_table` say all of it in text.

The model (every term is printed by :func:`assumption_lines`):

* bytes a function reads = BAM size x read factor (measured: BAM bytes read / BAM
  size, which includes the padding overlap) / N;
* a function's work = bytes / bandwidth (fetch) + bytes x compute seconds per BAM byte
  (measured: all functions' seconds / all BAM bytes they read; on the local store
  a function's seconds are nearly all compute);
* the fan-out = waves x (overhead + work x straggler factor), waves = ceil(N /
  concurrency), straggler factor = slowest / median function measured here;
* wall = local steps before the fan-out (measured) + planning a human BAI + fan-out +
  merge (measured here + the human VCF's records / the calibrated merge rate) + exit
  (measured);
* billed GB-seconds = memory x (N x overhead + all bytes / bandwidth + all bytes x
  compute per byte), i.e. nearly independent of N.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_PRICES: dict[str, Any] = {
    "currency": "USD",
    "source": "AWS Lambda (x86, us-east-1) and S3 Standard list prices, 2026",
    "function_memory_mb": 2048,
    "per_gb_second": 0.0000166667,
    "per_million_invocations": 0.20,
    "per_thousand_gets": 0.0004,
    "per_thousand_puts": 0.005,
}


def load_prices(config_path: Path = ROOT / "config" / "config.yaml") -> tuple[dict[str, Any], str]:
    """The price table: ``report.cost`` of the config, each missing key from
    :data:`DEFAULT_PRICES`; and where it came from (for the output)."""
    try:
        cfg = yaml.safe_load(config_path.read_text()) or {}
    except OSError:
        cfg = {}
    table = ((cfg.get("report") or {}).get("cost") or {})
    where = f"{config_path.name}: report.cost" if table else "built-in defaults (no report.cost in the config)"
    return {**DEFAULT_PRICES, **table}, where


@dataclass(frozen=True)
class Assumptions:
    """What the model does not measure here. Defaults, with their source, in :meth:`sources`."""

    bam_bytes: float = 100e9            # a 30x human BAM
    genome_length: float = 3.1e9        # GRCh38, primary assembly
    records: float = 4.5e6              # variant records of one 30x human genome
    overhead_s: float = 2.0             # per function: invoke request + cold start of a container image
    bandwidth_mb_s: float = 75.0        # object store -> one function, MB/s
    concurrency: int = 1000             # functions at once (AWS Lambda's default account limit)
    planning_s: float = 0.33            # planning a 3.1 Gb genome's BAI (bench/bench_plan.py)
    lithops_gets: int = 2               # per function: Lithops' own status/result objects
    lithops_puts: int = 2
    function_puts: int = 2              # per function: the fragment and its stats (functions/call_region.py)
    max_duration_s: float = 900.0       # AWS Lambda's time limit per function
    max_ephemeral_mb: float = 10240.0   # AWS Lambda's largest /tmp

    @staticmethod
    def sources() -> dict[str, str]:
        return {
            "bam_bytes": "assumed: a 30x human genome, 2 x 150 bp, about 100 GB of BAM",
            "genome_length": "GRCh38 primary assembly, about 3.1 Gb",
            "records": "assumed: about 4.5 million variant records in one 30x human genome",
            "overhead_s": "assumed, not measured here: the invoke request and a cold start of the container "
                          "image (a warm start is about 0.05 s)",
            "bandwidth_mb_s": "assumed, not measured here: one ranged GET stream from the object store into one "
                              "function",
            "concurrency": "AWS Lambda's default concurrency limit per account and region",
            "planning_s": "measured by bench/bench_plan.py: planning from a 9 MB BAI of a 3.1 Gb genome",
            "lithops_gets": "assumed: Lithops reads each call's status and result object",
            "lithops_puts": "assumed: each call writes its status and result object",
            "function_puts": "functions/call_region.py: each function writes its fragment and its stats",
            "max_duration_s": "AWS Lambda's time limit per function",
            "max_ephemeral_mb": "AWS Lambda's largest ephemeral /tmp (512 MB unless configured, billed above)",
        }


@dataclass(frozen=True)
class Measured:
    """What one pipeline run on this machine measured (the inputs of :func:`model`)."""

    function_seconds: tuple[float, ...]
    bam_read_bytes: int                 # all functions' BAM bytes read
    bam_size: int
    gets_per_function: float            # median
    genome_length: int
    records: int                        # records of the merged VCF
    before_s: float                     # Snakemake's start, staging, planning (until the call step)
    merge_s: float                      # after the call step until the last results/ file
    exit_s: float                       # the rest: Snakemake's exit
    merge_records_per_s: float | None = None  # calibrated merge rate (None: not calibrated)
    cpu: str = ""
    fixed_s: float = 0.0                # a function's seconds beside its bytes (fit_fixed; 0: all per byte)
    source: str = "the germline pipeline run, local store"

    @property
    def functions(self) -> int:
        return len(self.function_seconds)

    @property
    def seconds_per_byte(self) -> float:
        return (sum(self.function_seconds) - self.fixed_s * self.functions) / self.bam_read_bytes

    @property
    def read_factor(self) -> float:
        return self.bam_read_bytes / self.bam_size

    @property
    def straggler(self) -> float:
        return max(self.function_seconds) / statistics.median(self.function_seconds)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "functions": self.functions, "seconds_per_byte": self.seconds_per_byte,
                "read_factor": self.read_factor, "straggler": self.straggler}


def plan_header(plan_tsv: Path) -> dict[str, str]:
    """The ``#key=value`` lines of a plan TSV."""
    out = {}
    for line in plan_tsv.read_text().splitlines():
        if line.startswith("#") and "=" in line:
            key, value = line[1:].split("=", 1)
            out[key.strip()] = value.strip()
    return out


def measure_run(run_dir: Path, sample: str, phases: dict[str, Any], records: int,
                merge_records_per_s: float | None = None, cpu: str = "") -> Measured:
    """:class:`Measured` from a finished run in ``run_dir`` and the phases the caller
    timed (``before_call``, ``after_call``, ``exit`` seconds, as
    :func:`bench_cohort.phases` gives them)."""
    from pipeline.manifests import CallResults

    frags = CallResults.read(run_dir / "work" / "calls" / f"{sample}.json").fragments
    head = plan_header(run_dir / "work" / "plans" / f"{sample}.tsv")
    genome = sum(int(c.rsplit(":", 1)[1]) for c in head["contigs"].split(","))
    return Measured(
        function_seconds=tuple(float(f["seconds"]) for f in frags),
        bam_read_bytes=sum(int(f["bam_get_bytes"]) for f in frags),
        bam_size=int(head["bam_size"]),
        gets_per_function=statistics.median(int(f["gets"]) for f in frags),
        genome_length=genome,
        records=records,
        before_s=float(phases["before_call"]),
        merge_s=float(phases["after_call"]),
        exit_s=float(phases["exit"]),
        merge_records_per_s=merge_records_per_s,
        cpu=cpu,
    )


def fit_fixed(seconds: list[float], nbytes: list[int]) -> float:
    """A function's fixed seconds: the intercept of a least-squares line of functions'
    seconds on the BAM bytes they read, kept within [0, the fastest function's]."""
    slope, intercept = np.polyfit(np.asarray(nbytes, dtype=float), np.asarray(seconds, dtype=float), 1)
    return float(min(max(intercept, 0.0), min(seconds)))


class _MemoryStore:
    """The two things :func:`pipeline.merge.merge_sample` uses of a store: ``get`` and ``counts``."""

    def __init__(self) -> None:
        from functions.core.storage import IoCounts

        self.objects: dict[str, bytes] = {}
        self.counts = IoCounts()

    def get(self, key: str, bucket: str | None = None) -> bytes:
        return self.objects[key]


def calibrate_merge(template_vcf: Path, reference: Path, template_manifest: Path, records: int = 200_000,
                    fragments: int = 16) -> float:
    """Records per second that :func:`pipeline.merge.merge_sample` merges: ``records``
    copies of ``template_vcf``'s records (on its first contig, 10 bp apart, so they
    are in order) in ``fragments`` fragments, read from memory, under a copy of
    ``template_manifest`` (a call manifest: engine, parameters, code) that lists them;
    bgzip, tabix and ``bcftools stats`` included."""
    from bench.evaluation.vcfcompare import vcf_body
    from pipeline.manifests import CallResults
    from pipeline.merge import merge_sample

    with gzip.open(template_vcf, "rt") if str(template_vcf).endswith(".gz") else open(template_vcf) as fh:
        header = [line for line in fh if line.startswith("#")]
    rests = [line.split("\t", 2)[2] for line in vcf_body(str(template_vcf))]
    if not rests:
        raise ValueError(f"{template_vcf} has no records to calibrate the merge with")
    chrom = next(line.split("ID=", 1)[1].split(",", 1)[0] for line in header if line.startswith("##contig="))
    store, frags, per = _MemoryStore(), [], records // fragments
    for i in range(fragments):
        first = i * per
        body = "".join(f"{chrom}\t{(first + j) * 10 + 1}\t{rests[(first + j) % len(rests)]}" for j in range(per))
        data = gzip.compress(("".join(header) + body).encode(), compresslevel=1)
        store.objects[f"f{i}.vcf.gz"] = data
        frags.append({"region": i, "name": f"{chrom}:{first * 10 + 1}-{(first + per) * 10}", "chrom": chrom,
                      "start": first * 10, "end": (first + per) * 10, "out_key": f"f{i}",
                      "md5": hashlib.md5(data).hexdigest()})
    with tempfile.TemporaryDirectory(prefix="svc-merge-cal-") as tmp:
        manifest = os.path.join(tmp, "calls.json")
        replace(CallResults.read(template_manifest), fragments=tuple(frags)).write(manifest)
        t0 = time.perf_counter()
        n = merge_sample(store, manifest, str(reference), os.path.join(tmp, "out.vcf.gz"),  # type: ignore[arg-type]
                         os.path.join(tmp, "out.stats.txt"))
        return n / (time.perf_counter() - t0)


@dataclass
class Scenario:
    """The model's answer for one function count."""

    functions: int
    waves: int
    bytes_per_function: float
    fetch_s: float                      # an average function: fetching its bytes
    compute_s: float                    # an average function: computing on them
    slowest_s: float                    # overhead + (fetch + compute) x straggler factor
    fanout_s: float
    local_s: float                      # everything outside the fan-out
    wall_s: float
    gb_seconds: float
    invocations: int
    gets: int
    puts: int
    cost: dict[str, float]
    limits: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def human_merge_s(m: Measured, a: Assumptions) -> float:
    """The merge measured here (mostly fixed costs: a Python process, the store, the
    report), plus the human VCF's records at the calibrated rate (if calibrated)."""
    return m.merge_s + (a.records / m.merge_records_per_s if m.merge_records_per_s else 0.0)


def model(m: Measured, a: Assumptions, prices: dict[str, Any], functions: int) -> Scenario:
    """The modelled run of a human genome with ``functions`` functions (one region each)."""
    from pipeline.report import Cost

    total_bytes = a.bam_bytes * m.read_factor
    per_fn = total_bytes / functions
    fetch = per_fn / (a.bandwidth_mb_s * 1e6)
    compute = m.fixed_s + per_fn * m.seconds_per_byte
    slowest = a.overhead_s + (fetch + compute) * m.straggler
    waves = math.ceil(functions / a.concurrency)
    fanout = waves * slowest
    local = m.before_s + a.planning_s + human_merge_s(m, a) + m.exit_s
    memory_gb = prices["function_memory_mb"] / 1024
    gb_s = memory_gb * (functions * (a.overhead_s + m.fixed_s) + total_bytes / (a.bandwidth_mb_s * 1e6)
                        + total_bytes * m.seconds_per_byte)
    gets = functions * (round(m.gets_per_function) + a.lithops_gets) + functions + 2  # + merge + planning GETs
    puts = functions * (a.function_puts + a.lithops_puts)
    cost = Cost(gb_seconds=gb_s, invocations=functions, gets=gets, puts=puts, prices=prices)
    limits = []
    if slowest > a.max_duration_s:
        limits.append(f"slowest function {slowest:,.0f} s > Lambda's {a.max_duration_s:.0f} s")
    if per_fn > a.max_ephemeral_mb * 1e6:
        limits.append(f"slice {per_fn / 1e9:.1f} GB > Lambda's largest /tmp")
    return Scenario(
        functions=functions, waves=waves, bytes_per_function=per_fn, fetch_s=fetch, compute_s=compute,
        slowest_s=slowest, fanout_s=fanout, local_s=local, wall_s=fanout + local, gb_seconds=gb_s,
        invocations=functions, gets=gets, puts=puts,
        cost={"compute": cost.compute, "requests": cost.requests, "total": cost.total}, limits=limits,
    )


def assumption_lines(m: Measured, a: Assumptions, prices: dict[str, Any], prices_from: str) -> list[str]:
    """Every input of the model, measured or assumed, one line each."""
    src = Assumptions.sources()
    secs = sorted(m.function_seconds)
    lines = [
        f"measured here ({m.source}):",
        f"  compute per BAM byte      {m.seconds_per_byte * 1e6:.4f} s per MB of BAM read: {sum(secs):.1f} function-s "
        f"over {m.bam_read_bytes / 1e6:.1f} MB, {m.functions} functions, on {m.cpu or 'this CPU'} "
        "(one core per function; a function's seconds are its wall time, local-store reads included, so other load "
        "on this machine inflates them)" + (f", beside a fixed {m.fixed_s:.3f} s per function (intercept of "
                                            "seconds on bytes)" if m.fixed_s else ""),
        f"  read factor               {m.read_factor:.3f} x BAM size read by the functions (padding overlap; "
        "smaller for human-sized regions, so this overstates)",
        f"  straggler factor          {m.straggler:.2f} = slowest / median function ({secs[-1]:.2f} / "
        f"{statistics.median(secs):.2f} s)",
        f"  GETs per function         {m.gets_per_function:g} (median; BAM header, region, its last block, "
        "reference window)",
        f"  local steps               {m.before_s:.1f} s before the fan-out (Snakemake start, staging, planning), "
        f"{m.merge_s:.1f} s merge and report, {m.exit_s:.1f} s exit",
        ("  merge rate                " + (f"{m.merge_records_per_s:,.0f} records/s (merge_sample on synthetic "
                                          "fragments: fetch, checks, bgzip, tabix, bcftools stats)"
                                          if m.merge_records_per_s else "not calibrated: merge time not scaled")),
        "assumed (options of bench/harness.py):",
        f"  human BAM                 {a.bam_bytes / 1e9:.0f} GB; genome {a.genome_length / 1e9:.1f} Gb; "
        f"{a.records / 1e6:.1f} M records  ({src['bam_bytes']}; {src['records']})",
        f"  invocation overhead       {a.overhead_s:g} s per function ({src['overhead_s']})",
        f"  storage bandwidth         {a.bandwidth_mb_s:g} MB/s per function ({src['bandwidth_mb_s']})",
        f"  concurrency               {a.concurrency} ({src['concurrency']})",
        "  regions                   one per function; the BAM is already in the bucket (s3:// input, read in "
        "place: no staging upload)",
        f"  planning                  {a.planning_s:g} s ({src['planning_s']})",
        f"  requests per function     {round(m.gets_per_function)} GETs measured + {a.lithops_gets} GETs and "
        f"{a.lithops_puts} PUTs for Lithops + {a.function_puts} PUTs ({src['function_puts']}); the merge 1 GET "
        "per fragment, planning 2 GETs",
        f"  Lambda limits             {a.max_duration_s:g} s per function, {a.max_ephemeral_mb:g} MB of /tmp (a "
        f"function streams its slice to /tmp in GETs of at most 64 MB: its memory does not follow the slice)",
        f"prices ({prices_from}): {prices['source']}; {prices['function_memory_mb']} MB per function; "
        f"{prices['per_gb_second']:g} {prices['currency']}/GB-s, {prices['per_million_invocations']:g} per million "
        f"invocations, {prices['per_thousand_gets']:g} per 1000 GETs, {prices['per_thousand_puts']:g} per 1000 PUTs",
        "model: work = bytes/bandwidth + fixed + bytes x compute per byte; fan-out = waves x (overhead + average "
        "work x straggler); wall = local steps + planning + fan-out + merge (measured + records / merge rate) + exit;",
        "       GB-s = memory x (N x (overhead + fixed) + all fetch + all compute). Not counted: ephemeral "
        "storage above 512 MB, the BAM's storage, data transfer (free within a region), CPU speed of a cloud "
        "function vs this one.",
    ]
    if m.genome_length:
        per_bp = m.bam_size / m.genome_length
        lines.append(f"caveat: this BAM has {per_bp:.1f} bytes per genome base, a human 30x BAM about "
                     f"{a.bam_bytes / a.genome_length:.0f}; if compute follows genome positions x depth rather than "
                     f"BAM bytes, compute is {per_bp * a.genome_length / a.bam_bytes:.2f} x the modelled one")
    return lines


def scenario_table(rows: list[Scenario], currency: str) -> str:
    """The scenarios as a text table."""
    head = (f"{'functions':>9} {'GB/fn':>6} {'fetch s':>8} {'compute s':>9} {'slowest s':>9} {'fan-out s':>9} "
            f"{'local s':>7} {'wall':>8} {'GB-s':>9} {'GETs':>6} {'PUTs':>6} {'cost ' + currency:>10}  limits")
    out = [head, "-" * len(head)]
    for s in rows:
        out.append(f"{s.functions:>9} {s.bytes_per_function / 1e9:>6.2f} {s.fetch_s:>8.1f} {s.compute_s:>9.1f} "
                   f"{s.slowest_s:>9.1f} {s.fanout_s:>9.1f} {s.local_s:>7.1f} {fmt_duration(s.wall_s):>8} "
                   f"{s.gb_seconds:>9,.0f} {s.gets:>6} {s.puts:>6} {s.cost['total']:>10.4f}  "
                   f"{'; '.join(s.limits) or 'ok'}")
    return "\n".join(out)


def fmt_duration(seconds: float) -> str:
    """``95`` -> ``1m35s``; ``4000`` -> ``1h06m`` (truncated, not rounded)."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
