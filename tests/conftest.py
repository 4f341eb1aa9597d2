"""Shared fixtures: an isolated local object store per test session, test data paths,
and a runner fixture so the same exactness tests go through the serial runner and
through Lithops."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Lithops keeps its local object store and job files under $TMPDIR/lithops-$USER,
# computed when lithops is first imported: isolate it before anything imports it.
_SESSION_TMP = tempfile.mkdtemp(prefix="svc-tests-")
os.environ["TMPDIR"] = _SESSION_TMP
tempfile.tempdir = None
# Removed when the session ends (pytest's own tmp_path folders live in there too).
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)

import pysam  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "test_data"
SAMPLES = ("sampleA", "sampleB")
LITHOPS_LOCAL = {
    "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
    "localhost": {"worker_processes": 2, "version": 1},
}


# htslib's log level when the session starts (pysam's import sets it).
_HTSLIB_LEVEL = pysam.get_verbosity()


@pytest.fixture(autouse=True)
def htslib_verbosity():  # type: ignore[no-untyped-def]
    """htslib's log level as the session started, before and after each test:
    ``pysam.quickcheck`` (used by tests and by test_data's generators, also in session
    fixtures, which are set up before this one) sets it to 0 for the whole process,
    which would hide the htslib messages later tests expect in error lines."""
    pysam.set_verbosity(_HTSLIB_LEVEL)  # also after a wider fixture (a generator's quickcheck) ran
    yield
    pysam.set_verbosity(_HTSLIB_LEVEL)


@pytest.fixture(scope="session")
def viral_mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_data/viral.py's default mixture (30 kb, 5000x), made once per session
    (about 40 s); SVC_TEST_MIXTURE names a folder holding one to reuse it."""
    import os

    from helpers import load_viral

    given = os.environ.get("SVC_TEST_MIXTURE")
    if given and (Path(given) / "truth.vcf.gz").exists():
        return Path(given)
    out = tmp_path_factory.mktemp("mixture")
    load_viral().generate_mixture(out, threads=2, log=False)
    return out


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def reference() -> str:
    return str(DATA / "ref.fa")


@pytest.fixture
def store(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A local object store under a key prefix unique to the test."""
    from functions.core.storage import ObjectStore

    name = request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    return ObjectStore(LITHOPS_LOCAL, prefix=f"t/{name}")


@pytest.fixture(scope="session")
def ceph_s3(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real S3 server: single-node Ceph with a RADOS Gateway on 127.0.0.1:7480,
    started for the session by tests/services/ceph.sh and stopped after it, with a
    user and an empty bucket (tests/ceph_gateway.py). Yields the connection facts as a dict."""
    from ceph_gateway import CephError, ceph_gateway

    try:
        with ceph_gateway(tmp_path_factory.mktemp("ceph"), "svc-test", start_timeout=180, stop_timeout=60) as ceph:
            yield ceph
    except CephError as exc:
        pytest.fail(f"could not start Ceph (install it with `bash tests/install.sh`): {exc}")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A running one-node SLURM cluster (partition ``debug``, ``nproc`` CPUs, 500 MB per
    CPU unless a job asks for more), started for the session by tests/services/slurm.sh
    and stopped after it. Yields a :class:`slurm_cluster.SlurmCluster`."""
    from slurm_cluster import start, stop

    cluster = start(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        stop(cluster.dir)


def ceph_lithops_config(ceph: dict) -> dict:
    """Lithops config: localhost compute, the Ceph gateway as storage."""
    return {
        "lithops": {"backend": "localhost", "storage": "ceph", "log_level": "WARNING"},
        "localhost": {"worker_processes": 2, "version": 1},
        "ceph": {"endpoint": ceph["endpoint"], "access_key_id": ceph["access_key"],
                 "secret_access_key": ceph["secret_key"], "storage_bucket": ceph["bucket"]},
    }
