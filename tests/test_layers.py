"""The layers: functions/ (what runs in the workers) imports only itself and its core,
never the local side, and its core imports nothing of the rest; so a worker image needs
only what the functions use (runtime/requirements.txt)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER_MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in (ROOT / "functions").rglob("*.py") if p.name != "__init__.py"
)
LOCAL_ONLY = ("yaml", "jsonschema", "tqdm", "snakemake", "pipeline")


def imported(path: Path) -> set[str]:
    """Top-level and dotted names a module imports, as written (at any depth of its code)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_there_are_worker_modules_to_check() -> None:
    assert "functions.call_region" in WORKER_MODULES and "functions.core.storage" in WORKER_MODULES


@pytest.mark.parametrize("path", sorted((ROOT / "functions").rglob("*.py")), ids=lambda p: p.name)
def test_functions_never_import_the_local_side(path: Path) -> None:
    assert not {n for n in imported(path) if n == "pipeline" or n.startswith("pipeline.")}


@pytest.mark.parametrize("path", sorted((ROOT / "functions" / "core").glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_nothing_of_the_rest(path: Path) -> None:
    ours = {n for n in imported(path) if n.split(".")[0] in ("pipeline", "functions")}
    assert all(n.startswith("functions.core") for n in ours), ours


def test_worker_modules_load_without_the_local_sides_libraries() -> None:
    code = ("import importlib, sys\n"
            f"for m in {WORKER_MODULES!r}: importlib.import_module(m)\n"
            f"print(sorted(n for n in sys.modules if n.split('.')[0] in {LOCAL_ONLY!r}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


def test_loading_the_workflow_and_starting_a_step_import_no_heavy_library() -> None:
    """The Snakefile loads pipeline.config, and each step starts in pipeline.cli: neither
    imports numpy, pysam or Lithops (0.1-0.4 s each, paid at every Snakemake start and
    every step's start; a step imports what its work needs when it runs)."""
    code = ("import sys, pipeline.config, pipeline.cli\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('numpy', 'pysam', 'lithops')))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout
