"""No orphans: a killed run leaves no Lithops worker running (pipeline/watchdog.py).

Lithops localhost starts each job's runner in a session of its own and the runner forks
the workers, so a SIGKILL of Snakemake's process group does not reach them: without the
watchdog they went on calling regions and writing fragments after the run was gone.
The unit tests drive the watchdog directly; the end-to-end test kills a real
``snakemake`` run mid fan-out and times how long its workers outlive it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_e2e import ROOT, make_workdir
from test_faults import kill_everything, store_root, workdir_processes

from pipeline.watchdog import DONE, TOKEN_VAR, Watchdog, marked_processes

# Seconds a killed run's processes may outlive it.
GRACE = 5.0


def start_watchdog(token: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pipeline.watchdog", token], cwd=ROOT,
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def start_marked_sleep(token: str) -> subprocess.Popen[bytes]:
    """A process in a session of its own carrying ``token``, as a Lithops runner does."""
    return subprocess.Popen(["sleep", "60"], env=dict(os.environ, **{TOKEN_VAR: token}), start_new_session=True)


@pytest.fixture
def token() -> Iterator[str]:
    token = uuid.uuid4().hex
    yield token
    for proc in marked_processes(token):
        proc.kill()


def test_watchdog_kills_the_marked_processes_when_its_driver_dies(token: str) -> None:
    dog = start_watchdog(token)
    sleeper = start_marked_sleep(token)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)  # not marked
    try:
        assert dog.stdin is not None
        dog.stdin.close()  # end-of-file without DONE: the driver died
        assert sleeper.wait(timeout=GRACE) == -signal.SIGKILL
        assert dog.wait(timeout=GRACE) == 0
        assert dog.stderr is not None and b"killed 1 of its processes" in dog.stderr.read()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        dog.kill()
        dog.wait()
        assert dog.stderr is not None
        dog.stderr.close()


def test_watchdog_leaves_everything_alone_when_the_run_ends(token: str) -> None:
    dog = start_watchdog(token)
    sleeper = start_marked_sleep(token)
    try:
        assert dog.stdin is not None
        dog.stdin.write(DONE)
        dog.stdin.close()
        assert dog.wait(timeout=GRACE) == 0
        time.sleep(0.2)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
        assert dog.stderr is not None
        dog.stderr.close()


def test_watchdog_block_marks_children_then_forgets_the_token() -> None:
    with Watchdog() as dog:
        assert os.environ[TOKEN_VAR] == dog.token
        child = subprocess.Popen(["sleep", "60"], start_new_session=True)
        assert [p.pid for p in marked_processes(dog.token)] == [child.pid]
        assert dog.process is not None  # the watchdog does not carry the token itself
        assert TOKEN_VAR not in psutil.Process(dog.process.pid).environ()
    assert TOKEN_VAR not in os.environ
    assert dog.process is not None and dog.process.returncode == 0
    assert child.poll() is None  # a run that ended in the driver's hands kills nothing
    child.kill()
    child.wait()
    with Watchdog() as second:
        assert second.token != dog.token


# -- end to end ---------------------------------------------------------------------------
def run_processes(wd: Path, token: str | None) -> list[psutil.Process]:
    """What is left of a run: processes carrying its token, and Lithops runners/workers of its TMPDIR."""
    left = {p.pid: p for p in workdir_processes(wd)}
    if token:
        left.update({p.pid: p for p in marked_processes(token)})
    return list(left.values())


def lithops_workers(wd: Path) -> list[psutil.Process]:
    """Lithops localhost job runners and their forked workers (same command line) of this run's TMPDIR."""
    runner = str(wd / "tmp" / f"lithops-{os.environ.get('USER', 'root')}" / "localhost-runner-v1.py")
    found = []
    for p in workdir_processes(wd):
        try:
            if runner in p.cmdline() and "run_job" in p.cmdline():
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.mark.e2e
def test_killed_run_leaves_no_worker_running(tmp_path: Path) -> None:
    # Every function sleeps 60 s first: without the watchdog its workers would outlive the run by a minute.
    wd = make_workdir(tmp_path, plan__n_regions=4,
                      faults={"probability": 1, "modes": ["delay"], "delay_seconds": 60})
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(wd), "--cores", "2"]
    env = dict(os.environ, TMPDIR=str(wd / "tmp"))
    env.pop(TOKEN_VAR, None)
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        snake = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True, text=True)
        try:
            # Workers are running functions once each has left its attempt marker in the store.
            deadline = time.monotonic() + 120
            while len(list(store_root(wd).glob("faults/*/*/*"))) < 2 or len(lithops_workers(wd)) < 3:
                assert snake.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "no two functions running after 120 s"
                time.sleep(0.1)
            workers = lithops_workers(wd)
            tokens = {p.environ().get(TOKEN_VAR) for p in workers}
            assert len(tokens) == 1 and None not in tokens, tokens  # one run, every process marked
            token = tokens.pop()

            os.killpg(snake.pid, signal.SIGKILL)
            killed = time.monotonic()
            snake.wait(10)
            while run_processes(wd, token) and time.monotonic() - killed < 30:
                time.sleep(0.05)
            seconds = time.monotonic() - killed
            left = run_processes(wd, token)
            print(f"{len(workers)} Lithops runner/worker processes; none left {seconds:.2f} s after the kill")
            assert not left, f"{len(left)} processes outlive the killed run by 30 s: {left}"
            assert seconds < GRACE, f"the run's processes outlived it by {seconds:.1f} s"
        finally:
            kill_everything(wd, snake)
    assert "watchdog: the process driving Lithops run" in log_path.read_text()  # the step's stderr
