"""Settings validated once: each rule gets only what its step uses (pipeline.config.STEP_SECTIONS),
so Snakemake reruns exactly the steps whose inputs or parameters changed. Checked through the
real ``snakemake`` command line, and the step settings' shape, round trip and secrets here."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml
from test_e2e import ROOT, make_workdir, snakemake

from pipeline.cli import main
from pipeline.config import (
    STEP_SECTIONS,
    ConfigError,
    Settings,
    StepSettings,
    load_settings,
    read_step_settings,
    step_settings,
)

CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def settings(monkeypatch: pytest.MonkeyPatch, **changes: object) -> Settings:
    """The default config (run from the repository), top-level keys changed."""
    monkeypatch.chdir(ROOT)
    return load_settings({**CONFIG, **changes})


def all_steps(s: Settings) -> dict[str, StepSettings]:
    return {step: step_settings(s, step, "sampleA") for step in STEP_SECTIONS}


# -- what each step gets ---------------------------------------------------------------------
def test_each_step_gets_only_its_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = all_steps(settings(monkeypatch, faults={"probability": 0.5}))
    for step, st in steps.items():
        assert set(st.sections) == STEP_SECTIONS[step], step
    assert [s for s, st in steps.items() if st.sections.get("faults")] == ["align", "call"]
    # The calls get their engine's parameters only; the report its prices and the four names it prints.
    assert set(steps["call"].calling) == {"engine", "bcftools", "cohort", "primers"} and steps["call"].cohort is None
    assert steps["report"].sections == {
        "report": {"cost": CONFIG["report"]["cost"]},
        "summary": {"calling": {"engine": "bcftools", "mode": "per_sample"}, "executor": {"runner": "lithops"},
                    "lithops": {"backend": "localhost", "storage": "localhost"}},
    }
    # A per-sample step gets its own row of the sheet, and only the fields it reads.
    assert steps["stage-sample"].sections["samples"] == [{"name": "sampleA", "bam": "test_data/sampleA.bam"}]
    assert "sampleB" not in steps["stage-sample"].to_json()
    assert steps["merge"].executor == {"runner": "lithops"}


def test_faults_off_reach_no_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """With probability 0 the other fault keys change nothing, so they rerun nothing."""
    a = all_steps(settings(monkeypatch))
    b = all_steps(settings(monkeypatch, faults={"seed": 5, "delay_seconds": 9}))
    assert {k: v.to_json() for k, v in a.items()} == {k: v.to_json() for k, v in b.items()}
    assert a["call"].faults == {}


def test_fastq_samples_carry_their_files_and_read_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch, samples="config/samples_fastq.tsv")
    name = next(x.name for x in s.samples if x.aligned)
    fq = step_settings(s, "stage-fastq", name)
    assert fq.sample(name).fastq == s.sample(name).fastq and fq.align == {"chunk_pairs": 50000}
    al = read_step_settings(step_settings(s, "align", None).to_json(), "align")
    assert [x.name for x in al.samples] == [x.name for x in s.samples if x.aligned]
    assert al.sample(name).read_group == s.sample(name).read_group


def test_no_lithops_secret_on_a_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lithops config travels as its path and a digest: its keys stay in its file."""
    s = settings(monkeypatch, lithops_config="config/lithops/ceph.yaml")
    for step, st in all_steps(s).items():
        text = st.to_json()
        assert "YOUR_SECRET_KEY" not in text and "YOUR_ACCESS_KEY" not in text, step
    assert step_settings(s, "call").lithops == s.lithops


# -- the step side: shape only, no re-validation -----------------------------------------------
def test_round_trip_without_the_sample_sheet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = settings(monkeypatch)
    texts = {step: st.to_json() for step, st in all_steps(s).items()}
    # The steps read neither the sample sheet nor the schema: a sheet gone after load changes nothing.
    sheet = tmp_path / "samples.tsv"
    shutil.copy(ROOT / "config" / "samples.tsv", sheet)
    s2 = load_settings({**CONFIG, "samples": str(sheet)})
    sheet.unlink()
    for step, st in all_steps(s2).items():
        assert read_step_settings(st.to_json(), step) == st
    for step, text in texts.items():
        back = read_step_settings(text, step)
        assert back.to_json() == text
    assert read_step_settings(texts["stage-sample"], "stage-sample").sample("sampleA") == s.sample("sampleA")


