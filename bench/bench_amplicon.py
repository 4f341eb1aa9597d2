#!/usr/bin/env python
"""Amplicon benchmark: iVar, bcftools and the lowfreq engine on one tiled-amplicon viral
mixture, same data, same run.

1. Generates with ``test_data/amplicon.py`` (or reuses, from ``--workdir``, a dataset made
   with the same parameters by the same generator source) a 30 kb genome tiled by an
   ARTIC-style scheme, read as 2 x 150 bp amplicon pairs at ``--depth`` pairs per
   amplicon, with minor haplotypes at 5 / 2 / 1 / 0.5 / 0.2 % (20 alleles each, some
   under primers) and PCR / sequencing artefacts that are not variants.
2. Runs and times, each in its own process tree (wall seconds; CPU seconds = user + system
   of the tree as far as it waits for its children, ``wait4``):

   a. ``ivar trim -i mixture.bam -b scheme.primer.bed -p trimmed -e -m 30 -q 0``,
      ``samtools sort`` + ``index``, ``samtools mpileup -aa -A -d 0 -B -Q 0 | ivar variants
      -q 20 -t 0.001`` (timed together); rows with PASS=TRUE, and, on a second line, all rows;
   b. ``bcftools mpileup -f virus.fa -d 100000 -a AD,ADF,ADR -Q 20 -q 20 trimmed.sorted.bam
      | bcftools call -mv --ploidy 1`` on (a)'s trimmed BAM (the trimming not timed again);
   c. the lowfreq engine on the whole BAM in one process,
      ``run_lowfreq(bam, ref, LowfreqParams(), out, primers=read_primer_bed(bed))`` (when
      ``run_lowfreq`` has no ``primers`` yet it runs without and the row says so), and again
      without primers ("lowfreq, no primer trimming");
   d. the workflow through the real ``snakemake`` command line (``calling.engine: lowfreq``,
      ``calling.primers: <bed>``, Lithops localhost, 2 cores; ``--skip-workflow`` skips it).
      If the workflow fails (e.g. the config key is not known yet) the row says
      ``workflow: not run (<first error line>)``.
3. Scores each against ``truth.vcf.gz`` with :mod:`bench.evaluation.afeval`: a true allele
   is found when a record with FILTER PASS has its CHROM/POS/REF/ALT after ``bcftools norm``
   (iVar: a PASS=TRUE row); every other PASS record is a false positive (``artef``: at a
   site of ``artefacts.tsv``). Prints a table (found/total per designed-fraction band, the
   alleles under primers, false positives, wall and CPU seconds) and writes it as JSON
   (``--json``; default ``<workdir>/bench_amplicon.json``). The tools' outputs stay in
   ``<workdir>/runs`` (replaced by the next run).

Prints figures; asserts nothing. Exit status 0 when every selected tool ran (a workflow
that was not run counts as ran: its row says why), 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pysam
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_lowfreq import ToolError  # noqa: E402
from bench.evaluation.afeval import (  # noqa: E402
    Evaluation,
    Key,
    evaluate,
    read_artefacts,
    read_ivar_tsv,
    read_truth,
    read_vcf_calls,
)
from bench.evaluation.vcfcompare import vcf_body  # noqa: E402

SAMPLE = "mixture"
FRACTIONS: tuple[float, ...] = (0.05, 0.02, 0.01, 0.005, 0.002)
DATA_FILES = ("virus.fa.fai", "scheme.primer.bed", "mixture.bam.bai", "truth.vcf.gz.tbi", "artefacts.tsv")


@dataclass
class Row:
    """One benchmarked tool: timings, its calls scored against the truth, and why not."""

    tool: str
    wall_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    evaluation: Evaluation | None = None
    under_primer: tuple[int, int] | None = None  # found, total
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "wall_s": self.wall_s, "cpu_s": self.cpu_s, "peak_rss_mb": self.peak_rss_mb,
                "note": self.note, "under_primer": list(self.under_primer) if self.under_primer else None,
                "evaluation": self.evaluation.as_dict() if self.evaluation else None, **self.extra}


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
AMPLICON_VARIANTS: list[dict[str, Any]] = [
    {"end_skip": 0},  # config/amplicon.yaml
    {"end_skip": 0, "baseline_error": 0.0001},  # the floor for a library with rare PCR errors
    # ... and each sample's own QUAL threshold, for 0.5 expected false reports
    {"end_skip": 0, "baseline_error": 0.0001, "fp_budget": 0.5},
]


def _amplicon() -> ModuleType:
    """``test_data/amplicon.py``, registered in ``sys.modules`` so its workers can fork."""
    if "amplicon" not in sys.modules:
        spec = importlib.util.spec_from_file_location("amplicon", ROOT / "test_data" / "amplicon.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["amplicon"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["amplicon"]


def _generator_digest() -> str:
    h = hashlib.sha256()
    for name in ("amplicon.py", "viral.py", "generate.py"):
        h.update((ROOT / "test_data" / name).read_bytes())
    return h.hexdigest()[:16]


def ensure_data(workdir: Path, length: int, depth: float, seed: int,
                alleles_per_fraction: int = 20, artefacts: bool = True) -> tuple[Path, dict[str, Any]]:
    """The dataset folder for these parameters, generated unless a complete one made by the
    same generator source is there. Returns it and what was done (``generated``, seconds).
    ``artefacts`` False: sequencer errors only (no hotspots, PCR error sites, slippage)."""
    data = workdir / (f"amplicon-{length}-{depth:g}x-s{seed}-a{alleles_per_fraction}"
                      + ("" if artefacts else "-seqerr"))
    params = {"length": length, "depth": depth, "seed": seed, "alleles_per_fraction": alleles_per_fraction,
              "generator": _generator_digest(), **({} if artefacts else {"artefacts": False})}
    stamp = data / "params.json"
    if all((data / n).exists() for n in DATA_FILES) and stamp.exists() and json.loads(stamp.read_text()) == params:
        print(f"data: reusing {data}")
        return data, {"generated": False}
    if data.exists():
        shutil.rmtree(data)
    s = _amplicon().generate_amplicon_mixture(data, seed=seed, length=length, depth=depth, threads=2,
                                              alleles_per_fraction=alleles_per_fraction, artefacts=artefacts)
    stamp.write_text(json.dumps(params) + "\n")
    bam_mb = s.bam.stat().st_size / 1e6
    print(f"data: generated {length / 1000:g} kb, {s.n_amplicons} amplicons, {s.read_pairs} pairs "
          f"({s.variant_counts['total']} true alleles, {s.under_primer} under primers), BAM {bam_mb:.0f} MB, "
          f"in {s.seconds:.1f} s")
    return data, {"generated": True, "seconds": s.seconds, "read_pairs": s.read_pairs, "bam_mb": bam_mb,
                  "n_amplicons": s.n_amplicons, "unread_fraction": s.unread_fraction}


# --------------------------------------------------------------------------- #
# Running
# --------------------------------------------------------------------------- #
def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float, float]:
    """Run ``cmd``; its wall seconds, CPU seconds (user + system, with the descendants it
    waited for) and peak RSS (MiB) of its largest process. Raises :class:`ToolError`
    with the stderr tail (full stderr in the exception's ``stderr``) on failure."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            text = err.read().decode(errors="replace")
            exc = ToolError(f"{shlex.join(cmd)[:200]} exited with {code}:\n{text[-2000:]}")
            exc.stderr = text  # type: ignore[attr-defined]
            raise exc
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_engine(mode: str, bam: str, ref: str, bed: str, out_vcf: str, params: str = "{}") -> None:
    """The lowfreq engine in this process (the benchmark starts it as a child). ``mode``
    ``primers``: with the scheme if ``run_lowfreq`` takes one, else without, saying so in
    ``<out_vcf>.note``; ``plain``: without primers. ``params``: JSON of LowfreqParams
    keys to change."""
    from functions.core.primers import read_primer_bed
    from functions.lowfreq import LowfreqParams, run_lowfreq

    lowfreq = LowfreqParams(**json.loads(params))
    note = ""
    if mode == "primers":
        if "primers" in inspect.signature(run_lowfreq).parameters:
            try:
                run_lowfreq(bam, ref, lowfreq, out_vcf, primers=read_primer_bed(bed))
                return
            except TypeError as exc:
                if "primers" not in str(exc):
                    raise
                note = f"primers not accepted ({exc}): ran WITHOUT primer trimming"
        else:
            note = "run_lowfreq has no 'primers' keyword yet: ran WITHOUT primer trimming"
    run_lowfreq(bam, ref, lowfreq, out_vcf)
    if note:
        Path(out_vcf + ".note").write_text(note + "\n")


def _engine_cmd(mode: str, data: Path, out: Path, params: dict[str, Any] | None = None) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--run-engine", mode, str(data / "mixture.bam"),
            str(data / "virus.fa"), str(data / "scheme.primer.bed"), str(out), json.dumps(params or {})]


