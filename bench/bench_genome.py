#!/usr/bin/env python
"""Genome-scale benchmark: a GRCh38-shaped reference through the real ``snakemake``.

1. Generates once (fixed seed; reused when present) in ``--workdir``:

   * ``ref.fa`` (+ ``.fai``): chr1-chr22, chrX, chrY at GRCh38's lengths, chrM, and
     ``--small`` (default 3,000) small contigs named as GRCh38's analysis set names
     them: ``chr1_KI270706v1_random``-style alt and random contigs,
     ``chrUn_JTFH01000001v1_decoy``-style decoys, ``HLA-A*01:01:01:01``-style HLA
     alleles and ``chrEBV`` (random bases; 3.1 Gb in all);
   * ``sample.bam`` (+ ``.bai``): single-end 150 bp reads at 30x written as aligned
     records (no aligner), in ``--window`` bp windows at the start, middle and end of
     every chromosome and at the start of every other small contig, with heterozygous
     SNVs every ~800 bp so that there is something to call.

2. Runs the workflow with ``plan.n_regions`` ``--regions`` (default 1,000) and prints:
   planning seconds; regions and functions; per-region seconds, peak RSS and local disk
   (median, max, and the first and last regions of chr1: where a function's cost could
   grow with position); BAM bytes read / BAM size and GETs per region; the merge's
   seconds, records/s and peak RSS; the whole run's wall, CPU and peak RSS.

3. Runs one whole-genome ``bcftools mpileup | call`` (the engine's own code, the same
   parameters) and prints its wall and whether the workflow's VCF equals it record
   for record (with the differences counted when not).

4. Calls chr1's first and last regions again (the workflow's own tasks, in one process
   over the run's store), ``--repeat`` times each, alternately, and prints their median
   seconds: one function's time on a busy 2-core machine varies more than the
   difference looked for.

5. Prints the scaling model of a 30x human genome (``bench/scaling.py``) with this
   run's per-function costs: a fixed cost per function and compute per BAM byte (a
   line fitted through the functions' seconds and bytes), read factor, stragglers,
   GETs, local steps and a merge rate calibrated on this run's records.

6. Runs Debian's bcftools over the workflow's own regions with GNU ``parallel -j2``
   and ``bcftools concat`` (what a lab would script on its 2 cores) and prints its wall
   and whether its VCF equals the single run's (``--no-scatter`` skips it).

Prints figures; asserts nothing.

    python bench/bench_genome.py                  # the full shape (about 20 minutes here)
    python bench/bench_genome.py --small 300 --regions 100 --scale 0.05 --workdir /tmp/g  # a quick look
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_amplicon import timed  # noqa: E402
from bench.bench_cohort import workflow_dir  # noqa: E402
from bench.evaluation.vcfcompare import vcf_body  # noqa: E402

# GRCh38 primary assembly lengths.
CHROMOSOMES = {
    "chr1": 248_956_422, "chr2": 242_193_529, "chr3": 198_295_559, "chr4": 190_214_555, "chr5": 181_538_259,
    "chr6": 170_805_979, "chr7": 159_345_973, "chr8": 145_138_636, "chr9": 138_394_717, "chr10": 133_797_422,
    "chr11": 135_086_622, "chr12": 133_275_309, "chr13": 114_364_328, "chr14": 107_043_718,
    "chr15": 101_991_189, "chr16": 90_338_345, "chr17": 83_257_441, "chr18": 80_373_285, "chr19": 58_617_616,
    "chr20": 64_444_167, "chr21": 46_709_983, "chr22": 50_818_468, "chrX": 156_040_895, "chrY": 57_227_415,
    "chrM": 16_569,
}
READ = 150
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def small_contigs(n: int, rng: np.random.Generator) -> dict[str, int]:
    """``n`` contigs named and sized like GRCh38's alt, random, decoy, HLA and EBV ones."""
    out: dict[str, int] = {"chrEBV": 171_823}
    hla_genes = ["A", "B", "C", "DRB1", "DQA1", "DQB1", "DPB1"]
    for i in range(n - 1):
        kind = i % 4
        if kind == 0:
            name, length = f"chr{1 + i % 22}_KI27{i:04d}v1_random", int(rng.integers(2_000, 200_000))
        elif kind == 1:
            name, length = f"chrUn_JTFH0{i:07d}v1_decoy", int(rng.integers(1_000, 30_000))
        elif kind == 2:
            name, length = f"chr{1 + i % 22}_KI27{i:04d}v1_alt", int(rng.integers(5_000, 300_000))
        else:
            gene = hla_genes[i % len(hla_genes)]
            name, length = f"HLA-{gene}*{i % 90 + 1:02d}:{i // 90 % 99 + 1:02d}:01:{i % 7 + 1:02d}", \
                int(rng.integers(2_800, 5_500))
        out[name] = length
    return out


