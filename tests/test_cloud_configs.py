"""The cloud examples in config/lithops/ (AWS Lambda, IBM Code Engine, Kubernetes)
load through Lithops' own config machinery, offline.

For each example, ``lithops.config.default_config`` runs the config loaders of its
compute and storage backends: they fill in the defaults and reject what Lithops
would reject when a run starts (a missing required key, an unknown region, a
CPU/memory pair Code Engine does not offer, an endpoint that is not a URL). No
cloud is contacted. Those loaders ignore keys they do not know, so each key we set
must also be one that the backend's own code names: a typo such as
``runtime_memmory`` would otherwise fall back to the default without a word.

Not checked here, as it needs an account: the credentials, the role, the project,
the bucket, and the image in a registry (see docs/cloud.md).
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("aws_lambda.yaml", "ibm_code_engine.yaml", "k8s_minio.yaml")
# Sections whose keys Lithops merges into both the compute and the storage section.
SHARED_SECTIONS = ("aws", "ibm")
CREDENTIAL_WORDS = ("key", "secret", "password", "token")
# A change to a loaded config, for the tests that a wrong config is caught.
Edit = Callable[[dict[str, Any]], None]


def lithops_dir() -> Path:
    import lithops

    return Path(lithops.__file__).resolve().parent


def config_module(kind: str, backend: str) -> ModuleType:
    """``lithops.<kind>.backends.<backend>.config``, without its cloud SDK if need be.

    Importing it imports the backend's package, which imports the cloud SDK
    (ibm-cloud-sdk-core, kubernetes, ...): not a dependency of this project. The
    config module itself needs none, so it is then loaded from its file.
    """
    name = f"lithops.{kind}.backends.{backend}.config"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.startswith("lithops"):
            raise
    spec = importlib.util.spec_from_file_location(name, lithops_dir() / kind / "backends" / backend / "config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def names_in_code(*folders: str) -> frozenset[str]:
    """Every string literal in the Python files of these folders of the lithops package."""
    found: set[str] = set()
    for folder in folders:
        for path in sorted((lithops_dir() / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.add(node.value)
    return frozenset(found)


def check_example(data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run Lithops' loaders on one config, then check its keys; return the full config."""
    from lithops.config import default_config

    backend, storage = data["lithops"]["backend"], data["lithops"]["storage"]
    for kind, name in (("serverless", backend), ("storage", storage)):
        mod = config_module(kind, name)
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    full = default_config(config_data=copy.deepcopy(data), load_storage_config=True)

    compute_dir, storage_dir = f"serverless/backends/{backend}", f"storage/backends/{storage}"
    known = {
        "lithops": names_in_code("."),
        backend: names_in_code(compute_dir),
        storage: names_in_code(storage_dir),
        **{s: names_in_code(compute_dir, storage_dir) for s in SHARED_SECTIONS},
    }
    for section, body in data.items():
        if section not in known:
            raise ValueError(f"section {section!r} is read by neither Lithops nor backend {backend} or {storage}")
        unknown = sorted(k for k in body if k not in known[section])
        if unknown:
            raise ValueError(f"{section}: {', '.join(unknown)} not a key Lithops reads")
    return full


def load_example(name: str) -> dict[str, Any]:
    from pipeline.config import load_lithops_config

    return load_lithops_config(str(ROOT / "config" / "lithops" / name))


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_loads_through_lithops(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_example(name)
    full = check_example(data, monkeypatch)
    backend = data["lithops"]["backend"]
    assert full["lithops"]["mode"] == "serverless"
    # Lithops' default runtime has no pysam: the example must name our image.
    assert full[backend]["runtime"] == data[backend]["runtime"]
    for key in ("runtime_memory", "runtime_timeout"):
        assert full[backend][key] == data[backend][key], f"Lithops changed {key}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_holds_no_credentials(name: str) -> None:
    data = load_example(name)
    for section, body in data.items():
        for key, value in body.items():
            if any(word in key for word in CREDENTIAL_WORDS):
                assert str(value).startswith("YOUR_"), f"{name}: {section}.{key} must be a placeholder"
    if data["lithops"]["backend"] == "aws_lambda":
        # Credentials come from the environment or ~/.aws, never from this file.
        assert not [k for body in data.values() for k in body if any(w in k for w in CREDENTIAL_WORDS)]



def rename(section: str, old: str, new: str) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data[section][new] = data[section].pop(old)
    return edit


def set_value(section: str, key: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data[section][key] = value
    return edit


def rename_section(old: str, new: str) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data[new] = data.pop(old)
    return edit


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        # Caught by Lithops' own loaders.
        pytest.param("aws_lambda.yaml", rename("aws_lambda", "execution_role", "execution_rol"),
                     '"execution_role" is mandatory', id="aws-no-role"),
        pytest.param("aws_lambda.yaml", rename("aws", "region", "regoin"), '"region" is mandatory',
                     id="aws-no-region"),
        pytest.param("ibm_code_engine.yaml", set_value("code_engine", "runtime_memory", 3000),
                     "invalid runtime memory", id="ibm-memory"),
        pytest.param("ibm_code_engine.yaml", set_value("ibm", "region", "eu-west-2"), "invalid region name",
                     id="ibm-region"),
        pytest.param("ibm_code_engine.yaml", rename("ibm", "iam_api_key", "api_key"), '"iam_api_key" is mandatory',
                     id="ibm-no-key"),
        pytest.param("k8s_minio.yaml", set_value("minio", "endpoint", "minio.example.org"),
                     "must start with http", id="minio-endpoint"),
        pytest.param("k8s_minio.yaml", rename("minio", "secret_access_key", "secret_key"),
                     "'secret_access_key' is mandatory", id="minio-no-secret"),
        # Ignored by Lithops' loaders, caught by the key check.
        pytest.param("k8s_minio.yaml", rename("k8s", "runtime_memory", "runtime_memmory"),
                     "runtime_memmory not a key Lithops reads", id="k8s-typo"),
        pytest.param("aws_lambda.yaml", rename("aws_s3", "storage_bucket", "bucket"),
                     "bucket not a key Lithops reads", id="s3-typo"),
        pytest.param("k8s_minio.yaml", rename_section("k8s", "kubernetes"),
                     "section 'kubernetes' is read by neither", id="k8s-section"),
    ],
)
def test_a_wrong_key_or_value_is_caught(
    name: str, edit: Edit, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_example(name)
    edit(data)
    with pytest.raises(Exception, match=message):
        check_example(data, monkeypatch)


def test_runtime_image_pins_the_versions_used_here() -> None:
    """Lithops refuses a runtime with another Lithops version, and the VCFs are tested
    with this pysam (its bundled bcftools); the functions load the minimap2 index this
    mappy built."""
    pins = {}
    for line in (ROOT / "runtime" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, _, pinned = line.partition("==")
            pins[name.strip().lower()] = pinned.strip()
    for package in ("lithops", "pysam", "mappy"):
        assert pins.get(package) == version(package), f"runtime/requirements.txt: pin {package}=={version(package)}"