class Scorer:
    """Scores ``{key: AF}`` calls against the truth, with the alleles under primers apart."""

    def __init__(self, data: Path, genome_length: int) -> None:
        self.truth = read_truth(str(data / "truth.vcf.gz"))
        self.artefacts = read_artefacts(str(data / "artefacts.tsv"))
        self.genome_length = genome_length
        with open(data / "artefacts.tsv") as fh:
            rows = [line.rstrip("\n").split("\t") for line in fh][1:]
        self.artefact_kind: dict[Key, str] = {(r[0], int(r[1]), r[2], r[3]): r[4] for r in rows}
        with pysam.VariantFile(str(data / "truth.vcf.gz")) as fh:
            self.under: set[Key] = {(r.chrom, r.pos, r.ref, r.alts[0]) for r in fh
                                    if "UNDER_PRIMER" in r.info and r.ref and r.alts}

    def __call__(self, row: Row, calls: dict[Key, float | None]) -> Row:
        row.evaluation = evaluate(calls, self.truth, self.genome_length, bins=FRACTIONS, artefacts=self.artefacts)
        row.under_primer = (sum(k in calls for k in self.under), len(self.under))
        kinds: dict[str, int] = {}
        for k in row.evaluation.false_positives:
            kind = self.artefact_kind.get(k, "other")
            kinds[kind] = kinds.get(kind, 0) + 1
        row.extra["false_positives_by_kind"] = kinds
        return row


