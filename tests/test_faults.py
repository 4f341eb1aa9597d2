"""Faults, end to end through the real ``snakemake`` command line: injected failures
and stragglers, a run killed mid-way and resumed, a fragment damaged before the
merge, function time limits, and two runs with different parameters sharing one store.

Every run here uses the bundled test data cut into 4 regions per sample (8 functions).
Failures are injected with the config section ``faults`` (see
config/schemas/config.schema.yaml and functions/faults.py): each attempt at a region
draws from (seed, sample, region, attempt) alone, so a test knows in advance which
attempts fail and can check the run's stats against that.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import SAMPLES
from helpers import whole_genome
from test_e2e import ROOT, make_workdir, snakemake

from bench.evaluation.vcfcompare import vcf_body
from functions.bcftools_engine import BcftoolsParams
from functions.faults import FaultSettings, draw
from pipeline.plan import read_plan

pytestmark = pytest.mark.e2e

N_REGIONS = 4


# -- helpers -------------------------------------------------------------------------
def store_root(wd: Path) -> Path:
    """The run's local object store (Lithops' localhost storage under the run's TMPDIR)."""
    return wd / "tmp" / f"lithops-{os.environ.get('USER', 'root')}" / "storage" / "svc"


def calls(wd: Path, sample: str) -> dict:
    return json.loads((wd / "work" / "calls" / f"{sample}.json").read_text())


def bodies(wd: Path) -> dict[str, list[str]]:
    return {s: vcf_body(str(wd / "results" / f"{s}.vcf.gz")) for s in SAMPLES}


def error_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]


def why(res: subprocess.CompletedProcess[str]) -> str:
    """What a failed run said: its error lines first, then the end of its stderr."""
    return "\n".join(error_lines(res)) + "\n...\n" + res.stderr[-2000:]


def no_results(wd: Path) -> bool:
    return not list((wd / "results").glob("*.vcf.gz")) if (wd / "results").exists() else True


def region_names(wd: Path) -> dict[str, list[str]]:
    return {s: [r.name for r in read_plan(wd / "work" / "plans" / f"{s}.tsv").regions] for s in SAMPLES}


def expected_attempts(wd: Path, faults: FaultSettings, retries: int) -> dict[tuple[str, str], list[str | None]]:
    """The faults each region's attempts draw, up to its first attempt that succeeds."""
    out: dict[tuple[str, str], list[str | None]] = {}
    for sample, names in region_names(wd).items():
        for name in names:
            drawn: list[str | None] = []
            for attempt in range(1, retries + 2):
                drawn.append(draw(faults, sample, name, attempt))
                if drawn[-1] in (None, "delay"):
                    break
            out[sample, name] = drawn
    return out


def intact_fragments(wd: Path) -> set[str]:
    """Keys (without extension) of fragments whose stats are readable and whose VCF has the recorded size."""
    found = set()
    for meta in store_root(wd).glob("fragments/*/*.json"):
        vcf = meta.with_suffix(".vcf.gz")
        try:
            stats = json.loads(meta.read_text())
        except ValueError:
            continue
        if vcf.exists() and vcf.stat().st_size == stats["size"]:
            found.add(str(meta.relative_to(store_root(wd).parent)).removesuffix(".json"))
    return found