def write_reference(path: Path, contigs: dict[str, int], rng: np.random.Generator) -> None:
    """Random bases, 60 per line, written a chunk at a time."""
    with open(path, "wb") as fh:
        for name, length in contigs.items():
            fh.write(f">{name}\n".encode())
            for start in range(0, length, 60_000_000):
                n = min(60_000_000, length - start)
                seq = BASES[rng.integers(0, 4, n, dtype=np.uint8)]
                full, rest = divmod(n, 60)
                lines = np.empty((full, 61), dtype=np.uint8)
                lines[:, :60] = seq[: full * 60].reshape(full, 60)
                lines[:, 60] = ord("\n")
                fh.write(lines.tobytes())
                if rest:
                    fh.write(seq[full * 60 :].tobytes() + b"\n")


def windows(contigs: dict[str, int], window: int) -> list[tuple[str, int, int]]:
    """Where reads go: start, middle and end of each chromosome; the start of every
    other small contig (in contig order)."""
    out = []
    for i, (name, length) in enumerate(contigs.items()):
        if name in CHROMOSOMES and length > 3 * window:
            for start in (0, length // 2, length - window):
                out.append((name, start, start + window))
        elif i % 2 == 0 or name in CHROMOSOMES:
            out.append((name, 0, min(length, window)))
    return out


def write_bam(path: Path, ref: Path, contigs: dict[str, int], spans: list[tuple[str, int, int]],
              depth: float, rng: np.random.Generator) -> int:
    """Reads at ``depth`` over ``spans`` (in contig order), heterozygous SNVs every ~800 bp,
    base qualities drawn per base (20-40) so that the BAM takes about the bytes per read
    real reads take (qualities are most of a BAM): the scaling model's cost per byte
    comes from it."""
    import pysam

    header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": n, "LN": ln} for n, ln in contigs.items()],
              "RG": [{"ID": "rg1", "SM": "sample"}]}
    tids = {n: i for i, n in enumerate(contigs)}
    count = 0
    comp = bytes.maketrans(b"ACGT", b"CGTA")
    with pysam.FastaFile(str(ref)) as fa, pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for name, lo, hi in spans:
            seq = fa.fetch(name, lo, hi).encode()
            alt = bytearray(seq)
            snvs = np.arange(int(rng.integers(100, 800)), len(seq), 800)
            for p in snvs:
                alt[p] = comp[seq[p]]
            n = int(depth * (hi - lo) / READ)
            starts = np.sort(rng.integers(0, max(1, hi - lo - READ), n))
            haps = rng.integers(0, 2, n)
            quals = rng.integers(20, 41, (n, READ), dtype=np.uint8)
            for j, (s, h) in enumerate(zip(starts.tolist(), haps.tolist(), strict=True)):
                r = pysam.AlignedSegment(out.header)
                r.query_name = f"{name}:{lo + s}:{j}"
                r.flag = 16 if j % 2 else 0
                r.reference_id, r.reference_start, r.mapping_quality = tids[name], lo + s, 60
                r.cigarstring = f"{READ}M"
                r.query_sequence = (alt if h else seq)[s : s + READ].decode()
                r.query_qualities = quals[j]
                r.set_tag("RG", "rg1")
                out.write(r)
                count += 1
    pysam.index(str(path))
    return count


