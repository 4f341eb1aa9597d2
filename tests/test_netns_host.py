"""The second-host fixture (tests/netns_host.py) is what it claims: another hostname
and address, reachable over SSH with its own key, the same Python with its packages,
and none of the driver's files: the checkout, test_data/, the driver's temp folder and
/tmp are empty there. Stopping it leaves no namespace, link, mount or process."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, ROOT
from netns_host import HostError, namespaces, netns_host


def test_a_host_that_shares_nothing_but_the_network(tmp_path: Path) -> None:
    driver_tmp = Path(os.environ["TMPDIR"])
    marker = tmp_path / "driver-only.txt"
    marker.write_text("the driver's\n")
    with netns_host(tmp_path / "host", "svc-probe", 41, hide=[ROOT, driver_tmp]) as host:
        assert host.address == "10.211.41.2" and host.gateway == "10.211.41.1"
        res = host.run("hostname")
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "svc-probe" != socket.gethostname()
        assert host.run("ls -A /tmp").stdout == ""  # (before Python: importing Lithops makes a folder there)
        # The same interpreter and packages, but not this project (its install points
        # into the hidden checkout).
        res = host.run(["python", "-c", "import sys, pysam, lithops; print(sys.executable)"])
        assert res.returncode == 0, res.stderr
        res = host.run(["python", "-c", "import functions"])
        assert res.returncode != 0 and "No module named 'functions'" in res.stderr
        for path in (ROOT / "README.md", DATA / "sampleA.bam", marker, driver_tmp):
            res = host.run(["test", "-e", str(path)])
            assert res.returncode != 0, f"{path} is visible on the host"
        assert host.run(["ls", "-A", str(ROOT)]).stdout == ""
        # Its /tmp is its own: what it writes there does not appear here.
        assert host.run("echo x > /tmp/host-only.txt").returncode == 0
        assert not Path("/tmp/host-only.txt").exists()
        # The driver reaches it, and it reaches the driver, on the veth pair only.
        assert host.run(["python", "-c", f"import socket; socket.create_connection(('{host.gateway}', 9), 1)"]
                        ).returncode != 0  # nothing listens on port 9: refused, not a hang
        name = f"svc-{host.name}"
        assert name in namespaces()
    assert name not in namespaces()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "svh41" not in links
    with open("/proc/mounts") as fh:
        assert not [line for line in fh if line.split()[0] in ("svc-host", "svc-hidden", "svc-tmp")]
    assert subprocess.run(["pgrep", "-f", f"{tmp_path}/host/launch.sh"], capture_output=True).returncode != 0


def test_a_host_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="cannot hide .*: not a folder"), \
            netns_host(tmp_path / "host", "svc-bad", 42, hide=[tmp_path / "missing"]):
        pass
    assert "svc-svc-bad" not in namespaces()