def bench_ivar(data: Path, work: Path, score: Scorer) -> list[Row]:
    missing = [t for t in ("samtools", "ivar") if shutil.which(t) is None]
    if missing:
        return [Row("ivar trim + variants -t 0.001 (PASS)", note=f"not installed: {' '.join(missing)}")]
    q = shlex.quote
    bam, bed, ref = q(str(data / "mixture.bam")), q(str(data / "scheme.primer.bed")), q(str(data / "virus.fa"))
    trimmed, prefix = work / "trimmed", work / "ivar"
    script = (
        f"ivar trim -i {bam} -b {bed} -p {q(str(trimmed))} -e -m 30 -q 0 > {q(str(work / 'ivar_trim.log'))}"
        f" && samtools sort -@ 2 -o {q(str(trimmed))}.sorted.bam {q(str(trimmed))}.bam"
        f" && samtools index {q(str(trimmed))}.sorted.bam"
        f" && samtools mpileup -aa -A -d 0 -B -Q 0 --reference {ref} {q(str(trimmed))}.sorted.bam"
        f" | ivar variants -p {q(str(prefix))} -q 20 -t 0.001 -r {ref}"
    )
    wall, cpu, rss = timed(["bash", "-o", "pipefail", "-c", script])
    tsv = str(prefix) + ".tsv"
    ref_s = str(data / "virus.fa")
    return [
        score(Row("ivar trim + variants -t 0.001 (PASS)", wall, cpu, rss), read_ivar_tsv(tsv, ref_s)),
        score(Row("ivar trim + variants -t 0.001 (all rows)", wall, cpu, rss),
              read_ivar_tsv(tsv, ref_s, pass_only=False)),
    ]


def bench_bcftools(data: Path, work: Path, score: Scorer) -> list[Row]:
    label = "bcftools mpileup | call -mv --ploidy 1 (trimmed)"
    trimmed = work / "trimmed.sorted.bam"
    if shutil.which("bcftools") is None:
        return [Row(label, note="not installed: bcftools")]
    if not trimmed.exists():
        return [Row(label, note="no iVar-trimmed BAM (run ivar too)")]
    q = shlex.quote
    out = work / "bcftools.vcf"
    script = (
        f"bcftools mpileup -f {q(str(data / 'virus.fa'))} -d 100000 -a AD,ADF,ADR -Q 20 -q 20 {q(str(trimmed))}"
        f" | bcftools call -mv --ploidy 1 -o {q(str(out))}"
    )
    wall, cpu, rss = timed(["bash", "-o", "pipefail", "-c", script])
    return [score(Row(label, wall, cpu, rss), read_vcf_calls(str(out), str(data / "virus.fa")))]