def generate(wd: Path, n_small: int, window: int, depth: float, seed: int, scale: float) -> tuple[Path, Path, int]:
    import pysam

    ref, bam = wd / "ref.fa", wd / "sample.bam"
    stamp = wd / "generated.json"
    params = {"small": n_small, "window": window, "depth": depth, "seed": seed, "scale": scale, "quals": "20-40"}
    if stamp.exists() and json.loads(stamp.read_text()).get("params") == params:
        return ref, bam, int(json.loads(stamp.read_text())["reads"])
    wd.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    contigs = {**{c: max(16_569, int(n * scale)) for c, n in CHROMOSOMES.items()}, **small_contigs(n_small, rng)}
    t = time.time()
    write_reference(ref, contigs, rng)
    pysam.faidx(str(ref))
    print(f"reference: {len(contigs):,} contigs, {sum(contigs.values()) / 1e9:.2f} Gb in {time.time() - t:.0f} s",
          file=sys.stderr)
    t = time.time()
    reads = write_bam(bam, ref, contigs, windows(contigs, window), depth, rng)
    print(f"BAM: {reads:,} reads in {time.time() - t:.0f} s", file=sys.stderr)
    stamp.write_text(json.dumps({"params": params, "reads": reads}))
    return ref, bam, reads


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/svc-bench-genome")
    ap.add_argument("--small", type=int, default=3000, help="small contigs (alt, decoy, HLA, EBV)")
    ap.add_argument("--regions", type=int, default=1000, help="plan.n_regions")
    ap.add_argument("--window", type=int, default=20_000, help="bp of reads per window")
    ap.add_argument("--depth", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0, help="chromosome lengths x this (a quick look: 0.05)")
    ap.add_argument("--repeat", type=int, default=7, help="calls of chr1's first and last regions again (0: none)")
    ap.add_argument("--no-scaling", dest="scaling", action="store_false",
                    help="skip the scaling model from this run's costs")
    ap.add_argument("--no-scatter", dest="scatter", action="store_false",
                    help="skip the bcftools + GNU parallel -j2 row")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--repeat-regions"]:  # internal: run in the workflow's environment
        repeat_regions(Path(argv[1]), int(argv[2]), argv[3:])
        return 0
    args = ap.parse_args(argv)
    wd = Path(args.workdir)
    ref, bam, reads = generate(wd, args.small, args.window, args.depth, args.seed, args.scale)
    bam_size = bam.stat().st_size

    run = wd / "run"
    cmd, env = workflow_dir(run, {"sample": bam}, ref, {"plan": {"n_regions": args.regions}})
    started = time.time()
    wall, cpu, rss = timed(cmd, env=env)
    calls = json.loads((run / "work" / "calls" / "sample.json").read_text())
    frags = calls["fragments"]
    logs = run / "work" / "logs"
    call_log = (logs / "call.log").read_text()
    plan_log = (logs / "plan_sample.log").read_text() if (logs / "plan_sample.log").exists() else ""
    merge_log = next(iter(sorted(logs.glob("merge_*.log"))), None)
    merged = re.search(r"in ([\d.]+) s \((\d+) records/s, peak RSS (\d+) MB\)", merge_log.read_text()) if merge_log \
        else None
    summary = next((ln for ln in call_log.splitlines() if "called 1 sample(s)" in ln), "")
    chr1 = sorted((f for f in frags if f["chrom"] == "chr1"), key=lambda f: f["start"])
    first, last = chr1[0], chr1[-1]
    got = vcf_body(str(run / "results" / "sample.vcf.gz"))
    print(f"genome: {len(ref.with_suffix('.fa.fai').read_text().splitlines()):,} contigs; {reads:,} reads; "
          f"BAM {bam_size / 1e6:.1f} MB")
    print(f"workflow: wall {wall:.1f} s, CPU {cpu:.1f} s, peak RSS {rss:.0f} MB (largest process)")
    print(f"  plan: {plan_log.strip().splitlines()[-1] if plan_log.strip() else '(no plan log)'}")
    print(f"  {len(frags):,} regions in {calls.get('functions') or len(frags):,} functions "
          f"(plan.n_regions {args.regions:,})")

    def spread(name: str, values: list[float], unit: str, fmt: str = ".2f") -> None:
        pick = {id(f): v for f, v in zip(frags, values, strict=True)}
        print(f"  {name} per region ({unit}): median {statistics.median(values):{fmt}}, max {max(values):{fmt}}; "
              f"chr1 first {pick[id(first)]:{fmt}}, last {pick[id(last)]:{fmt}} "
              f"(last / first {pick[id(last)] / max(pick[id(first)], 1e-9):.2f})")

    print(f"  chr1 first region {first['name']} ({first['bam_get_bytes'] / 1e6:.2f} MB of BAM, {first['reads'][0]:,} "
          f"reads), last {last['name']} ({last['bam_get_bytes'] / 1e6:.2f} MB, {last['reads'][0]:,} reads, reads "
          f"moved {last.get('shift', 0):,} bases)")
    spread("seconds", [f["seconds"] for f in frags], "s")
    spread("peak RSS", [(f.get("peak_rss_bytes") or 0) / 1e6 for f in frags], "MB", ".0f")
    spread("local disk", [f.get("disk_bytes", 0) / 1e6 for f in frags], "MB")
    print(f"  BAM bytes read / BAM size {sum(f['bam_get_bytes'] for f in frags) / bam_size:.2f}; all bytes read "
          f"{sum(f['get_bytes'] for f in frags) / bam_size:.2f} x BAM; GETs per region "
          f"{sum(f['gets'] for f in frags) / len(frags):.1f}")
    print(f"  {summary.split('INFO pipeline: ')[-1]}")
    if merged:
        print(f"  merge: {len(got):,} records in {float(merged[1]):.1f} s ({int(merged[2]):,} records/s), "
              f"peak RSS {merged[3]} MB")
    print(f"  VCF: {len(got):,} records")

    from functions.bcftools_engine import BcftoolsParams, run_bcftools

    whole = wd / "whole.vcf"
    t = time.time()
    run_bcftools(str(bam), str(ref), BcftoolsParams(), str(whole))
    whole_s = time.time() - t
    want = vcf_body(str(whole))
    print(f"one whole-genome bcftools mpileup | call: {whole_s:.1f} s, {len(want):,} records; workflow / whole "
          f"{wall / whole_s:.2f}; VCF equal record for record: {same(got, want)}")
    if args.repeat:
        res = subprocess.run([sys.executable, __file__, "--repeat-regions", str(run), str(args.repeat), first["name"],
                              last["name"]], env=env, capture_output=True, text=True, check=True)
        print("  " + res.stdout.strip())
    if args.scaling:
        print_scaling(run, ref, started, wall)
    if args.scatter:
        spans = [(f["chrom"], f["start"], f["end"]) for f in sorted(frags, key=lambda f: f["region"])]
        sc_wall, sc_vcf = scatter(wd / "scatter", ref, bam, spans)
        print(f"bcftools over the same {len(spans):,} regions, GNU parallel -j2, concat: {sc_wall:.1f} s; "
              f"workflow / that {wall / sc_wall:.2f}; its calls (CHROM POS REF ALT GT: Debian's bcftools is "
              f"another version, its annotations differ) equal the single run's: "
              f"{same(calls_of(vcf_body(str(sc_vcf))), calls_of(want))}")
    return 0