def test_a_whole_config_is_still_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(monkeypatch)
    assert read_step_settings(json.dumps(CONFIG), "stage-sample", "sampleB") == step_settings(s, "stage-sample",
                                                                                           "sampleB")
    with pytest.raises(ConfigError, match="unknown key 'n_region'"):
        read_step_settings(json.dumps({**CONFIG, "plan": {"n_region": 3}}), "plan")


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: {**d, "step": "merge"}, "they are the settings of step 'merge'"),
    (lambda d: {k: v for k, v in d.items() if k != "executor"}, "missing executor"),
    (lambda d: {**d, "report": {}}, "unexpected report"),
    (lambda d: {**d, "lithops": "config/lithops/localhost.yaml"}, "section 'lithops' is malformed"),
])
def test_the_shape_is_checked(monkeypatch: pytest.MonkeyPatch, change: Callable[[dict[str, Any]], dict[str, Any]],
                              message: str) -> None:
    data = json.loads(step_settings(settings(monkeypatch), "call").to_json())
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_step_settings(json.dumps(change(data)), "call")


def test_a_lithops_config_changed_after_load_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "lithops.yaml"
    shutil.copy(ROOT / "config" / "lithops" / "localhost.yaml", path)
    st = step_settings(settings(monkeypatch, lithops_config=str(path)), "plan")
    path.write_text(path.read_text() + "\n# a comment changes nothing\n")
    assert read_step_settings(st.to_json(), "plan").lithops["lithops"]["backend"] == "localhost"
    path.write_text(path.read_text().replace("worker_processes: 2", "worker_processes: 3"))
    with pytest.raises(ConfigError, match="changed after the workflow started: run snakemake again"):
        read_step_settings(st.to_json(), "plan").lithops  # noqa: B018


def test_cli_wrong_settings_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    text = step_settings(settings(monkeypatch), "merge").to_json()
    assert main(["check-storage", "--settings", text, "--out", "/dev/null"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: settings of step check-storage: they are the settings of "
                                               "step 'merge'")


# -- through snakemake: what a change reruns -----------------------------------------------------
def ran(res: CompletedProcess[str]) -> Counter[str]:
    """The rules of the jobs a run finished."""
    assert res.returncode == 0, res.stderr[-3000:]
    return Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", res.stderr))


def planned(res: CompletedProcess[str]) -> Counter[str]:
    """The rules of the jobs a dry run would run (its job stats table)."""
    assert res.returncode == 0, res.stderr[-3000:]
    table = res.stdout.split("Job stats:", 1)[1].split("total", 1)[0] if "Job stats:" in res.stdout else ""
    return Counter({m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)})


def edit(path: Path, dotted: str, value: object) -> None:
    cfg = yaml.safe_load(path.read_text())
    *parents, leaf = dotted.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[leaf] = value
    path.write_text(yaml.safe_dump(cfg))


@pytest.mark.e2e
def test_a_change_reruns_exactly_the_steps_that_use_it(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path, plan__n_regions=4)
    config = wd / "config" / "config.yaml"
    assert ran(snakemake(wd)) == Counter(stage_reference=1, stage_sample=2, plan=2, call=1, merge=2, report=1, all=1)
    assert ran(snakemake(wd)) == Counter()

    edit(config, "report.cost.per_gb_second", 0.00002)
    res = snakemake(wd)
    assert ran(res) == Counter(report=1, all=1)
    reasons = [ln for ln in res.stderr.splitlines() if "reason: Params have changed" in ln]
    assert len(reasons) == 1 and "min_baseq" not in reasons[0] and "lithops_config" not in reasons[0]

    edit(config, "calling.bcftools.min_baseq", 20)
    assert ran(snakemake(wd)) == Counter(call=1, merge=2, report=1, all=1)

    # A parameter of an engine not in use, and the faults' seed with injection off: nothing.
    edit(config, "calling.lowfreq.min_qual", 30)
    edit(config, "faults", {"seed": 3})
    assert planned(snakemake(wd, "--dry-run")) == Counter()

    # The plan's parameters replan (and so call again); the Lithops config's content
    # concerns every step that opens the store, but not the report's prices.
    edit(config, "plan.padding", 900)
    assert planned(snakemake(wd, "--dry-run")) == Counter(plan=2, call=1, merge=2, report=1, all=1)
    edit(config, "plan.padding", 1000)
    lithops = wd / "config" / "lithops" / "localhost.yaml"
    lithops.write_text(lithops.read_text().replace("log_level: WARNING", "log_level: ERROR"))
    assert planned(snakemake(wd, "--dry-run")) == Counter(stage_reference=1, stage_sample=2, plan=2, call=1,
                                                          merge=2, report=1, all=1)
