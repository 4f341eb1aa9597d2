"""More inputs that used to fail late, silently or wrongly (issue 16, items 6-8): a
compressed reference, an absurd number of regions, a sample sheet with a byte-order
mark or trailing tabs, a BAM of several samples in a per-sample run, and a BAM
replaced by another of the same size and mtime. Each through the real ``snakemake``
command line, plus fast unit tests of the checks."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import time
from pathlib import Path

import pysam
import pytest
import yaml
from helpers import DATA, whole_genome
from test_bad_input import _header, _reads, assert_nothing_called, errors, write_bam
from test_e2e import make_workdir, snakemake

from bench.evaluation.vcfcompare import vcf_body
from functions.core.bai import parse_bai
from functions.core.storage import ObjectStore
from pipeline.config import ConfigError, load_settings, read_sample_sheet
from pipeline.plan import PlanError, PlanInput, PlanSettings, plan_joint, plan_sample
from pipeline.stage import FINGERPRINT_EDGE, bam_fingerprint, content_fingerprint, stage_reference, stage_sample
from pipeline.validate import InputError, check_one_sample, check_reference_start, is_bgzf, read_group_samples

ROOT = Path(__file__).resolve().parent.parent
FIX = "which needs a plain FASTA: decompress it with"
TWO_SAMPLES = ("holds reads of 2 samples (its read groups have SM x, y), but calling.mode per_sample calls each "
               "BAM as one sample: call them together with `calling.mode: joint`, or split it with "
               "`samtools split {bam}` and list each part in the sample sheet")


# -- inputs made here ------------------------------------------------------------------
def bgzip_reference(d: Path) -> Path:
    """test_data/ref.fa compressed with bgzip, with its .fai and .gzi (as `samtools faidx` makes them)."""
    out = d / "ref.fa.gz"
    pysam.tabix_compress(str(DATA / "ref.fa"), str(out), force=True)
    pysam.faidx(str(out))
    assert Path(f"{out}.fai").exists() and Path(f"{out}.gzi").exists()
    return out


def gzip_reference(d: Path) -> Path:
    out = d / "plain.fa.gz"
    out.write_bytes(gzip.compress((DATA / "ref.fa").read_bytes()))
    return out


def read_group_bam(path: Path, samples: tuple[str, ...]) -> Path:
    """sampleA's first reads, spread over one read group per entry of ``samples`` (its SM)."""
    groups = [{"ID": f"rg{i}", "SM": sm, "LB": "lib1", "PL": "ILLUMINA"} for i, sm in enumerate(samples)]
    reads = _reads()
    for i, r in enumerate(reads):
        r.set_tag("RG", f"rg{i % len(groups)}")
    return write_bam(path, _header(RG=groups), reads)


def snv_bams(d: Path) -> tuple[Path, Path, int]:
    """Two BAMs of the same size and index that call differently: sampleA's first reads,
    written uncompressed (BGZF level 0, so a same-length edit changes no size), the
    second with a new SNV in every read over one position early in the file (inside
    the first 64 KiB). Returns both and the SNV's 0-based position."""
    reads = _reads()
    # Every read covering the position starts at or before it: among the first ~80 records.
    pos = reads[60].reference_start + 5
    edited = []
    for r in _reads():
        pairs = dict((ref, q) for q, ref in r.get_aligned_pairs(matches_only=True))
        if pos in pairs:
            quals, seq = r.query_qualities, list(r.query_sequence or "")
            seq[pairs[pos]] = "T" if seq[pairs[pos]] != "T" else "G"
            r.query_sequence = "".join(seq)
            r.query_qualities = quals
        edited.append(r)
    paths = []
    for name, rs in (("old", reads), ("new", edited)):
        path = d / name / "x.bam"
        path.parent.mkdir()
        with pysam.AlignmentFile(str(path), "wb0", header=_header()) as out:
            for r in rs:
                out.write(r)
        pysam.index(str(path))
        paths.append(path)
    return paths[0], paths[1], pos


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("more")
    return {
        "bgzip_ref": bgzip_reference(d),
        "gzip_ref": gzip_reference(d),
        "two_samples": read_group_bam(d / "two.bam", ("x", "y")),
        "two_groups": read_group_bam(d / "groups.bam", ("sampleR", "sampleR")),
    }