def workdir_processes(wd: Path) -> list[psutil.Process]:
    """Live processes started for this working directory: snakemake, its steps, and Lithops'
    job runners and workers — which run in sessions of their own, so they are found by their
    command line (the runner's files are under the run's TMPDIR) or their folder."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE or p.pid == os.getpid():
                continue
            cmd, cwd = " ".join(p.info["cmdline"] or []), p.info["cwd"] or ""
        except psutil.Error:
            continue
        if str(wd) in cmd or cwd == str(wd) or cwd.startswith(f"{wd}/"):
            found.append(p)
    return found


def kill_everything(wd: Path, snake: subprocess.Popen[str] | None = None) -> None:
    """SIGKILL snakemake's process group, then the process group of every other process of the run."""
    own = os.getpgid(0)
    if snake is not None:
        if snake.poll() is None:
            os.killpg(snake.pid, signal.SIGKILL)
        snake.wait(10)  # reaped here, so that its exit status is kept (psutil would reap it blindly)
    for _ in range(20):
        procs = workdir_processes(wd)
        if not procs:
            return
        for p in procs:
            try:
                pgid = os.getpgid(p.pid)
                if pgid != own:
                    os.killpg(pgid, signal.SIGKILL)
                else:
                    p.kill()
            except (ProcessLookupError, psutil.Error):
                pass
        psutil.wait_procs(procs, timeout=5)
    raise AssertionError(f"processes of {wd} survive SIGKILL: {workdir_processes(wd)}")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run without faults: the VCFs every faulty run must equal."""
    wd = make_workdir(tmp_path_factory.mktemp("clean"), plan__n_regions=N_REGIONS)
    res = snakemake(wd)
    assert res.returncode == 0, why(res)
    return wd


@pytest.fixture
def reaper(tmp_path: Path) -> Iterator[None]:
    """Whatever happens in the test, no process of its runs outlives it."""
    yield
    kill_everything(tmp_path)


# -- 2. injected failures --------------------------------------------------------------
def test_injected_failures_are_retried_and_change_nothing(clean: Path, tmp_path: Path) -> None:
    faults = FaultSettings(probability=0.2, seed=128, delay_seconds=3)
    wd = make_workdir(tmp_path, plan__n_regions=N_REGIONS, faults=faults.as_dict())
    res = snakemake(wd)
    assert res.returncode == 0, why(res)

    expected = expected_attempts(wd, faults, retries=2)
    # Seed 128 on this plan (the draws follow the region names): one region raises, one kills
    # its process, one straggles.
    assert sorted(f for drawn in expected.values() for f in drawn if f) == ["delay", "kill", "raise"]
    retries = 0
    for sample in SAMPLES:
        for frag in calls(wd, sample)["fragments"]:
            drawn = expected[sample, frag["name"]]
            assert (frag["attempts"], frag["fault"]) == (len(drawn), drawn[-1]), frag
            if frag["fault"] == "delay":
                assert frag["seconds"] >= 3
            retries += frag["attempts"] - 1
    assert retries == 2
    assert "8 functions run, 0 fragments reused; 2 retries (2 regions); read" in res.stderr
    assert bodies(wd) == bodies(clean)

    # The run report draws each failed try (as Lithops saw it) and names the straggler.
    frags = [(s, f) for s in SAMPLES for f in calls(wd, s)["fragments"]]
    for _, f in frags:
        failed = f.get("failed_attempts", [])
        assert len(failed) == f["attempts"] - 1
        assert all(f["submitted"] - 1 <= a["started"] <= f["started"] and a["seconds"] >= 0 for a in failed)
    page = (wd / "results" / "report.html").read_text()
    assert page.count(" s, failed: ") == 2 and "InjectedFault" in page
    slow = [f"{s} {f['name']}" for s, f in frags if f["fault"] == "delay"]
    named = re.findall(r"<tr><td>(sample[AB] chr\d:\d+-\d+)</td><td>[\d.]+</td><td>[\d.]+</td></tr>", page)
    # The delayed function (3 s against a median of about 0.4 s) comes first; on a busy
    # machine another function may cross the line too.
    assert len(slow) == 1 and named[:1] == slow, named


def test_functions_that_always_fail_stop_the_run_naming_every_region(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path, plan__n_regions=N_REGIONS, executor__retries=1,
                      faults={"probability": 1, "modes": ["raise", "kill"]})
    res = snakemake(wd)
    assert res.returncode != 0
    lines = error_lines(res)
    assert len(lines) == 1, res.stderr[-3000:]
    regions = [f"{s} {name}" for s, names in region_names(wd).items() for name in names]
    assert lines[0].startswith(f"error: 8 of 8 functions failed (each tried 2 times): {', '.join(regions)}; "
                               "first error, sampleA chr1:1-")
    assert ("InjectedFault: injected failure (attempt 2)" in lines[0]
            or "MemoryError: The function process was killed with SIGKILL" in lines[0])
    assert lines[0].endswith("the regions that finished are kept: run `snakemake --cores 2` again to call "
                             "only the failed ones (each region's error is in work/logs/call.log)")
    assert no_results(wd) and not list((wd / "work").glob("calls/*.json"))


# -- 3. kill and resume ------------------------------------------------------------------
def test_killed_run_resumes_with_only_the_missing_regions(
    clean: Path, tmp_path: Path, reaper: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Started from a process that has used Lithops (as pytest has, in other tests): both
    # runs inherit its Lithops session, which once made them name their executors alike.
    monkeypatch.setenv("__LITHOPS_SESSION_ID", "svctst")
    monkeypatch.setenv("__LITHOPS_TOTAL_EXECUTORS", "0")
    # Every function sleeps 2 s first: with 2 workers, 8 regions take 4 rounds, so a
    # kill as soon as fragments appear always lands mid-way.
    wd = make_workdir(tmp_path, plan__n_regions=N_REGIONS,
                      faults={"probability": 1, "modes": ["delay"], "delay_seconds": 2})
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(wd), "--cores", "2"]
    env = dict(os.environ, TMPDIR=str(wd / "tmp"))
    with open(tmp_path / "first.log", "w") as log:
        snake = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True, text=True)
        deadline = time.monotonic() + 120
        while not intact_fragments(wd):
            assert snake.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no fragment after 120 s"
            time.sleep(0.05)
        kill_everything(wd, snake)
    assert snake.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
    assert workdir_processes(wd) == []
    done = intact_fragments(wd)
    assert 1 <= len(done) < 8, done
    assert no_results(wd)

    # Snakemake's lock outlives a SIGKILL: it says so and names --unlock.
    res = snakemake(wd)
    assert res.returncode != 0 and "It can be removed with the --unlock argument." in res.stderr
    assert snakemake(wd, "--unlock").returncode == 0
    res = snakemake(wd)
    assert res.returncode == 0, why(res)
    frags = [f for s in SAMPLES for f in calls(wd, s)["fragments"]]
    assert {f["out_key"] for f in frags if f["reused"]} == done
    assert sum(not f["reused"] for f in frags) == 8 - len(done)
    assert f"{8 - len(done)} functions run, {len(done)} fragments reused" in res.stderr
    assert bodies(wd) == bodies(clean)


# -- 4. a fragment damaged in the store before the merge --------------------------------------
def test_fragment_damaged_before_the_merge_is_refused_then_recomputed(clean: Path, tmp_path: Path) -> None:
    wd = make_workdir(tmp_path, plan__n_regions=N_REGIONS)
    res = snakemake(wd, "--until", "call")
    assert res.returncode == 0, why(res)
    altered = sorted(store_root(wd).glob("fragments/sampleA/*.vcf.gz"))[1]
    data = altered.read_bytes()
    altered.write_bytes(data[:60] + bytes([data[60] ^ 1]) + data[61:])  # same size, one bit flipped
    truncated = sorted(store_root(wd).glob("fragments/sampleB/*.vcf.gz"))[2]
    truncated.write_bytes(truncated.read_bytes()[:-100])

    res = snakemake(wd, "--keep-going")
    assert res.returncode != 0
    lines = sorted(error_lines(res))
    names = region_names(wd)
    fix = ("it changed in the store after it was written: run `snakemake --cores 2` again: it recomputes it "
           "(and reuses the intact fragments)")
    assert lines == [
        f"error: sample sampleA region {names['sampleA'][1]}: fragment svc/fragments/sampleA/{altered.name} "
        f"is damaged (md5 mismatch); {fix}",
        f"error: sample sampleB region {names['sampleB'][2]}: fragment svc/fragments/sampleB/{truncated.name} "
        f"is damaged (md5 mismatch); {fix}",
    ], res.stderr[-3000:]
    assert no_results(wd)

    # The merge dropped the call manifests that name the damaged fragments: a plain rerun calls them again.
    res = snakemake(wd)
    assert res.returncode == 0, why(res)
    assert "2 functions run, 6 fragments reused" in res.stderr
    assert bodies(wd) == bodies(clean)


# -- 5. time limits ----------------------------------------------------------------------
def test_functions_over_their_time_limit_are_retried(clean: Path, tmp_path: Path) -> None:
    faults = FaultSettings(probability=0.3, modes=("delay",), delay_seconds=60, seed=9)
    wd = make_workdir(tmp_path, plan__n_regions=N_REGIONS, executor__timeout=3, faults=faults.as_dict())
    t0 = time.monotonic()
    res = snakemake(wd)
    seconds = time.monotonic() - t0
    assert res.returncode == 0, why(res)
    # Each delayed attempt is stopped at the limit and retried; the retry draws again.
    # Seed 9 on this plan: two regions time out, one of them twice (3 retries of the 2 allowed per region).
    expected = {}
    for sample, names in region_names(wd).items():
        for name in names:
            attempt = 1
            while draw(faults, sample, name, attempt) == "delay":
                attempt += 1
            expected[sample, name] = attempt
    assert sorted(expected.values()) == [1, 1, 1, 1, 1, 1, 2, 3]
    assert {(s, f["name"]): f["attempts"] for s in SAMPLES for f in calls(wd, s)["fragments"]} == expected
    assert "8 functions run, 0 fragments reused; 3 retries (2 regions); read" in res.stderr
    assert seconds < 60
    assert bodies(wd) == bodies(clean)


def test_functions_that_never_finish_in_time_fail_the_run_in_bounded_time(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path, plan__n_regions=N_REGIONS, executor__timeout=2, executor__retries=0,
                      faults={"probability": 1, "modes": ["delay"], "delay_seconds": 600})
    t0 = time.monotonic()
    res = snakemake(wd, timeout=120)
    seconds = time.monotonic() - t0
    assert res.returncode != 0
    lines = error_lines(res)
    assert len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("error: 8 of 8 functions failed: sampleA chr1:1-")
    assert "TimeoutError: Function exceeded maximum time of 2 seconds and was killed" in lines[0]
    assert no_results(wd)
    assert seconds < 60


# -- 6. two runs with different parameters, one store --------------------------------------
def test_runs_with_other_parameters_share_a_store_without_touching_each_other(clean: Path, tmp_path: Path) -> None:
    before = {p: p.read_bytes() for p in store_root(clean).glob("fragments/*/*")}
    assert len(before) == 2 * 8  # one .vcf.gz and one .json per region
    other = make_workdir(tmp_path / "haploid", plan__n_regions=N_REGIONS, calling__bcftools__ploidy=1)
    (other / "tmp").rmdir()
    (other / "tmp").symlink_to(clean / "tmp")  # the same Lithops store
    res = snakemake(other)
    assert res.returncode == 0, why(res)
    assert "8 functions run, 0 fragments reused" in res.stderr

    after = {p: p.read_bytes() for p in store_root(clean).glob("fragments/*/*")}
    assert {p: after[p] for p in before} == before  # nothing of the first run overwritten
    assert len(after) == 2 * len(before)
    ours = {f["out_key"] for s in SAMPLES for f in calls(other, s)["fragments"]}
    theirs = {f["out_key"] for s in SAMPLES for f in calls(clean, s)["fragments"]}
    assert not ours & theirs
    haploid = BcftoolsParams(ploidy=1)
    for s in SAMPLES:
        assert bodies(other)[s] == vcf_body(whole_genome(s, tmp_path, haploid))
        assert bodies(clean)[s] == vcf_body(whole_genome(s, tmp_path))
        assert bodies(other)[s] != bodies(clean)[s]

    # The first run, again over the shared store, finds exactly its own fragments.
    res = snakemake(clean, "--forcerun", "call")
    assert res.returncode == 0, why(res)
    assert "0 functions run, 8 fragments reused" in res.stderr
    assert {f["out_key"] for s in SAMPLES for f in calls(clean, s)["fragments"]} == theirs
    for s in SAMPLES:
        assert bodies(clean)[s] == vcf_body(whole_genome(s, tmp_path))
