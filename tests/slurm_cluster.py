"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd on
localhost, started by tests/services/slurm.sh (:func:`start`) and stopped by it
(:func:`stop`). The session fixture ``slurm_cluster`` in conftest.py runs one for the
whole session, as ``ceph_s3`` does for Ceph.

Needs root and Debian's slurmctld, slurmd, slurm-client and munge (`bash
tests/install.sh`); a machine without them fails the test, it never skips it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from netns_host import Host

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "services" / "slurm.sh"
INSTALL = "bash tests/install.sh"
PROGRAMS = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol", "srun")


@dataclass(frozen=True)
class SlurmCluster:
    """A running test cluster: its folder, its slurm.conf and an environment for its
    client commands (``os.environ`` with ``SLURM_CONF`` set)."""

    dir: Path
    conf: Path
    env: dict[str, str] = field(repr=False)

    def log(self, daemon: str = "slurmctld") -> str:
        """The log of one daemon (slurmctld, slurmd or munged) so far."""
        path = self.dir / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def ctld_log(self) -> str:
        """slurmctld's log so far (job allocations and completions, with exit codes)."""
        return self.log("slurmctld")

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster (bounded, output captured)."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)


def stop(state: Path) -> None:
    """Stop the cluster kept in ``state`` (daemons, jobs, the /run/slurm/conf link)."""
    subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=60, check=False)


def start(state: Path) -> SlurmCluster:
    """Start a cluster with all its files in ``state``; fails the test if it cannot."""
    missing = [p for p in PROGRAMS if shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if missing:
        pytest.fail(f"SLURM is not installed (no {', '.join(missing)}); install it with `{INSTALL}`")
    if os.geteuid() != 0:
        pytest.fail("the SLURM test cluster runs its daemons as root (tests/services/slurm.sh); run the tests as root")
    try:
        res = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=90,
                             check=False)
    except subprocess.TimeoutExpired:
        stop(state)
        pytest.fail(f"tests/services/slurm.sh start did not return within 90 s; logs in {state / 'log'}")
    if res.returncode != 0:
        stop(state)
        pytest.fail(f"could not start the SLURM test cluster (install it with `{INSTALL}`): {res.stderr[-3000:]}")
    conf = Path(res.stdout.strip().splitlines()[-1])
    env = dict(os.environ, SLURM_CONF=str(conf))
    return SlurmCluster(dir=state, conf=conf, env=env)


def start_on_hosts(state: Path, hosts: list[Host], port: int = 6917, timeout: float = 60) -> SlurmCluster:
    """A cluster whose compute nodes are ``hosts`` (tests/netns_host.py, started with a
    shared /tmp and /run/slurm and ``state``/scratch their own): munged and slurmctld
    here (on ``port``, apart from a one-node cluster's), one slurmd on each host, named
    as the host. Returns once every node is idle and a first job ran; fails the test
    otherwise. Stop it with :func:`stop`, then the hosts."""
    nodes = " ".join(f"{h.name}={h.address}" for h in hosts)
    env = dict(os.environ, SLURM_NODES=nodes, SLURM_CTLD_ADDR=hosts[0].gateway, SLURM_CTLD_PORT=str(port))
    res = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=90,
                         env=env, check=False)
    if res.returncode != 0:
        stop(state)
        pytest.fail(f"could not start the SLURM controller for {nodes}: {res.stderr[-3000:]}")
    conf = Path(res.stdout.strip().splitlines()[-1])
    for host in hosts:
        # srun inside a job finds the cluster by /run/slurm/conf (the plugin strips SLURM_CONF there).
        out = host.run(f"ln -sfn {conf.parent} /run/slurm/conf && SLURM_CONF={conf} timeout 10 slurmd -c -f {conf} "
                       f"-N {host.name} </dev/null >>{state}/log/start.log 2>&1", timeout=30)
        if out.returncode != 0:
            stop(state)
            pytest.fail(f"slurmd did not start on {host.name}: {out.stderr}; {state / 'log'}")
    # Every node idle and a first job run, as slurm.sh waits for a one-node cluster.
    ready = subprocess.run(["bash", str(SCRIPT), "ready", str(state)], capture_output=True, text=True,
                           timeout=timeout, check=False)
    if ready.returncode != 0:
        pytest.fail(f"the cluster on {nodes} is not ready: {ready.stderr[-3000:]}")
    return SlurmCluster(dir=state, conf=conf, env=dict(os.environ, SLURM_CONF=str(conf)))