def run_bad(wd: Path, step: str, expected: str) -> None:
    """A run that must stop at ``step`` with exactly the line ``expected`` and call nothing."""
    res = snakemake(wd)
    assert res.returncode != 0
    assert errors(res.stderr) == [expected], res.stderr[-3000:]
    assert not [ln for ln in res.stderr.splitlines() if ln.startswith(("Traceback", "[E::", "[W::"))], res.stderr
    assert f"Error in rule {step}" in res.stderr
    assert_nothing_called(wd)


# -- end to end --------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("kind, tool, plain", [("bgzip", "bgzip -d", "ref.fa"), ("gzip", "gunzip", "plain.fa")])
def test_compressed_reference_stops_at_staging(made: dict[str, Path], tmp_path: Path, kind: str, tool: str,
                                               plain: str) -> None:
    ref = made[f"{kind}_ref"]
    wd = make_workdir(tmp_path / "wd", plan__n_regions=2, reference=str(ref))
    (wd / "config" / "samples.tsv").write_text("sample\tbam\nsampleA\ttest_data/sampleA.bam\n")
    run_bad(wd, "stage_reference",
            f"error: reference {ref} is {kind}-compressed, but the functions read the reference by byte ranges "
            f"through its .fai, {FIX} `{tool} -k {ref}` and set 'reference' in the config to {ref.parent / plain}")
    assert not Path(f"{made['gzip_ref']}.fai").exists()  # refused before samtools was asked to index it


@pytest.mark.e2e
def test_bam_of_two_samples_stops_a_per_sample_run_at_planning(made: dict[str, Path], tmp_path: Path) -> None:
    bam = made["two_samples"]
    wd = make_workdir(tmp_path / "wd", plan__n_regions=2)
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\nsampleA\t{bam}\n")
    run_bad(wd, "plan", f"error: BAM {bam} of sample sampleA " + TWO_SAMPLES.format(bam=bam))


@pytest.mark.e2e
def test_sheet_with_bom_and_trailing_tabs_and_a_bam_of_two_read_groups_of_one_sample(
    made: dict[str, Path], tmp_path: Path
) -> None:
    wd = make_workdir(tmp_path / "wd", plan__n_regions=2)
    sheet = f"\ufeffsample\tbam\t\nsampleA\ttest_data/sampleA.bam\t\nsampleR\t{made['two_groups']}\t\t\n"
    (wd / "config" / "samples.tsv").write_text(sheet, encoding="utf-8")
    res = snakemake(wd, "--until", "plan")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (wd / "work" / "plans" / "sampleA.tsv").exists() and (wd / "work" / "plans" / "sampleR.tsv").exists()