def bench_lowfreq(data: Path, work: Path, score: Scorer, primers: bool,
                  params: dict[str, Any] | None = None) -> list[Row]:
    label = "lowfreq, primer-trimmed (one process)" if primers else "lowfreq, no primer trimming"
    if params:
        label += ", " + ", ".join(f"{k} {v}" for k, v in params.items())
    name = "lowfreq_primers" if primers else "lowfreq_plain"
    out = work / (name + "".join(f"_{k}{v}" for k, v in (params or {}).items()) + ".vcf")
    wall, cpu, rss = timed(_engine_cmd("primers" if primers else "plain", data, out, params), cwd=ROOT)
    note_file = Path(str(out) + ".note")
    row = Row(label, wall, cpu, rss, note=note_file.read_text().strip() if note_file.exists() else "")
    if row.note:
        row.tool = "lowfreq (primers NOT applied)"
    return [score(row, read_vcf_calls(str(out), str(data / "virus.fa")))]


def _first_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower() or "exception" in ln.lower():
            return ln[:160]
    return (lines[-1] if lines else "no stderr")[:160]


def bench_workflow(data: Path, work: Path, score: Scorer, regions: int) -> list[Row]:
    """The workflow through the snakemake CLI in ``work/workflow`` (config as
    tests/test_viral.py builds it, plus ``calling.primers``)."""
    run_dir = work / "workflow"
    shutil.copytree(ROOT / "config", run_dir / "config")
    (run_dir / "config" / "samples.tsv").write_text(f"sample\tbam\n{SAMPLE}\t{data / 'mixture.bam'}\n")
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg = {**cfg, "reference": str(data / "virus.fa"), "samples": "config/samples.tsv",
           "plan": {**cfg["plan"], "n_regions": regions},
           "calling": {**cfg["calling"], "engine": "lowfreq", "primers": str(data / "scheme.primer.bed"),
                       # config/amplicon.yaml's settings
                       "lowfreq": {**cfg["calling"]["lowfreq"], **AMPLICON_VARIANTS[0]}},
           "executor": {**cfg["executor"], "progress": False},
           "storage": {**cfg["storage"], "prefix": f"bench-amplicon-{os.getpid()}"}}
    cfg_path = run_dir / "config" / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    (run_dir / "tmp").mkdir()
    env = dict(os.environ, TMPDIR=str(run_dir / "tmp"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(run_dir),
           "--cores", "2", "--configfile", str(cfg_path), "--quiet"]
    label = f"workflow lowfreq + primers, end_skip 0 ({regions} regions, 2 cores)"
    try:
        wall, cpu, rss = timed(cmd, env=env)
    except ToolError as exc:
        why = _first_error_line(getattr(exc, "stderr", str(exc)))
        print(f"workflow failed:\n{str(exc)[-3000:]}", file=sys.stderr)
        return [Row("workflow", note=f"workflow: not run ({why})")]
    vcf = run_dir / "results" / f"{SAMPLE}.vcf.gz"
    return [score(Row(label, wall, cpu, rss), read_vcf_calls(str(vcf), str(data / "virus.fa")))]


def _guarded(label: str, bench: Any) -> list[Row]:
    try:
        rows: list[Row] = bench()
        return rows
    except (ToolError, OSError, ValueError) as exc:
        print(f"{label} failed: {exc}", file=sys.stderr)
        return [Row(label, note="FAILED: " + str(exc).splitlines()[0][:80] + " (stderr above)",
                    extra={"failed": True})]


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #
def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[Row]) -> str:
    bands = " ".join(f"{f'{b * 100:g}%':>6s}" for b in FRACTIONS)
    head = (f"{'tool':48s} {'wall s':>7s} {'CPU s':>7s} | {bands} | {'primer':>6s} | {'FP':>4s} {'artef':>5s}"
            f" | {'AF err':>6s}")
    out = [head, "-" * len(head)]
    for r in rows:
        ev = r.evaluation
        if ev is None:
            out.append(f"{r.tool:48s} {_fmt(r.wall_s, '7.1f')} {_fmt(r.cpu_s, '7.1f')} | {r.note}")
            continue
        cells = " ".join(f"{f'{tp}/{n}':>6s}" for tp, n in (ev.found["all"][b] for b in FRACTIONS))
        up = f"{r.under_primer[0]}/{r.under_primer[1]}" if r.under_primer else "-"
        af = ev.af_error_summary()["median_abs"]
        out.append(f"{r.tool:48s} {_fmt(r.wall_s, '7.1f')} {_fmt(r.cpu_s, '7.1f')} | {cells} | {up:>6s} | "
                   f"{len(ev.false_positives):4d} {len(ev.artefact_false_positives):5d} | {_fmt(af, '6.2f')}")
        fp_kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.extra.get("false_positives_by_kind", {}).items()))
        if fp_kinds:
            out.append(f"{'':48s}   FP by kind: {fp_kinds}")
        if r.note:
            out.append(f"{'':48s}   note: {r.note}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run-engine"]:  # internal: the lowfreq engine in a child process
        run_engine(*argv[1:7])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=30_000, help="genome length")
    ap.add_argument("--depth", type=float, default=10_000.0, help="mean read pairs per amplicon")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--alleles-per-fraction", type=int, default=20,
                    help="true alleles per band (lower it for genomes under ~15 kb)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "svc-bench-amplicon",
                    help="datasets (reused when made with the same parameters) and the tools' outputs")
    ap.add_argument("--json", type=Path, default=None, help="results (default: <workdir>/bench_amplicon.json)")
    ap.add_argument("--no-artefacts", action="store_true",
                    help="data with sequencer errors only: no strand hotspots, PCR error sites or slippage")
    ap.add_argument("--skip-workflow", action="store_true", help="skip (d), the snakemake run")
    ap.add_argument("--regions", type=int, default=4, help="plan.n_regions of the workflow run")
    ap.add_argument("--tools", default="ivar,bcftools,lowfreq,workflow", help="comma-separated subset to run")
    args = ap.parse_args(argv)
    tools = set(args.tools.split(","))
    args.workdir.mkdir(parents=True, exist_ok=True)
    data, made = ensure_data(args.workdir, args.length, args.depth, args.seed, args.alleles_per_fraction,
                             artefacts=not args.no_artefacts)
    score = Scorer(data, args.length)
    work = args.workdir / "runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    rows: list[Row] = []
    if "ivar" in tools:
        rows += _guarded("ivar", lambda: bench_ivar(data, work, score))
    if "bcftools" in tools:
        rows += _guarded("bcftools", lambda: bench_bcftools(data, work, score))
    if "lowfreq" in tools:
        rows += _guarded("lowfreq, primer-trimmed", lambda: bench_lowfreq(data, work, score, primers=True))
        rows += _guarded("lowfreq, no primer trimming", lambda: bench_lowfreq(data, work, score, primers=False))
        # The amplicon settings (config/amplicon.yaml: end_skip 0) and lower error floors:
        # what sensitivity costs in false positives on this data.
        for extra in AMPLICON_VARIANTS:
            rows += _guarded(f"lowfreq {extra}", lambda extra=extra: bench_lowfreq(data, work, score, True, extra))
    identical: bool | None = None
    if "workflow" in tools and not args.skip_workflow:
        rows += _guarded("workflow", lambda: bench_workflow(data, work, score, args.regions))
        wf_vcf, one = work / "workflow" / "results" / f"{SAMPLE}.vcf.gz", work / "lowfreq_primers_end_skip0.vcf"
        if rows[-1].evaluation is not None and one.exists():
            identical = vcf_body(str(wf_vcf)) == vcf_body(str(one))

    n_truth = len(score.truth)
    print(f"\ndataset: {data} ({args.length / 1000:g} kb, {args.depth:g} pairs per amplicon, seed {args.seed}; "
          f"{n_truth} true alleles, {len(score.under)} under primers). Found/total per designed fraction; "
          "'primer': alleles under primers found; FP: PASS calls not in the truth ('artef': at artefact sites); "
          "AF err: median |called - truth AF| of the true positives, percentage points")
    print(table(rows))
    if identical is not None:
        print(f"workflow VCF body identical to the one-process primer-trimmed lowfreq run: {identical}")
    result = {"dataset": {"path": str(data), "length": args.length, "depth": args.depth, "seed": args.seed,
                          "true_alleles": n_truth, "under_primer": len(score.under), **made},
              "bands": list(FRACTIONS), "runs": [r.as_dict() for r in rows],
              "workflow_identical_to_single": identical}
    out = args.json or args.workdir / "bench_amplicon.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results: {out}")
    return 1 if any(r.extra.get("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
