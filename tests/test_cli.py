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