def repeat_regions(run: Path, times: int, names: list[str]) -> None:
    """Call the regions ``names`` of the workflow run in ``run`` again, in this process, over
    the run's store (its environment: ``TMPDIR``), ``times`` times each, alternately;
    print each one's median seconds, reads moved and peak RSS."""
    import os

    import yaml

    from functions.call_region import call_region
    from functions.engines import make_params
    from pipeline.call import CallInputs
    from pipeline.cli import open_store
    from pipeline.config import load_settings, step_settings
    from pipeline.manifests import StagedReference, StagedSample
    from pipeline.plan import read_plan

    os.chdir(run)
    settings = step_settings(load_settings(yaml.safe_load(Path("config/config.yaml").read_text())), "call")
    calling = settings.calling
    store = open_store(settings)
    work = Path("work")
    inputs = CallInputs(store, [read_plan(str(work / "plans" / "sample.tsv"))],
                        {"sample": StagedSample.read(str(work / "staged" / "sample.json"))},
                        StagedReference.read(str(work / "staged" / "reference.json")),
                        make_params(calling["engine"], calling[calling["engine"]]), settings.faults, None, None)
    tasks = {t["region"]["name"]: t for t in inputs.tasks()}
    seconds: dict[str, list[float]] = {n: [] for n in names}
    stats: dict[str, dict[str, object]] = {}
    for _ in range(times):
        for n in names:
            stats[n] = call_region(tasks[n], store._storage)
            seconds[n].append(float(stats[n]["seconds"]))  # type: ignore[arg-type]
    med = {n: statistics.median(v) for n, v in seconds.items()}
    print(f"  called again, {times} times each, alternately: " + "; ".join(
        f"{n} median {med[n]:.3f} s (reads moved {stats[n]['shift']:,} bases, peak RSS "
        f"{(stats[n]['peak_rss_bytes'] or 0) / 1e6:.0f} MB)" for n in names)  # type: ignore[operator]
          + f"; last / first {med[names[-1]] / med[names[0]]:.2f}")


