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
    assert s.calling["bcftools"]["min_baseq"] == 13 and s.calling["lowfreq"]["min_baseq"] == 30


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
        (lambda c: c["calling"]["lowfreq"].update(baseline_error=-0.1), "calling.lowfreq.baseline_error"),
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
        ("sample\tfastq_1\tfastq_2\nA\tno_R1.fq.gz\tno_R2.fq.gz\n",
         "row 2: FASTQ no_R1.fq.gz of sample 'A' not found: fix the path"),
        ("sample\tfastq_1\tfastq_2\nA\ts3://b/r1.fq.gz\ts3://b/r2.fq.gz\n",
         "row 2: FASTQ s3://b/r1.fq.gz of sample 'A' is in object storage"),
        ("sample\tfastq_1\tfastq_2\tplatform\nA\ta_R1.fq\ta_R2.fq\tNANOPORE\n",
         "row 2: platform: 'NANOPORE' is not one of"),
        ("sample\tfastq_1\tfastq_2\tlibrary\nA\ta_R1.fq\ta_R2.fq\tlib 1\n",
         "row 2: library 'lib 1' is not allowed: use printable characters without spaces"),
        ("sample\tfastq_1\nA\ta_R1.fq\n", "missing column 'bam'"),
    ],
)
def test_bad_sample_sheet_is_one_line_naming_the_row(tmp_path: Path, sheet: str, expect: str) -> None:
    path = tmp_path / "samples.tsv"
    path.write_text(sheet)
    with pytest.raises(ConfigError) as err:
        read_sample_sheet(str(path))
    assert expect in str(err.value)
    assert "\n" not in str(err.value)


def test_fastq_samples_and_their_read_groups(tmp_path: Path) -> None:
    for name in ("a_R1.fq.gz", "a_R2.fq.gz"):
        (tmp_path / name).write_bytes(b"")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(f"sample\tbam\tfastq_1\tfastq_2\tlibrary\tplatform_unit\n"
                     f"A\t\t{tmp_path}/a_R1.fq.gz\t{tmp_path}/a_R2.fq.gz\tlibA\tFC1.2\n"
                     f"B\t{ROOT}/test_data/sampleB.bam\t\t\t\t\n")
    a, b = read_sample_sheet(str(sheet))
    assert a.aligned and a.bam == "results/A.bam" and a.fastq == (f"{tmp_path}/a_R1.fq.gz", f"{tmp_path}/a_R2.fq.gz")
    assert a.rg("library") == "libA" and a.rg("platform_unit") == "FC1.2" and a.rg("read_group") is None
    assert not b.aligned and b.bam.endswith("sampleB.bam")


def test_schema_defaults_are_the_aligners_own() -> None:
    from pipeline.align import AlignParams

    filled = load_settings(default_config()).align
    assert AlignParams(chunk_pairs=filled["chunk_pairs"], max_insert=filled["max_insert"]) == AlignParams()


@pytest.mark.parametrize("engine", ["bcftools", "lowfreq"])
def test_schema_defaults_are_the_engines_own(engine: str) -> None:
    """The schema documents each engine's defaults; they must be the ones the engine uses."""
    from functions.engines import ENGINES

    cls, _ = ENGINES[engine]
    cfg = default_config()
    cfg["calling"] = {"engine": engine}
    filled = load_settings(cfg).calling[engine]
    assert cls.from_dict(filled) == cls()


def test_duplicates_are_marked_for_shotgun_reads_and_left_alone_for_amplicons() -> None:
    from types import SimpleNamespace

    from pipeline.config import marks_duplicates, step_settings

    s = load_settings(default_config())
    assert s.align["mark_duplicates"] is None and marks_duplicates(s)
    assert step_settings(s, "align").align["mark_duplicates"] is True
    assert step_settings(s, "merge-alignments").align["mark_duplicates"] is True

    def settings(chosen: bool | None, primers: str | None) -> SimpleNamespace:
        return SimpleNamespace(align={"mark_duplicates": chosen}, calling={"primers": primers})

    assert not marks_duplicates(settings(None, "scheme.bed"))  # type: ignore[arg-type]
    assert marks_duplicates(settings(True, "scheme.bed"))  # type: ignore[arg-type]
    assert not marks_duplicates(settings(False, None))  # type: ignore[arg-type]