@pytest.mark.e2e
def test_absurd_number_of_regions_is_bounded_by_the_data(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd", plan__n_regions=1_000_000)
    (wd / "config" / "samples.tsv").write_text("sample\tbam\nsampleA\ttest_data/sampleA.bam\n")
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    warning = ("warning: plan.n_regions asks for 1,000,000 regions, but there are only 2.29 MB of reads in sample "
               "sampleA's BAM: planned 69 regions, so as not to cut regions under plan.min_region_bytes "
               "(32,768 compressed bytes; lower it for smaller regions)")
    assert res.stderr.count(warning) == 1, res.stderr[-3000:]
    plan = (wd / "work" / "plans" / "sampleA.tsv").read_text()
    assert len([ln for ln in plan.splitlines() if ln[:1].isdigit()]) == 69
    assert "called 1 sample(s) in 69 regions: 69 functions run" in (wd / "work" / "logs" / "call.log").read_text()
    assert vcf_body(str(wd / "results" / "sampleA.vcf.gz")) == vcf_body(whole_genome("sampleA", tmp_path))


@pytest.mark.e2e
def test_bam_replaced_by_one_of_the_same_size_and_mtime_is_called_again(tmp_path: Path) -> None:
    old, new, pos = snv_bams(tmp_path)
    assert old.stat().st_size == new.stat().st_size
    assert old.with_suffix(".bam.bai").read_bytes() == new.with_suffix(".bam.bai").read_bytes()
    want_old, want_new = vcf_body(whole_genome("old", tmp_path, bam=old)), vcf_body(whole_genome("new", tmp_path,
                                                                                                 bam=new))
    assert want_old != want_new and any(f"\t{pos + 1}\t" in r for r in set(want_new) - set(want_old))

    bam = tmp_path / "run" / "x.bam"
    bam.parent.mkdir()
    shutil.copy(old, bam)
    shutil.copy(f"{old}.bai", f"{bam}.bai")
    wd = make_workdir(tmp_path / "wd", plan__n_regions=3)
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\nsampleA\t{bam}\n")
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    assert vcf_body(str(wd / "results" / "sampleA.vcf.gz")) == want_old

    stat = bam.stat()
    shutil.copy(new, bam)
    shutil.copy(f"{new}.bai", f"{bam}.bai")
    for f in (bam, Path(f"{bam}.bai")):
        os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (bam.stat().st_size, bam.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    res = snakemake(wd)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "0 fragments reused" in (wd / "work" / "logs" / "call.log").read_text()
    assert vcf_body(str(wd / "results" / "sampleA.vcf.gz")) == want_new


# -- the checks themselves ------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, expect",
    [
        ("d/ref.fa", None),
        ("d/ref.fa.gz", "bgzip-compressed, but the functions read the reference by byte ranges through its .fai, "
                        f"{FIX} `bgzip -d -k d/ref.fa.gz` and set 'reference' in the config to d/ref.fa"),
        ("d/ref.fasta", "bgzip-compressed, but the functions read the reference by byte ranges through its .fai, "
                        f"{FIX} `bgzip -d -c d/ref.fasta > d/ref.plain.fasta` and set 'reference' in the config "
                        "to d/ref.plain.fasta"),
        ("s3://b/ref.fa.gz", "bgzip-compressed, but the functions read the reference by byte ranges through its "
                             ".fai, which needs a plain FASTA: download it, decompress it with `bgzip -d -k "
                             "ref.fa.gz`, upload ref.fa with its .fai (`samtools faidx ref.fa`) and set 'reference' "
                             "in the config to s3://b/ref.fa"),
    ],
)
def test_compressed_reference_is_named_with_its_fix(made: dict[str, Path], path: str, expect: str | None) -> None:
    head = (DATA / "ref.fa" if expect is None else made["bgzip_ref"]).read_bytes()[:1024]
    if expect is None:
        check_reference_start(head, path)
        return
    with pytest.raises(InputError) as err:
        check_reference_start(head, path)
    assert str(err.value) == f"reference {path} is {expect}"


def test_bgzf_is_told_from_plain_gzip(made: dict[str, Path]) -> None:
    assert is_bgzf(made["bgzip_ref"].read_bytes()[:64]) and is_bgzf((DATA / "sampleA.bam").read_bytes()[:64])
    assert not is_bgzf(made["gzip_ref"].read_bytes()[:64]) and not is_bgzf(b"\x1f\x8b\x08\x04")
    with pytest.raises(InputError, match=r"is gzip-compressed, .*`gunzip -k .*plain.fa.gz`"):
        check_reference_start(made["gzip_ref"].read_bytes()[:64], str(made["gzip_ref"]))


def test_compressed_reference_is_refused_before_it_is_indexed(store: ObjectStore, tmp_path: Path) -> None:
    ref = gzip_reference(tmp_path)
    with pytest.raises(InputError, match="is gzip-compressed"):
        stage_reference(store, str(ref), tmp_path / "ref.json")
    assert not Path(f"{ref}.fai").exists() and not (tmp_path / "ref.json").exists()


@pytest.mark.parametrize(
    "rgs, samples",
    [
        ([], []),
        (["ID:a\tSM:s1"], ["s1"]),
        (["ID:a\tSM:s1", "ID:b\tSM:s1\tLB:x"], ["s1"]),  # two read groups of one sample: fine
        (["ID:a\tSM:s1", "ID:b\tSM:s2"], ["s1", "s2"]),
        (["ID:a\tLB:x"], []),  # no SM: bcftools names the sample after the file
    ],
)
def test_read_group_samples(rgs: list[str], samples: list[str]) -> None:
    text = "@HD\tVN:1.6\tSO:coordinate\n" + "".join(f"@RG\t{rg}\n" for rg in rgs)
    assert read_group_samples(text) == samples
    if len(samples) <= 1:
        check_one_sample(text, "s", "x.bam")
        return
    with pytest.raises(InputError, match=r"^BAM x.bam of sample s holds reads of 2 samples \(its read groups have "
                                         r"SM s1, s2\), .*`calling.mode: joint`, or split it with `samtools split"):
        check_one_sample(text, "s", "x.bam")


def test_many_samples_are_shown_in_a_short_line() -> None:
    text = "".join(f"@RG\tID:r{i}\tSM:s{i}\n" for i in range(40))
    with pytest.raises(InputError, match=r"SM s0, s1, s2, s3, s4, \.\.\. \(40 in all\)\)"):
        check_one_sample(text, "s", "x.bam")


# -- bounded plans -------------------------------------------------------------------
def _sample_input(sample: str) -> PlanInput:
    bam = DATA / f"{sample}.bam"
    with pysam.AlignmentFile(str(bam)) as f:
        contigs = tuple(zip(f.references, f.lengths, strict=True))
    return PlanInput(sample, parse_bai(Path(f"{bam}.bai").read_bytes()), contigs, "k", bam.stat().st_size)


def _plan(settings: PlanSettings, sample: str = "sampleA") -> list[tuple[str, int, int, int]]:
    p = _sample_input(sample)
    plan = plan_sample(sample, p.index, p.contigs, p.bam_key, p.bam_size, settings)
    return [(r.chrom, r.start, r.end, r.est_bytes) for r in plan.regions]


def test_plans_the_tests_expect_are_unchanged() -> None:
    for n in (1, 3, 8, 11, 17, 60):
        assert _plan(PlanSettings(n_regions=n)) == _plan(PlanSettings(n_regions=n, min_region_bytes=1))


@pytest.mark.parametrize("settings", [PlanSettings(n_regions=1_000_000), PlanSettings(target_bytes=1)])
def test_absurd_plans_are_bounded_by_the_data_with_one_warning(settings: PlanSettings,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.plan")
    t0 = time.perf_counter()
    regions = _plan(settings)
    assert time.perf_counter() - t0 < 2
    assert len(regions) == 69  # 2,290,689 estimated bytes over three contigs: 34 + 21 + 14
    assert min(est for *_, est in regions) >= settings.min_region_bytes
    asked = "plan.n_regions asks for 1,000,000" if settings.n_regions else "plan.target_bytes 1 asks for 2,290,689"
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: {asked} regions, but there are only 2.29 MB of reads in sample sampleA's BAM: planned 69 "
        "regions, so as not to cut regions under plan.min_region_bytes (32,768 compressed bytes; lower it for "
        "smaller regions)"]


def test_a_contig_with_reads_keeps_its_region_below_the_minimum() -> None:
    regions = _plan(PlanSettings(n_regions=100, min_region_bytes=500_000))
    assert [c for c, *_ in regions] == ["chr1", "chr1", "chr2", "chr3"]  # chr3: 465 kB, still one region


def test_joint_plans_are_bounded_by_the_summed_data(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.plan")
    inputs = [_sample_input("sampleA"), _sample_input("sampleB")]
    plans = plan_joint(inputs, PlanSettings(n_regions=100_000))
    assert len(plans[0].regions) == 139  # 4.58 MB summed: 68 + 43 + 28
    assert len(caplog.records) == 1 and "in the 2 samples' BAMs: planned 139 regions" in caplog.text
    caplog.clear()
    assert len(plan_joint(inputs, PlanSettings(n_regions=17))[0].regions) == 17 and not caplog.records


def test_min_region_bytes_is_in_the_schema_with_the_planners_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert load_settings(cfg).plan["min_region_bytes"] == PlanSettings(n_regions=1).min_region_bytes
    cfg["plan"] = {"n_regions": 1_000_001}
    with pytest.raises(ConfigError, match=r"^config: plan.n_regions: 1000001 is greater than the maximum"):
        load_settings(cfg)
    with pytest.raises(PlanError, match="min_region_bytes must be positive"):
        PlanSettings(n_regions=1, min_region_bytes=0)


# -- the sample sheet -------------------------------------------------------------------
def test_sheet_with_a_byte_order_mark_and_trailing_tabs(tmp_path: Path) -> None:
    bam = DATA / "sampleA.bam"
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(f"\ufeffsample\tbam\t\nA\t{bam}\t\nB\t{bam}\t \t\n# done\t\n", encoding="utf-8")
    assert [(s.name, s.bam) for s in read_sample_sheet(str(sheet))] == [("A", str(bam)), ("B", str(bam))]
    sheet.write_text(f"\ufeffsample\tbam\nA\t{bam}\t\tx\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="row 2: expected 2 tab-separated fields, found 3"):
        read_sample_sheet(str(sheet))


def test_sheet_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    sheet = tmp_path / "samples.tsv"
    sheet.write_bytes("sample\tbam\nS\u00e9\tx.bam\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"samples.tsv line 2 is not UTF-8 text \(invalid continuation byte\): "
                                          "save the sheet as UTF-8"):
        read_sample_sheet(str(sheet))


# -- the content fingerprint of a local BAM ----------------------------------------------
def test_content_fingerprint_sees_content_not_size_and_mtime(tmp_path: Path) -> None:
    old, new, _ = snv_bams(tmp_path)
    assert content_fingerprint(str(old), f"{old}.bai") != content_fingerprint(str(new), f"{new}.bai")
    copy = tmp_path / "copy.bam"
    shutil.copy(old, copy)
    assert content_fingerprint(str(copy), f"{old}.bai") == content_fingerprint(str(old), f"{old}.bai")
    assert content_fingerprint(str(old), None) != content_fingerprint(str(old), f"{old}.bai")
    # The last 64 KiB count too.
    data = bytearray(old.read_bytes())
    data[-FINGERPRINT_EDGE // 2] ^= 1
    copy.write_bytes(bytes(data))
    assert content_fingerprint(str(copy), f"{old}.bai") != content_fingerprint(str(old), f"{old}.bai")


def test_staged_fingerprint_is_the_one_the_workflow_computes(store: ObjectStore, tmp_path: Path) -> None:
    bam = tmp_path / "s.bam"
    write_bam(bam, _header(), _reads(), index=False)
    work = tmp_path / "work"
    work.mkdir()
    before = bam_fingerprint("s", str(bam), f"{bam}.bai", work)
    manifest = stage_sample(store, "s", str(bam), f"{bam}.bai", work / "s.json")
    fp = manifest.bam.fingerprint
    # The index built while staging changes it once; from then on the workflow's value is the staged one.
    assert fp.startswith("md5:") and fp != before
    assert bam_fingerprint("s", str(bam), f"{bam}.bai", work) == fp
    assert stage_sample(store, "s", str(bam), f"{bam}.bai", work / "s.json").bam.fingerprint == fp


def test_the_fingerprint_of_one_bam_is_the_same_whatever_the_sample() -> None:
    bam = DATA / "sampleA.bam"
    fps = {bam_fingerprint(f"s{i}", str(bam), f"{bam}.bai", "work") for i in range(96)}
    assert len(fps) == 1
