"""Reliability as a careless or hostile user meets it, through the real ``snakemake``
command line: config values that would lead out of the store, results folders that
are read-only or full, a merge killed mid-write, two runs sharing one store, and a
BAM whose reads the caller cannot use. Each case ends in one line (or a correct run),
never in a file that looks like a result but is not, and never in a write outside
the store's root. Fast unit tests of the pieces sit beside them."""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pysam
import pytest
from conftest import LITHOPS_LOCAL
from helpers import DATA, whole_genome
from test_e2e import ROOT, make_workdir, snakemake
from test_faults import error_lines, kill_everything, store_root, why

from bench.evaluation.vcfcompare import vcf_body
from functions.core.atomic import OutputError, atomic_outputs, check_writable
from functions.core.storage import ObjectStore, StorageError

N_REGIONS = 4
ONE_SAMPLE = "sample\tbam\nsampleA\ttest_data/sampleA.bam\n"


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """md5 of every file under ``folder`` (links as their target), but under ``skip``."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if rel.startswith(skip) or path.is_dir():
            continue
        out[rel] = os.readlink(path) if path.is_symlink() else hashlib.md5(path.read_bytes()).hexdigest()
    return out


def complete_results(wd: Path) -> list[str]:
    """Every file matching results/*.vcf.gz, each checked to be a whole, indexed VCF."""
    found = sorted((wd / "results").glob("*.vcf.gz")) if (wd / "results").exists() else []
    for vcf in found:
        assert Path(f"{vcf}.tbi").exists(), f"{vcf} has no index"
        with pysam.VariantFile(str(vcf)) as fh:
            sum(1 for _ in fh)  # reads to the end: a truncated file raises
    return [p.name for p in found]


def hidden_temps(wd: Path) -> list[str]:
    return sorted(p.name for p in (wd / "results").glob(".*.tmp-*")) if (wd / "results").exists() else []


# -- 1. nothing outside the store -------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("setting, value, line", [
    ("storage__prefix", "../../../victim",
     "error: config: storage.prefix '../../../victim' is not allowed: use segments of letters, digits, '.', '_' "
     "and '-' separated by '/', none empty and none starting with '.' (no '..', no leading '/': a key prefix "
     "inside the bucket, not a path)"),
    ("storage__bucket", "{wd}/victim",
     "error: config: storage.bucket '{wd}/victim' is not allowed: use 3-63 letters, digits, '.', '_' and '-', "
     "starting and ending with a letter or digit, with no '..' (a bucket name, not a path)"),
], ids=["prefix-climbs-out", "absolute-bucket"])
def test_a_store_setting_that_leads_outside_the_store_is_refused(tmp_path: Path, setting: str, value: str,
                                                                 line: str) -> None:
    wd = tmp_path / "wd"
    wd.mkdir()
    # What the prefix would reach from the store's root ($TMPDIR/lithops-root/storage):
    # a file that looks like a staged BAM, which staging replaced with a link before.
    victim = wd / "victim" / "inputs" / "sampleA" / "sampleA.bam"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"a lab's own file")
    make_workdir(wd, plan__n_regions=N_REGIONS, **{setting: value.format(wd=wd)})
    before = snapshot(wd)
    res = snakemake(wd)
    assert res.returncode != 0
    assert error_lines(res) == [line.format(wd=wd)], why(res)
    assert victim.read_bytes() == b"a lab's own file" and not victim.is_symlink()
    assert snapshot(wd, skip=(".snakemake",)) == before  # nothing written anywhere


@pytest.mark.e2e
def test_staging_never_replaces_a_file_that_is_not_its_own(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd", plan__n_regions=N_REGIONS)
    (wd / "config" / "samples.tsv").write_text(ONE_SAMPLE)
    theirs = store_root(wd) / "inputs" / "sampleA" / "sampleA.bam"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"somebody else's data")
    res = snakemake(wd)
    assert res.returncode != 0
    assert error_lines(res) == [
        f"error: the local store already holds a file at {theirs} that is not a staged input (staging links "
        "inputs, it never copies them): it is not the pipeline's to replace; move it away, or set storage.prefix "
        "to a key prefix of this project's own"], why(res)
    assert "Error in rule stage_sample" in res.stderr
    assert theirs.read_bytes() == b"somebody else's data" and not theirs.is_symlink()
    assert complete_results(wd) == []


@pytest.mark.parametrize("prefix", ["../x", "a/../../x", "/abs", "a//b", ".hidden"])
def test_the_store_facade_refuses_a_prefix_that_is_a_path(prefix: str) -> None:
    with pytest.raises(StorageError, match="storage prefix .* is not allowed"):
        ObjectStore(LITHOPS_LOCAL, prefix=prefix)


def test_the_local_store_proves_every_key_stays_inside(tmp_path: Path) -> None:
    store = ObjectStore(LITHOPS_LOCAL, prefix="t/inside")
    root = Path(store._local_root())
    for key in ("t/inside/../../../x", "/etc/passwd", "../storage2/x"):
        for op in (lambda k: store.put(k, b"x"), store.get, store.delete, store.head):
            with pytest.raises(StorageError, match="would lie outside the local store"):
                op(key)
    # A folder inside the store that links out of it is not written through.
    (root / "t" / "inside").mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "t" / "inside" / "door").symlink_to(outside)
    with pytest.raises(StorageError, match="leads outside it"):
        store.put("t/inside/door/x", b"x")
    assert list(outside.iterdir()) == []


def test_a_local_put_is_atomic_and_leaves_no_temporary() -> None:
    store = ObjectStore(LITHOPS_LOCAL, prefix="t/atomic")
    key = store.key("obj")
    store.put(key, b"first")
    store.put(key, b"second")
    assert store.get(key) == b"second"
    folder = Path(store._local_path(key)).parent
    assert sorted(p.name for p in folder.iterdir()) == ["obj"]


# -- 2. results that are whole or absent ----------------------------------------------------
def test_atomic_outputs_publish_on_success_and_remove_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "s.vcf.gz"
    with pytest.raises(RuntimeError), atomic_outputs(str(final)) as (tmp,):
        Path(tmp).write_text("half")
        assert Path(tmp).name.startswith(".s.vcf.gz.tmp-") and not list(tmp_path.glob("*.vcf.gz"))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    stale = tmp_path / ".s.vcf.gz.tmp-1-0"  # left by a process killed outright
    stale.write_text("old")
    with atomic_outputs(str(final)) as (tmp,):
        Path(tmp).write_text("whole")
    assert final.read_text() == "whole" and sorted(p.name for p in tmp_path.iterdir()) == ["s.vcf.gz"]


def test_writable_check_answers_for_root_too(tmp_path: Path) -> None:
    check_writable(str(tmp_path / "not" / "yet"))  # created later: its nearest folder is checked
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (f"mount -t tmpfs -o ro tmpfs {ro} && exec {sys.executable} -c "
              f"'from functions.core.atomic import check_writable; check_writable(\"{ro}\")'")
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode != 0
    assert f"OutputError: output folder {ro} is not writable: Read-only file system" in res.stderr
    with pytest.raises(OutputError, match="no space left in .* while writing big.vcf.gz: the step needs about 1,000,"):
        with atomic_outputs(str(tmp_path / "big.vcf.gz"), needed=10**18):
            pass
    assert list(tmp_path.glob("*big*")) == []


def snakemake_in_mount(wd: Path, mount: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """snakemake in a private mount namespace where ``wd/results`` is the given tmpfs (gone with it)."""
    (wd / "results").mkdir(exist_ok=True)
    script = (f"mount -t tmpfs {' '.join(mount)} tmpfs {wd / 'results'} && exec {sys.executable} -m snakemake "
              f"--snakefile {ROOT / 'Snakefile'} --directory {wd} --cores 2 {' '.join(args)}")
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
    env = dict(os.environ, TMPDIR=str(wd / "tmp"))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
def test_read_only_results_folder_stops_the_run_before_anything_runs(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd", plan__n_regions=N_REGIONS)
    res = snakemake_in_mount(wd, ["-o", "ro"])
    assert res.returncode != 0
    assert error_lines(res) == [
        f"error: output folder {wd}/results is not writable: Read-only file system; make it writable (or free the "
        "disk), or run the workflow from a folder where it can write"], why(res)
    assert not (wd / "work").exists() and not list(store_root(wd).parent.glob("*"))


@pytest.mark.e2e
def test_full_results_folder_is_one_line_and_no_partial_vcf(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd", plan__n_regions=N_REGIONS)
    (wd / "config" / "samples.tsv").write_text(ONE_SAMPLE)
    res = snakemake_in_mount(wd, ["-o", "size=24k"])
    assert res.returncode != 0
    lines = error_lines(res)
    assert len(lines) == 1 and "Error in rule merge" in res.stderr, why(res)
    assert lines[0].startswith(f"error: no space left in {wd}/results while writing sampleA.vcf.gz: the step "
                               "needs about "), lines
    assert lines[0].endswith("bytes are free; free some space (or point the workflow at a larger disk) and run "
                             "it again"), lines
    # The tmpfs is gone with the namespace; what the run left beside it is checked here.
    assert complete_results(wd) == [] and hidden_temps(wd) == []


@pytest.mark.e2e
def test_merge_killed_mid_write_leaves_no_result_and_the_next_run_finishes(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path / "wd", plan__n_regions=N_REGIONS)
    (wd / "config" / "samples.tsv").write_text(ONE_SAMPLE)
    assert snakemake(wd, "--until", "call").returncode == 0
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(wd),
           "--cores", "2"]
    killed: list[str] = []
    results = wd / "results"
    with open(tmp_path / "run.log", "w") as log:
        snake = subprocess.Popen(cmd, env=dict(os.environ, TMPDIR=str(wd / "tmp")), stdout=log, stderr=log,
                                 start_new_session=True)
        try:
            merge = None
            deadline = time.monotonic() + 120
            while merge is None and snake.poll() is None and time.monotonic() < deadline:
                merge = next((p for p in psutil.process_iter(["cmdline", "cwd"])
                              if "pipeline.cli merge" in " ".join(p.info["cmdline"] or [])
                              and p.info["cwd"] == str(wd)), None)
            assert merge is not None, "no merge started"
            # Its interpreter takes a while to start: watch for its first temporary, then kill it at once.
            while not killed and merge.is_running() and time.monotonic() < deadline:
                with os.scandir(results) as entries:
                    temps = [e.name for e in entries if e.name.startswith(".") and ".tmp-" in e.name]
                if temps:
                    os.kill(merge.pid, signal.SIGKILL)
                    killed = temps
            published = (results / "sampleA.vcf.gz").exists()
            snake.wait(60)
        finally:
            kill_everything(wd, snake)
    assert killed and not published, "the merge was never caught writing: " + (tmp_path / "run.log").read_text()
    assert snake.returncode != 0
    assert complete_results(wd) == []
    res = snakemake(wd)
    assert res.returncode == 0, why(res)
    assert complete_results(wd) == ["sampleA.vcf.gz"] and hidden_temps(wd) == []
    assert vcf_body(str(wd / "results" / "sampleA.vcf.gz")) == vcf_body(whole_genome("sampleA", tmp_path))


# -- 3. runs that share a store ------------------------------------------------------------
@pytest.mark.e2e
def test_two_runs_sharing_a_store_at_once_both_finish_with_their_solo_vcfs(tmp_path: Path) -> None:
    first = make_workdir(tmp_path / "first", plan__n_regions=N_REGIONS)
    second = make_workdir(tmp_path / "second", plan__n_regions=N_REGIONS)
    (second / "tmp").rmdir()
    (second / "tmp").symlink_to(first / "tmp")  # one local store, as with one $TMPDIR
    runs = []
    for wd in (first, second):
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(wd),
               "--cores", "2"]
        runs.append(subprocess.Popen(cmd, env=dict(os.environ, TMPDIR=str(first / "tmp")), text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=600) for p in runs]
    for p, (_, err) in zip(runs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    for s in ("sampleA", "sampleB"):
        want = vcf_body(whole_genome(s, tmp_path))
        for wd in (first, second):
            assert vcf_body(str(wd / "results" / f"{s}.vcf.gz")) == want
    # The fragments are byte for byte the task's, wherever and whenever made: no temp paths, no dates.
    vcf = first / "results" / "sampleA.vcf.gz"
    header = [ln for ln in gzip.open(vcf, "rt") if ln.startswith("##")]
    assert not [ln for ln in header if "svc-region-" in ln or "Date=" in ln], header
    reference = [ln for ln in header if ln.startswith("##reference=")]
    assert reference == [f"##reference=file://{first / 'test_data' / 'ref.fa'}\n"]


def test_a_fragment_is_the_same_bytes_whoever_makes_it(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from helpers import run_core, serial

    from functions.bcftools_engine import BcftoolsParams
    from functions.call_region import call_region
    from pipeline.call import CallInputs
    from pipeline.manifests import StagedReference, StagedSample
    from pipeline.plan import read_plan

    run_core(store, "sampleA", tmp_path, serial(store), 2)
    plan = read_plan(tmp_path / "sampleA.plan.tsv")
    inputs = CallInputs(store, [plan], {"sampleA": StagedSample.read(tmp_path / "sampleA.json")},
                        StagedReference.read(tmp_path / "ref.json"), BcftoolsParams())
    task = inputs.tasks()[0]
    made = []
    for _ in range(2):
        stats = call_region(task, storage=store.lithops_storage)
        made.append((stats["md5"], store.get(task["out_key"] + ".vcf.gz")))
        time.sleep(1.1)  # a date in the header would now differ
    assert made[0] == made[1]


@pytest.mark.e2e
def test_a_damaged_fragment_is_recomputed_by_a_plain_rerun(tmp_path: Path) -> None:
    """The merge removes the call manifest when a fragment is lost, so the next run calls it again."""
    wd = make_workdir(tmp_path / "wd", plan__n_regions=N_REGIONS)
    (wd / "config" / "samples.tsv").write_text(ONE_SAMPLE)
    assert snakemake(wd, "--until", "call").returncode == 0
    frag = sorted(store_root(wd).glob("fragments/sampleA/*.vcf.gz"))[1]
    frag.write_bytes(frag.read_bytes()[:-50])
    res = snakemake(wd)
    assert res.returncode != 0 and len(error_lines(res)) == 1, why(res)
    assert error_lines(res)[0].endswith("is damaged (md5 mismatch); it changed in the store after it was written: "
                                        "run `snakemake --cores 2` again: it recomputes it (and reuses the intact "
                                        "fragments)")
    assert not (wd / "work" / "calls" / "sampleA.json").exists() and complete_results(wd) == []
    res = snakemake(wd)
    assert res.returncode == 0, why(res)
    assert "1 functions run, 3 fragments reused" in res.stderr
    assert vcf_body(str(wd / "results" / "sampleA.vcf.gz")) == vcf_body(whole_genome("sampleA", tmp_path))


# -- 8. reads the caller cannot use ----------------------------------------------------------
@pytest.mark.e2e
def test_a_bam_whose_reads_are_all_duplicates_says_so(tmp_path: Path) -> None:
    dups = tmp_path / "dups.bam"
    with pysam.AlignmentFile(str(DATA / "sampleA.bam")) as src, \
            pysam.AlignmentFile(str(dups), "wb", header=src.header) as out:
        for read in src:
            read.is_duplicate = True
            out.write(read)
    pysam.index(str(dups))
    wd = make_workdir(tmp_path / "wd", plan__n_regions=N_REGIONS)
    (wd / "config" / "samples.tsv").write_text(f"sample\tbam\nsampleA\t{dups}\n")
    res = snakemake(wd)
    assert res.returncode == 0, why(res)
    assert vcf_body(str(wd / "results" / "sampleA.vcf.gz")) == []
    warning = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: sample sampleA: none of its")]
    assert len(warning) == 1 and "reads can be used by the caller (every one is flagged duplicate" in warning[0]
    page = (wd / "results" / "report.html").read_text()
    assert "<h2>Warnings</h2>" in page and "sample sampleA: none of its" in page
