"""Shared fixtures: an isolated local object store per test session, test data paths,
and a runner fixture so the same exactness tests go through the serial runner and
through Lithops."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Lithops keeps its local object store and job files under $TMPDIR/lithops-$USER,
# computed when lithops is first imported: isolate it before anything imports it.
_SESSION_TMP = tempfile.mkdtemp(prefix="svc-tests-")
os.environ["TMPDIR"] = _SESSION_TMP
tempfile.tempdir = None

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "test_data"
SAMPLES = ("sampleA", "sampleB")
LITHOPS_LOCAL = {
    "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
    "localhost": {"worker_processes": 2, "version": 1},
}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def reference() -> str:
    return str(DATA / "ref.fa")


@pytest.fixture
def store(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A local object store under a key prefix unique to the test."""
    from pipeline.storage import ObjectStore

    name = request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    return ObjectStore(LITHOPS_LOCAL, prefix=f"t/{name}")