def print_scaling(run: Path, ref: Path, started: float, wall: float) -> None:
    """The scaling model of a 30x human genome (``bench/scaling.py``, as the harness prints
    it) with the per-function costs of this run: a fixed cost per function (the intercept
    of its functions' seconds on their BAM bytes) and the compute per byte beside it,
    the read factor, stragglers, GETs, the local steps' seconds, and the merge rate
    calibrated on 200,000 records of this run's VCF."""
    import platform
    from dataclasses import replace

    from bench import scaling
    from bench.bench_cohort import phases

    calls = run / "work" / "calls" / "sample.json"
    frags = json.loads(calls.read_text())["fragments"]
    vcf = run / "results" / "sample.vcf.gz"
    rate = scaling.calibrate_merge(vcf, ref, calls)
    m = scaling.measure_run(run, "sample", phases(run, ["sample"], started, wall), len(vcf_body(str(vcf))), rate,
                            platform.processor() or platform.machine())
    m = replace(m, fixed_s=scaling.fit_fixed([f["seconds"] for f in frags], [f["bam_get_bytes"] for f in frags]),
                source="bench/bench_genome.py's run, local store")
    a = scaling.Assumptions()
    prices, prices_from = scaling.load_prices()
    print("scaling model of a 30x human genome from this run (bench/scaling.py):")
    for line in scaling.assumption_lines(m, a, prices, prices_from):
        print("  " + line)
    print(scaling.scenario_table([scaling.model(m, a, prices, n) for n in (10, 100, 1000)], prices["currency"]))


def same(got: list[str], want: list[str]) -> str:
    """"True", or "False (N records differ)"."""
    if got == want:
        return "True"
    return f"False ({sum(a != b for a, b in zip(got, want, strict=False)) + abs(len(got) - len(want))} records differ)"


def calls_of(lines: list[str]) -> list[str]:
    """Each record's site, alleles and genotype."""
    out = []
    for line in lines:
        f = line.split("\t")
        out.append("\t".join([*f[:2], *f[3:5], f[9].split(":", 1)[0]]))
    return out


def scatter(out: Path, ref: Path, bam: Path, spans: list[tuple[str, int, int]]) -> tuple[float, Path]:
    """Debian's bcftools over ``spans`` (each through a regions file: names may hold ':'),
    two at a time with GNU parallel, the parts concatenated in order; (wall, VCF)."""
    from bench.harness import bash, bcftools_pipe, measure, parallel_jobs
    from functions.bcftools_engine import BcftoolsParams

    out.mkdir(parents=True, exist_ok=True)
    jobs, parts = [], []
    for i, (chrom, start, end) in enumerate(spans):
        regions = out / f"r{i:05d}.tsv"
        regions.write_text(f"{chrom}\t{start + 1}\t{end}\n")
        parts.append(out / f"part{i:05d}.bcf")
        jobs.append(bcftools_pipe(ref, bam, BcftoolsParams(), parts[-1], fmt="u", regions_file=regions))
    (out / "parts.txt").write_text("".join(f"{p}\n" for p in parts))
    vcf = out / "calls.vcf"
    t = measure(bash(parallel_jobs(jobs, out / "jobs.txt")
                     + f" && bcftools concat --file-list {out / 'parts.txt'} -Ov -o {vcf}"))
    return t.wall, vcf


if __name__ == "__main__":
    raise SystemExit(main())
