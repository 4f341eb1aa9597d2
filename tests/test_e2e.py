"""End to end through the real ``snakemake`` command line, default config
(Lithops localhost compute, local object store), in a scratch working directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SAMPLES
from helpers import whole_genome

from bench.evaluation.vcfcompare import vcf_body

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def make_workdir(path: Path, **overrides: object) -> Path:
    """A working directory laid out like the repository, config possibly changed."""
    shutil.copytree(ROOT / "config", path / "config")
    (path / "test_data").symlink_to(ROOT / "test_data")
    if overrides:
        cfg_path = path / "config" / "config.yaml"
        cfg = yaml.safe_load(cfg_path.read_text())
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split("__")
            node = cfg
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        cfg_path.write_text(yaml.safe_dump(cfg))
    (path / "tmp").mkdir()
    return path


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TMPDIR=str(workdir / "tmp"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--cores", "2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wd = make_workdir(tmp_path_factory.mktemp("e2e"), plan__n_regions=11)
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


def test_default_run_writes_indexed_vcfs_identical_to_whole_genome(finished_run: Path, tmp_path: Path) -> None:
    for s in SAMPLES:
        vcf = finished_run / "results" / f"{s}.vcf.gz"
        assert vcf.exists() and (finished_run / "results" / f"{s}.vcf.gz.tbi").exists()
        assert "SN\t0\tnumber of records:" in (finished_run / "results" / f"{s}.stats.txt").read_text()
        assert vcf_body(str(vcf)) == vcf_body(whole_genome(s, tmp_path))
        header = [ln for ln in __import__("gzip").open(vcf, "rt") if ln.startswith("##")]
        assert any(ln.startswith("##source=serverless-variant-calling") for ln in header)
        assert any(ln.startswith("##svc_command=bcftools mpileup") for ln in header)
        assert sum(ln.startswith("##contig=") for ln in header) == 3
    plan = (finished_run / "work" / "plans" / "sampleA.tsv").read_text()
    assert "#sample=sampleA" in plan and len([ln for ln in plan.splitlines() if ln[:1].isdigit()]) == 11
    log = (finished_run / "work" / "logs" / "call.log").read_text()
    assert "called 2 sample(s) in 22 regions: 22 functions run, 0 fragments reused" in log

    # Planning and merging report what they read: the BAI and the BAM header (2 GETs),
    # and one GET per fragment.
    assert "#planning_gets=2\n" in plan
    stats = (finished_run / "results" / "sampleA.stats.txt").read_text().splitlines()
    assert stats[0].startswith("# svc merge: 11 fragments read from object storage in 11 GETs")


def test_a_run_says_where_its_time_went(finished_run: Path) -> None:
    """Every step's log ends with its timing line and every function's stats carry its
    phases; the breakdown made from them adds up to the run's wall, and the report shows
    it (pipeline/phases.py)."""
    from pipeline.phases import breakdown, read_functions, read_steps

    logs = finished_run / "work" / "logs"
    steps = read_steps(logs)
    assert sorted(s.name for s in steps) == sorted(p.stem for p in logs.glob("*.log"))
    assert all(s.process_start <= s.entered <= s.ended for s in steps)
    runs = read_functions([finished_run / "work" / "calls" / f"{s}.json" for s in SAMPLES])
    assert len(runs) >= 11
    assert all({"setup", "fetch_bam", "scan", "fetch_reference", "engine", "write", "put"} <= set(r.phases)
               for r in runs)
    assert all(sum(r.phases.values()) <= r.seconds + 0.01 for r in runs)
    b = breakdown(steps, runs)
    assert sum(b.pieces.values()) == pytest.approx(b.wall, abs=1e-6)
    assert 0 < b.function_wall < b.wall
    html = (finished_run / "results" / "report.html").read_text()
    assert "<h2>Where the time went</h2>" in html and "fixed cost" in html


def test_a_run_says_what_it_ran_on(finished_run: Path) -> None:
    """Provenance: the VCF header names the version, the engine, its command without
    temporary paths, the reference with its contigs' MD5s and the region count;
    results/versions.tsv lists the local steps' versions and the functions'."""
    import hashlib

    import pysam
    from helpers import DATA

    from functions.core.version import __version__

    contigs = {c["name"]: c for c in json.loads((finished_run / "work" / "staged" / "reference.json").read_text())[
        "contigs"]}
    with pysam.FastaFile(str(DATA / "ref.fa")) as fa:
        want = {name: hashlib.md5(fa.fetch(name).upper().encode()).hexdigest() for name in fa.references}
    assert {n: c["md5"] for n, c in contigs.items()} == want
    with pysam.VariantFile(str(finished_run / "results" / "sampleA.vcf.gz")) as fh:
        header = str(fh.header)
    for name, md5 in want.items():
        assert f"##contig=<ID={name},length={contigs[name]['length']},md5={md5}>" in header
    assert f"##source=serverless-variant-calling {__version__}" in header
    assert "##svc_engine=bcftools" in header and "##svc_regions=11" in header
    assert "##svc_command=bcftools mpileup" in header and "svc-region-" not in header and "slice0" not in header
    rows = [ln.split("\t") for ln in (finished_run / "results" / "versions.tsv").read_text().splitlines()]
    assert rows[0] == ["component", "version", "where"]
    assert ["serverless-variant-calling", __version__, "local steps"] in rows
    assert ["serverless-variant-calling", __version__, "functions"] in rows
    assert {r[0] for r in rows[1:] if r[2] == "local steps"} >= {"pysam", "htslib", "lithops", "snakemake", "numpy"}


def test_a_successful_runs_logs_are_for_a_person(finished_run: Path) -> None:
    """INFO lines only (config logs.debug is false), no Lithops wait loop, nothing that
    reads like a failure; the progress written to a non-terminal is whole lines."""
    logs = finished_run / "work" / "logs"
    text = {p.name: p.read_text() for p in logs.glob("*.log")}
    assert text and all(" DEBUG " not in t for t in text.values())
    assert not [n for n, t in text.items() if "lithops.wait" in t or "Waiting for" in t]
    for name, t in text.items():
        for bad in ("Traceback", " ERROR ", "signal 9", "exited with signal"):
            assert bad not in t, (name, bad)
    assert " INFO pipeline" in text["call.log"] and "called 2 sample(s)" in text["call.log"]


def test_rerun_after_losing_fragments_recomputes_only_those(finished_run: Path, tmp_path: Path) -> None:
    store_root = finished_run / "tmp" / f"lithops-{os.environ.get('USER', 'root')}" / "storage"
    frags = sorted((store_root / "svc" / "fragments" / "sampleA").glob("*.vcf.gz"))
    assert len(frags) == 11
    for f in frags[2:5]:
        f.unlink()
    res = snakemake(finished_run, "--forcerun", "call")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "3 functions run, 19 fragments reused" in res.stderr
    calls = json.loads((finished_run / "work" / "calls" / "sampleA.json").read_text())
    assert sum(not f["reused"] for f in calls["fragments"]) == 3
    assert vcf_body(str(finished_run / "results" / "sampleA.vcf.gz")) == vcf_body(whole_genome("sampleA", tmp_path))


def test_unknown_config_key_stops_with_one_line(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path, plan__n_region=3)
    res = snakemake(wd)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert lines == ["error: config: unknown key 'n_region' in plan (allowed: max_region_length, "
                     "min_region_bytes, n_regions, padding, target_bytes); fix the spelling or remove it"]
    assert not (wd / "results").exists()


def test_malformed_sample_sheet_row_stops_with_one_line(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path)
    (wd / "config" / "samples.tsv").write_text("sample\tbam\nsampleA\ttest_data/sampleA.bam\nsampleA\tx.bam\n")
    res = snakemake(wd)
    assert res.returncode != 0
    assert "error: sample sheet config/samples.tsv row 3: duplicate sample 'sampleA'" in res.stderr
    assert not (wd / "results").exists()


@pytest.mark.parametrize("overlay", [None, "config/slurm.yaml", "config/joint.yaml"])
def test_lint_and_dry_run(overlay: str | None) -> None:
    """The default workflow, its cluster scatter mode and its joint mode."""
    extra = ["--configfile", overlay] if overlay else []
    res = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--cores", "1", *extra], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    lints = {ln.strip() for ln in (res.stdout + res.stderr).splitlines() if ln.strip().startswith("* ")}
    # The one lint we accept: rules run in the project's own Python environment
    # (installed by pyproject.toml), not in per-rule conda envs or containers.
    assert lints <= {"* Specify a conda environment or container for each rule.:"}, lints
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--forceall", *extra], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    rules = {"call_scatter": overlay == "config/slurm.yaml", "plan_joint": overlay == "config/joint.yaml",
             "plan": overlay != "config/joint.yaml", "call": True, "merge": True}
    for rule, expected in rules.items():
        assert (f"rule {rule}:" in res.stdout) == expected, (rule, res.stdout[-2000:])
