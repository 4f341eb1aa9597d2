"""The command-line edge: every error meant for the user (an SvcError) is one line and exit
status 1; anything else is a bug, shown with its traceback and a request to report it."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml
from helpers import DATA

from functions.core.errors import SvcError
from pipeline import cli
from pipeline.config import Settings

CONFIG = yaml.safe_load((DATA.parent / "config" / "config.yaml").read_text())


def run(monkeypatch: pytest.MonkeyPatch, raise_: BaseException) -> int:
    def step(settings: Settings, args: argparse.Namespace) -> None:
        raise raise_

    monkeypatch.setattr(cli, "cmd_check_storage", step)
    monkeypatch.chdir(DATA.parent)
    return cli.main(["check-storage", "--settings", json.dumps(CONFIG), "--out", "/dev/null"])


def test_a_user_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    class SomeNewError(SvcError):
        """An error class no list in the CLI names: the base is enough."""

    assert run(monkeypatch, SomeNewError("bucket 'x' is gone:\n  create it")) == 1
    assert capsys.readouterr().err.strip().splitlines() == ["error: bucket 'x' is gone: create it"]


def test_anything_else_is_a_bug_with_its_traceback(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run(monkeypatch, KeyError("region")) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'region'" in err
    assert err.strip().splitlines()[-1] == (
        "error: check-storage failed unexpectedly (KeyError: 'region'); this is a bug of the pipeline: "
        "please report it with the traceback above and the step log")


def test_svc_version_names_the_workflow_and_its_tools() -> None:
    """The installed console command (pyproject's [project.scripts]); its version is
    pyproject's and CITATION.cff's; the LICENSE is the one pyproject names."""
    import shutil
    import subprocess
    import sys
    import tomllib

    root = DATA.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["svc"] == "pipeline.cli:svc"
    exe = shutil.which("svc") or str(__import__("pathlib").Path(sys.executable).parent / "svc")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    got = dict(line.split("\t") for line in out.strip().splitlines())
    assert got["serverless-variant-calling"] == project["version"]
    assert {"python", "pysam", "htslib", "bcftools", "lithops", "snakemake", "numpy"} <= set(got)
    assert got["bcftools"] == got["htslib"]  # pysam bundles both, one version
    assert yaml.safe_load((root / "CITATION.cff").read_text())["version"] == project["version"]
    assert project["license"]["text"] == "Apache-2.0"
    assert "Apache License" in (root / "LICENSE").read_text()[:200]
