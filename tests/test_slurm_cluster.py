"""The SLURM test cluster (tests/services/slurm.sh) really runs jobs: a batch job runs
on the node and ends COMPLETED with exit code 0, and two 1-CPU jobs run side by side
(what lets Snakemake's SLURM executor run per-region jobs in parallel)."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster


def job_fields(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    """The fields of ``scontrol show job`` (one line), as key -> value."""
    res = cluster.run("scontrol", "show", "-o", "job", job_id, timeout=10)
    assert res.returncode == 0, res.stderr
    return dict(re.findall(r"(\w+)=(\S*)", res.stdout))


def submit(cluster: SlurmCluster, workdir: Path, *args: str) -> str:
    res = cluster.run("sbatch", "--parsable", "--chdir", str(workdir), *args, timeout=60)
    assert res.returncode == 0, f"sbatch failed: {res.stderr}"
    return res.stdout.strip().split(";")[0]


def test_batch_job_runs_and_completes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    t0 = time.monotonic()
    job_id = submit(slurm_cluster, tmp_path, "--wait", "--job-name", "svc-hello", "--output", str(out),
                    "--wrap", "echo $SLURM_JOB_ID; hostname")
    took = time.monotonic() - t0
    assert job_id.isdigit()
    assert out.read_text().split() == [job_id, socket.gethostname()]
    fields = job_fields(slurm_cluster, job_id)
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), fields
    assert fields["Partition"] == "debug" and fields["NodeList"] == "localhost", fields
    log = slurm_cluster.ctld_log()
    assert re.search(rf"_job_complete: JobId={job_id} WEXITSTATUS 0\b", log), log[-2000:]
    # The first job after the cluster starts may wait for slurmctld's first scheduling
    # pass (about 3 s after it starts); later ones start at once.
    assert took < 15, f"a one-line job took {took:.1f} s"


def test_two_one_cpu_jobs_run_side_by_side(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    cpus = os.cpu_count() or 1
    if cpus < 2:
        pytest.fail(f"this machine has {cpus} CPU: the test cluster cannot run two 1-CPU jobs at once")
    script = "date +%s.%N; sleep 2; date +%s.%N"
    jobs = {name: submit(slurm_cluster, tmp_path, "--ntasks", "1", "--cpus-per-task", "1",
                         "--job-name", f"svc-{name}", "--output", str(tmp_path / f"{name}.out"), "--wrap", script)
            for name in ("a", "b")}
    # Poll until both have ended, noting whether they were ever both RUNNING at once.
    deadline = time.monotonic() + 15
    both_running = False
    while True:
        states = {name: job_fields(slurm_cluster, job_id)["JobState"] for name, job_id in jobs.items()}
        both_running |= all(state == "RUNNING" for state in states.values())
        if all(state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING") for state in states.values()):
            break
        assert time.monotonic() < deadline, f"jobs still not done after 15 s: {states}"
        time.sleep(0.2)
    fields = {name: job_fields(slurm_cluster, job_id) for name, job_id in jobs.items()}
    for name, f in fields.items():
        assert (f["JobState"], f["ExitCode"], f["NumCPUs"]) == ("COMPLETED", "0:0", "1"), (name, f)
    # Each job wrote when it started and ended: the two intervals overlap.
    spans = {name: [float(x) for x in (tmp_path / f"{name}.out").read_text().split()] for name in jobs}
    starts, ends = [s[0] for s in spans.values()], [s[1] for s in spans.values()]
    assert max(starts) < min(ends), f"the jobs ran one after the other: {spans}"
    assert both_running, f"never saw both jobs RUNNING at once (spans {spans})"
