"""Config and sample-sheet validation: one line that names the key or the row."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, load_settings, read_sample_sheet

ROOT = Path(__file__).resolve().parent.parent


def default_config() -> dict:
    with open(ROOT / "config" / "config.yaml") as fh:
        return dict(yaml.safe_load(fh))


@pytest.fixture(autouse=True)
def in_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_default_config_is_valid() -> None:
    s = load_settings(default_config())
    assert [x.name for x in s.samples] == ["sampleA", "sampleB"]
    assert s.lithops["lithops"]["backend"] == "localhost"
    assert s.calling["bcftools"]["min_baseq"] == 13 and s.calling["lowfreq"]["min_baseq"] == 20


def test_defaults_are_filled_in() -> None:
    cfg = default_config()
    del cfg["calling"], cfg["plan"]
    s = load_settings(cfg)
    assert s.plan["n_regions"] == 8 and s.calling["bcftools"]["max_depth"] == 250


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda c: c.update(threads=4), "unknown key 'threads' in (top level)"),
        (lambda c: c["plan"].update(n_region=3), "unknown key 'n_region' in plan"),
        (lambda c: c["calling"]["bcftools"].update(min_baseq="high"),
         "calling.bcftools.min_baseq: 'high' is not of type 'integer'"),
        (lambda c: c["calling"].update(min_baseq=20), "unknown key 'min_baseq' in calling"),
        (lambda c: c["calling"]["lowfreq"].update(baseline_error=0), "calling.lowfreq.baseline_error"),
        (lambda c: c["calling"].update(engine="gatk"), "calling.engine"),
        (lambda c: c.pop("reference"), "'reference' is not set"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(mutate, expect: str) -> None:
    cfg = default_config()
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert expect in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "sheet, expect",
    [
        ("sample\tbam\nA\ta.bam\nA\tb.bam\n", "row 3: duplicate sample 'A'"),
        ("name\tbam\nA\ta.bam\n", "missing column 'sample'"),
        ("sample\tbam\nA\ta.bam\textra\n", "row 2: expected 2 tab-separated fields"),
        ("sample\tbam\nA\n", "row 2: expected 2 tab-separated fields"),
        ("sample\tbam\n../x\ta.bam\n", "row 2: sample '../x' is not allowed: use only letters, digits"),
        ("sample\tbam\nmy sample\ta.bam\n", "row 2: sample 'my sample' is not allowed: use only letters"),
        ("sample\tbam\nA\ta.bam\nx/y\tb.bam\n", "row 3: sample 'x/y' is not allowed: use only letters"),
        ("sample\tbam\n", "lists no samples: add one line per sample"),
        ("# a comment\nsample\tbam\n\nA\ta.bam\nA\tb.bam\n", "row 5: duplicate sample 'A' (also in row 4)"),
        ("sample\tbam\nA\tnot-there.bam\n", "row 2: BAM not-there.bam of sample 'A' not found: fix the path"),
    ],
)
def test_bad_sample_sheet_is_one_line_naming_the_row(tmp_path: Path, sheet: str, expect: str) -> None:
    path = tmp_path / "samples.tsv"
    path.write_text(sheet)
    with pytest.raises(ConfigError) as err:
        read_sample_sheet(str(path))
    assert expect in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("engine", ["bcftools", "lowfreq"])
def test_schema_defaults_are_the_engines_own(engine: str) -> None:
    """The schema documents each engine's defaults; they must be the ones the engine uses."""
    from functions.engines import ENGINES

    cls, _ = ENGINES[engine]
    cfg = default_config()
    cfg["calling"] = {"engine": engine}
    filled = load_settings(cfg).calling[engine]
    assert cls.from_dict(filled) == cls()
