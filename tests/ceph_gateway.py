"""A real S3 server: a single-node Ceph cluster with a RADOS Gateway on 127.0.0.1:7480,
started in a folder by tests/services/ceph.sh, with an empty bucket, and stopped on
leaving whatever happens (:func:`ceph_gateway`). The test suite's session fixture
``ceph_s3`` (conftest.py) and the benchmark harness (bench/harness.py) both use it.

Needs Debian's radosgw, ceph-mon and ceph-osd (`bash tests/install.sh`) and boto3.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "services" / "ceph.sh"


class CephError(RuntimeError):
    """The gateway did not start; the message is the start script's error output."""


@contextmanager
def ceph_gateway(state: Path, bucket: str, start_timeout: float = 240,
                 stop_timeout: float = 120) -> Iterator[dict[str, str]]:
    """A running gateway whose state lives in ``state``, with an empty ``bucket``.
    Yields ``endpoint``, ``access_key``, ``secret_key`` and ``bucket``."""
    try:
        res = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True,
                             timeout=start_timeout)
        if res.returncode != 0:
            raise CephError(res.stderr.strip()[-2000:])
        endpoint, access_key, secret_key = res.stdout.split()[-3:]
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        yield {"endpoint": endpoint, "access_key": access_key, "secret_key": secret_key, "bucket": bucket}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=stop_timeout)
