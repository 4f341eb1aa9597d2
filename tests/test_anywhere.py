"""A lab runs the workflow from its own folder, outside the repository: with
``snakemake -s <repo>/Snakefile`` and a config holding only its samples and
reference, and as a Snakemake module of its own Snakefile. The built-in defaults
(the Lithops config) are found in the workflow's folder, nothing is written outside
the run's folder, and the VCF equals one whole-genome run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from helpers import DATA, whole_genome

from bench.evaluation.vcfcompare import vcf_body

pytestmark = pytest.mark.e2e


def _own_folder(tmp_path: Path) -> Path:
    """A lab's folder: its sample sheet and a config naming only samples and reference."""
    lab = tmp_path / "my-run"
    (lab / "tmp").mkdir(parents=True)
    (lab / "samples.tsv").write_text(f"sample\tbam\nsampleA\t{DATA / 'sampleA.bam'}\n")
    (lab / "config.yaml").write_text(f"samples: samples.tsv\nreference: {DATA / 'ref.fa'}\n")
    assert not str(lab).startswith(str(ROOT))
    return lab


def _snakemake(lab: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TMPDIR=str(lab / "tmp"))
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=lab, env=env,
                          capture_output=True, text=True, timeout=600)


def _check(lab: Path, res: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert res.returncode == 0, res.stderr[-3000:]
    assert "localrules directive specifies rules that are not present" not in res.stderr
    vcf = lab / "results" / "sampleA.vcf.gz"
    assert vcf_body(str(vcf)) == vcf_body(whole_genome("sampleA", tmp_path))
    assert (lab / "results" / "report.html").exists() and (lab / "work" / "logs" / "call.log").exists()


def test_a_run_from_the_labs_own_folder(tmp_path: Path) -> None:
    lab = _own_folder(tmp_path)
    res = _snakemake(lab, "-s", str(ROOT / "Snakefile"), "--configfile", "config.yaml")
    _check(lab, res, tmp_path)


def test_the_workflow_as_a_module_of_the_labs_snakefile(tmp_path: Path) -> None:
    lab = _own_folder(tmp_path)
    (lab / "Snakefile").write_text(
        'configfile: "config.yaml"\n\n\n'
        f'module svc:\n    snakefile:\n        "{ROOT / "Snakefile"}"\n    config:\n        config\n\n\n'
        "use rule * from svc as svc_*\n")
    (lab / "config.yaml").write_text((lab / "config.yaml").read_text() + "logs:\n  debug: true\n")
    res = _snakemake(lab)
    _check(lab, res, tmp_path)
    assert "svc_call" in res.stderr  # the module's rules ran, under the lab's names for them
    # logs.debug: every DEBUG line in the step logs (the default run's have none: test_e2e)
    assert " DEBUG lithops" in (lab / "work" / "logs" / "call.log").read_text()
    # progress to a non-terminal (Snakemake's captured stderr): whole lines, no carriage return
    assert "\r" not in res.stderr and "regions done (100 %)" in res.stderr
