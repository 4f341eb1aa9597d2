"""Cluster scatter mode on two SLURM compute nodes that are other hosts (issue 22,
item 4): each node a network namespace with its own address, hostname, slurmd and
node-local TMPDIR (tests/netns_host.py), the folder shared as on a cluster, the Ceph
gateway the one store (reached at the driver's address on the nodes' links). Through
the real ``snakemake --profile profiles/slurm``: the scatter jobs land on both nodes,
and the VCFs equal the local Lithops run's."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from conftest import SAMPLES, ceph_lithops_config
from netns_host import Host, netns_host
from slurm_cluster import SlurmCluster, start_on_hosts, stop
from tcp_forward import forward
from test_e2e import make_workdir, snakemake
from test_slurm_workflow import snakemake_on_slurm

from bench.evaluation.vcfcompare import vcf_body

pytestmark = pytest.mark.e2e
NODES = ("svcnode1", "svcnode2")
FIRST = 61  # the nodes' subnets: 10.211.61.0/30, 10.211.62.0/30


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[SlurmCluster, list[Host], Path]]:
    """The cluster, its nodes, and the driver's own temp folder, which the nodes do not see."""
    # A short folder: SLURM's job sockets live under it (slurm.sh allows 70 characters).
    state = Path(tempfile.mkdtemp(prefix="nodes-"))
    (state / "scratch").mkdir()
    driver_tmp = tmp_path / "driver-tmp"
    driver_tmp.mkdir()
    Path("/run/slurm").mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        hosts = [stack.enter_context(netns_host(tmp_path / name, name, FIRST + i, hide=[driver_tmp], shared_tmp=True,
                                                private=[state / "scratch", Path("/run/slurm")]))
                 for i, name in enumerate(NODES)]
        cluster = start_on_hosts(state, hosts)
        stack.callback(stop, state)
        yield cluster, hosts, driver_tmp


def test_scatter_jobs_run_on_both_nodes_and_change_nothing(two_nodes: tuple[SlurmCluster, list[Host], Path],
                                                           ceph_s3: dict, tmp_path: Path) -> None:
    cluster, hosts, driver_tmp = two_nodes
    local = make_workdir(tmp_path / "local", plan__n_regions=5)
    assert (res := snakemake(local)).returncode == 0, res.stderr[-3000:]

    # The nodes reach the gateway at the driver's address on the first node's link (the
    # second node by its default route to the driver).
    gateway = ("127.0.0.1", int(ceph_s3["endpoint"].rsplit(":", 1)[1]))
    with forward((hosts[0].gateway, gateway[1]), gateway) as endpoint:
        wd = make_workdir(tmp_path / "nodes", plan__n_regions=5, executor__runner="snakemake", executor__jobs=2,
                          lithops_config="config/lithops/ceph-nodes.yaml", storage__bucket=ceph_s3["bucket"],
                          storage__prefix="nodes")
        cfg = ceph_lithops_config(dict(ceph_s3, endpoint=endpoint))
        (wd / "config" / "lithops" / "ceph-nodes.yaml").write_text(yaml.safe_dump(cfg))
        res = snakemake_on_slurm(cluster, wd, tmpdir=driver_tmp)
    assert res.returncode == 0, res.stderr[-4000:]
    for s in SAMPLES:
        assert vcf_body(str(wd / "results" / f"{s}.vcf.gz")) == vcf_body(str(local / "results" / f"{s}.vcf.gz"))
    scatter = [json.loads((wd / "work" / "scatter" / f"{j}.json").read_text()) for j in range(2)]
    assert sorted(s["host"] for s in scatter) == sorted(NODES), [s.get("host") for s in scatter]
    assert sum(len(s["fragments"]) for s in scatter) == 2 * 5
    # Each node's TMPDIR was its own: the jobs wrote there (Lithops' folder), and none of
    # it shows on the shared folder.
    for host in hosts:
        assert "lithops-root" in host.run(["ls", "-A", str(cluster.dir / "scratch")]).stdout.split(), host.name
    assert not any((cluster.dir / "scratch").iterdir())
