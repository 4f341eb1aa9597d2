"""The workflow through a real SLURM cluster (tests/services/slurm.sh): the real
``snakemake`` command line with ``--profile profiles/slurm`` (Snakemake's SLURM executor
plugin), cluster scatter mode (executor.runner: snakemake). Every step is a SLURM job;
the VCFs must equal the local Lithops run's, and SLURM itself must say that the
per-region jobs ran and completed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES
from slurm_cluster import SlurmCluster
from test_e2e import make_workdir, snakemake

from bench.evaluation.vcfcompare import vcf_body

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e
JOBS = 3


def snakemake_on_slurm(cluster: SlurmCluster, workdir: Path, *args: str,
                       tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``snakemake --profile profiles/slurm`` as a lab user runs it, plus what this test
    cluster needs: status by squeue (no accounting database here, and sacct would hang:
    shared/notes/slurm.md), quick status polls, and the job logs kept. Bounded by
    ``timeout``: a hung executor must fail the test, not stall the suite. ``tmpdir``:
    snakemake's TMPDIR (``workdir``/tmp unless given)."""
    env = dict(cluster.env, TMPDIR=str(tmpdir or workdir / "tmp"))
    cmd = ["timeout", "-k", "5", "420", sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--profile", str(ROOT / "profiles" / "slurm"),
           "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
           "--seconds-between-status-checks", "1", "--slurm-keep-successful-logs", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=450)


def job(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    res = cluster.run("scontrol", "show", "-o", "job", job_id, timeout=10)
    assert res.returncode == 0, f"scontrol does not know job {job_id}: {res.stderr}"
    return dict(re.findall(r"(\w+)=(\S*)", res.stdout))


def test_workflow_runs_its_regions_as_slurm_jobs(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    local = make_workdir(tmp_path / "local", plan__n_regions=5)
    assert (res := snakemake(local)).returncode == 0, res.stderr[-3000:]

    wd = make_workdir(tmp_path / "slurm", plan__n_regions=5, executor__runner="snakemake", executor__jobs=JOBS)
    res = snakemake_on_slurm(slurm_cluster, wd)
    assert res.returncode == 0, res.stderr[-4000:]
    for s in SAMPLES:
        assert vcf_body(str(wd / "results" / f"{s}.vcf.gz")) == vcf_body(str(local / "results" / f"{s}.vcf.gz"))
        assert (wd / "results" / f"{s}.vcf.gz.tbi").exists()

    # Each scatter job recorded the SLURM job it ran in; SLURM says each of them was a
    # call_scatter job that COMPLETED with exit code 0 on this node.
    scatter = [json.loads((wd / "work" / "scatter" / f"{j}.json").read_text()) for j in range(JOBS)]
    ids = [s["slurm_job_id"] for s in scatter]
    assert all(ids) and len(set(ids)) == JOBS, ids
    assert sum(len(s["fragments"]) for s in scatter) == 2 * 5
    ctld = slurm_cluster.ctld_log()
    for job_id in ids:
        fields = job(slurm_cluster, job_id)
        assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", fields
        assert "call_scatter" in fields.get("Comment", "") + fields.get("StdOut", ""), fields
        assert re.search(rf"_job_complete: JobId={job_id} WEXITSTATUS 0", ctld), f"job {job_id} not in slurmctld log"
    # The plugin's job logs (slurm_logs/rule_<rule>/<wildcards>/<SLURM job id>.log): the
    # scatter jobs' ids match, and the other steps ran under SLURM too (all but the
    # gather step, a local rule).
    logs: dict[str, set[str]] = {}
    for p in (wd / ".snakemake" / "slurm_logs").rglob("*.log"):
        logs.setdefault(p.relative_to(wd / ".snakemake" / "slurm_logs").parts[0], set()).add(p.stem)
    assert logs["rule_call_scatter"] == set(ids)
    assert {"rule_stage_reference", "rule_stage_sample", "rule_plan", "rule_merge"} <= set(logs), logs
    assert not {"rule_call", "rule_report", "rule_all"} & set(logs), logs  # local rules (localrule: True)
