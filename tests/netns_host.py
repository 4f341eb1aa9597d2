"""A second host on this machine: a network namespace with its own address, hostname
and mounts, in which the project's checkout, the driver's temp folder and /tmp do not
exist (empty tmpfs over them), reachable over SSH with a key made for it; started by
tests/services/host.sh and stopped on leaving whatever happens (:func:`netns_host`).

What it stands for: a machine that shares nothing with the driver but the network,
as a cloud function or a lab's compute server does. Needs root, iproute2 and
Debian's openssh-server (`bash tests/install.sh`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "services" / "host.sh"


class HostError(RuntimeError):
    """The host did not start; the message is the start script's error output."""


@dataclass(frozen=True)
class Host:
    """A running host: its name (and hostname), its address, the driver's address on
    the link to it (``gateway``) and the private key that logs in as root."""

    name: str
    address: str
    gateway: str
    key: Path

    def ssh_command(self, command: str) -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                f"root@{self.address}", command]

    def run(self, command: str | Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``command`` (a shell line, or an argument list quoted for the remote shell)
        on the host; never raises for its exit status."""
        line = command if isinstance(command, str) else shlex.join(command)
        return subprocess.run(self.ssh_command(line), capture_output=True, text=True, timeout=timeout)


def namespaces() -> list[str]:
    """The names of the network namespaces on this machine."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@contextmanager
def netns_host(state: Path, name: str, index: int, hide: Sequence[Path] = (), shared_tmp: bool = False,
               private: Sequence[Path] = (), start_timeout: float = 60, stop_timeout: float = 30) -> Iterator[Host]:
    """A running host ``name`` on 10.211.``index``.2 (the driver is .1 on its link),
    its keys and logs in ``state``, with the folders ``hide`` hidden from it. A cluster
    node: ``shared_tmp`` (this machine's /tmp, not a fresh one) and ``private``
    (folders that are the host's own, empty at start)."""
    env = dict(os.environ, HOST_TMP="shared" if shared_tmp else "own", HOST_PRIVATE=" ".join(map(str, private)))
    try:
        res = subprocess.run(["bash", str(SCRIPT), "start", str(state), name, str(index), *map(str, hide)],
                             capture_output=True, text=True, timeout=start_timeout, env=env)
        if res.returncode != 0:
            raise HostError(res.stderr.strip()[-2000:])
        address, key = res.stdout.split()[-2:]
        yield Host(name, address, address.rsplit(".", 1)[0] + ".1", Path(key))
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state), name], capture_output=True, timeout=stop_timeout)
