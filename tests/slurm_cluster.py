"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd on
localhost, started once per session by tests/services/slurm.sh and stopped after it.

A test module uses it with

    from slurm_cluster import slurm_cluster_fixture  # noqa: F401

and asks for the fixture ``slurm_cluster``. (The function has another name so that the
test's argument does not shadow the import: ruff's F811.) pytest makes a separate
session fixture in every module that imports it, so the cluster itself is kept here,
once per process, and stopped when the last of them ends: two modules can both use it.

Needs root and Debian's slurmctld, slurmd, slurm-client and munge (`bash
tests/install.sh`); a machine without them fails the test, it never skips it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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


_cluster: SlurmCluster | None = None
_users = 0


def _stop(state: Path) -> None:
    subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=60, check=False)


def _start(state: Path) -> SlurmCluster:
    missing = [p for p in PROGRAMS if shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if missing:
        pytest.fail(f"SLURM is not installed (no {', '.join(missing)}); install it with `{INSTALL}`")
    if os.geteuid() != 0:
        pytest.fail("the SLURM test cluster runs its daemons as root (tests/services/slurm.sh); run the tests as root")
    try:
        res = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=90,
                             check=False)
    except subprocess.TimeoutExpired:
        _stop(state)
        pytest.fail(f"tests/services/slurm.sh start did not return within 90 s; logs in {state / 'log'}")
    if res.returncode != 0:
        _stop(state)
        pytest.fail(f"could not start the SLURM test cluster (install it with `{INSTALL}`): {res.stderr[-3000:]}")
    conf = Path(res.stdout.strip().splitlines()[-1])
    env = dict(os.environ, SLURM_CONF=str(conf))
    return SlurmCluster(dir=state, conf=conf, env=env)


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running one-node SLURM cluster (partition ``debug``, ``nproc`` CPUs, 500 MB per
    CPU unless a job asks for more), shared by the whole session."""
    global _cluster, _users
    if _cluster is None:
        _cluster = _start(tmp_path_factory.mktemp("slurm"))
    _users += 1
    try:
        yield _cluster
    finally:
        _users -= 1
        if _users == 0:
            state, _cluster = _cluster.dir, None
            _stop(state)
