"""Kill a Lithops localhost run's processes when the process driving it dies without ending it.

Contract: ``with Watchdog():`` around a Lithops localhost fan-out starts one small
process (``python -m pipeline.watchdog TOKEN``, in a session of its own, so a kill of
the driver's process group does not reach it) and puts ``SVC_RUN_TOKEN=TOKEN``, a fresh
random token, into this process's environment for the length of the block: every
process Lithops starts meanwhile (job runners, their forked workers) inherits it, in
sessions of their own that a kill of the driver's group misses too. The watchdog
blocks reading its stdin, a pipe from the driver:

* the block ends (normally or with any Python exception, Ctrl-C included): the driver
  writes :data:`DONE` and closes the pipe, and the watchdog exits without touching
  anything (Lithops has stopped its jobs itself; its cleaner must finish: it deletes
  files that hold the storage credentials);
* the driver dies instead (SIGKILL, SIGTERM, a crash): the pipe reaches end-of-file
  without :data:`DONE`, and the watchdog SIGKILLs every process whose environment
  (``/proc/<pid>/environ``) carries the token, a few rounds since a runner may fork
  while it goes, except Lithops' cleaner (it exits by itself within seconds), then
  exits. The token leaves the environment when the block ends, so the next run gets
  its own.

The watchdog imports only the standard library and psutil: it costs one interpreter start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from types import TracebackType

import psutil

#: The environment variable that marks a run's processes.
TOKEN_VAR = "SVC_RUN_TOKEN"
#: What the driver writes to the watchdog when the run ended in the driver's hands.
DONE = b"d"
#: At most this many rounds of looking for and killing the marked processes.
KILL_ROUNDS = 10
#: Lithops' cleaner process (``python -m lithops.scripts.cleaner``): never killed.
CLEANER_MODULE = "lithops.scripts.cleaner"


def marked_processes(token: str) -> list[psutil.Process]:
    """The live processes (not this one) whose environment carries ``token``, except Lithops' cleaner."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid == os.getpid() or CLEANER_MODULE in (proc.info["cmdline"] or []):
                continue
            if proc.environ().get(TOKEN_VAR) == token and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:  # gone, or not ours to read
            continue
    return found


def kill_marked(token: str, rounds: int = KILL_ROUNDS) -> int:
    """SIGKILL the processes carrying ``token`` until none is left (at most ``rounds`` rounds); how many."""
    killed = 0
    for _ in range(rounds):
        procs = marked_processes(token)
        if not procs:
            break
        for proc in procs:
            try:
                proc.kill()
                killed += 1
            except psutil.Error:
                pass
        _wait_dead(procs, timeout=1.0)
        time.sleep(0.05)  # let a runner that forked just before its death show its child
    return killed


def _wait_dead(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until each process is gone or a zombie (not our children: nobody here reaps them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for proc in procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.Error:
                pass
        if not alive:
            return
        procs = alive
        time.sleep(0.02)


def watch(token: str) -> int:
    """The watchdog process: wait for the driver's word or its death (see the module's contract)."""
    try:
        word = sys.stdin.buffer.read(1)
    except OSError:
        word = b""
    if word == DONE:
        return 0
    killed = kill_marked(token)
    try:
        print(f"watchdog: the process driving Lithops run {token} died; killed {killed} of its processes",
              file=sys.stderr, flush=True)
    except OSError:  # nobody reads our stderr any more
        pass
    return 0


class Watchdog:
    """The driver's side: start the watchdog and mark the processes started inside the block."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Watchdog:
        env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.watchdog", self.token],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        os.environ[TOKEN_VAR] = self.token
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        os.environ.pop(TOKEN_VAR, None)
        proc = self.process
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(DONE)
            proc.stdin.close()
        except OSError:  # the watchdog is gone already
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pipeline.watchdog TOKEN", file=sys.stderr)
        return 2
    return watch(argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
