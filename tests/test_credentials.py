"""Credentials at rest: other users cannot read what Lithops writes (functions/core/private_dirs.py).

Lithops writes the whole storage config, secrets included, into ``*-job.json`` files
of mode 0644 under ``$TMPDIR/lithops-$USER``. The folder is kept 0700, so another
user reaches none of them. "Another user" is a subprocess that drops to uid/gid 65534
(nobody); the tests run as root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_e2e import ROOT, make_workdir
from test_faults import kill_everything

from functions.core.private_dirs import PrivateDirError, make_private_dir

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def readable_by_nobody(path: Path) -> bool:
    """Whether a process of user and group 65534 can open ``path`` for reading."""
    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    # cat, from /usr/bin: this Python may live where nobody cannot run it (under /root).
    res = subprocess.run(["cat", str(path)], preexec_fn=drop, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, timeout=30, cwd="/")
    if res.returncode != 0:
        assert "Permission denied" in res.stderr, res.stderr
    return res.returncode == 0


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user can enter (pytest's own are 0700, which would hide everything anyway)."""
    path = Path(tempfile.mkdtemp(prefix="svc-cred-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- the folder rules ------------------------------------------------------------------------
def test_missing_folder_is_created_private(tmp_path: Path) -> None:
    make_private_dir(str(tmp_path / "lithops-me"))
    assert mode(tmp_path / "lithops-me") == 0o700


def test_open_folder_of_ours_is_closed_and_its_files_kept(tmp_path: Path) -> None:
    folder = tmp_path / "lithops-me"
    folder.mkdir(mode=0o755)
    (folder / "x-job.json").write_text("{}")
    folder.chmod(0o755)
    make_private_dir(str(folder))
    assert mode(folder) == 0o700 and (folder / "x-job.json").read_text() == "{}"
    linked = tmp_path / "link"
    linked.symlink_to(folder)
    folder.chmod(0o750)
    make_private_dir(str(linked))  # a link of ours to a folder of ours
    assert mode(folder) == 0o700


@needs_root
def test_folder_of_another_user_is_refused_with_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "lithops-me"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(PrivateDirError) as err:
        make_private_dir(str(folder))
    assert str(err.value) == (
        f"{folder} belongs to another user (uid {NOBODY}), who could read the credentials Lithops writes "
        "there: remove it, or set TMPDIR (HOME for ~/.lithops) to a folder of your own"
    )


def test_file_or_dangling_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(PrivateDirError, match="is not a folder"):
        make_private_dir(str(tmp_path / "file"))
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(PrivateDirError, match="is a link to nothing"):
        make_private_dir(str(tmp_path / "dangling"))


def test_opening_lithops_storage_makes_its_folders_private(tmp_path: Path) -> None:
    """Importing lithops creates its temp folder 0755; opening the store (serial runner) closes it."""
    (tmp_path / "tmp").mkdir()
    (tmp_path / "home").mkdir()
    code = ("from functions.core.storage import open_lithops_storage; "
            "open_lithops_storage({'lithops': {'backend': 'localhost', 'storage': 'localhost'}})")
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), HOME=str(tmp_path / "home"))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert mode(tmp_path / "tmp" / f"lithops-{os.environ.get('USER', 'root')}") == 0o700
    assert mode(tmp_path / "home" / ".lithops") == 0o700


# -- a real run ------------------------------------------------------------------------------
def job_files(lithops_tmp: Path) -> list[Path]:
    """The job files now under ``lithops_tmp``; none when a folder vanished during the walk
    (Lithops replaces its package copy, ``lithops-src-*``, as an executor starts)."""
    try:
        return sorted(lithops_tmp.rglob("*-job.json"))
    except FileNotFoundError:
        return []


def wait_for_job_files(lithops_tmp: Path, snake: subprocess.Popen[str], log: Path) -> list[Path]:
    """The job files of the running fan-out (each lives while its job runs), once there are any."""
    deadline = time.monotonic() + 120
    while not (jobs := job_files(lithops_tmp)):
        assert snake.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no Lithops job file after 120 s"
        time.sleep(0.05)
    return jobs


@pytest.mark.e2e
@needs_root
def test_during_a_run_other_users_cannot_read_the_job_files(open_dir: Path) -> None:
    # Every function sleeps 2 s: with 2 workers the job, and its job file, lasts about 8 s.
    wd = make_workdir(open_dir / "run", plan__n_regions=4,
                      faults={"probability": 1, "modes": ["delay"], "delay_seconds": 2})
    (open_dir / "home").mkdir(mode=0o755)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(wd), "--cores", "2"]
    env = dict(os.environ, TMPDIR=str(wd / "tmp"), HOME=str(open_dir / "home"))
    lithops_tmp = wd / "tmp" / f"lithops-{os.environ.get('USER', 'root')}"
    log_path = open_dir / "run.log"
    with open(log_path, "w") as log:
        snake = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True, text=True)
        try:
            jobs = wait_for_job_files(lithops_tmp, snake, log_path)
            assert mode(lithops_tmp) == 0o700
            assert mode(open_dir / "home" / ".lithops") == 0o700
            job = jobs[0]
            assert '"storage_bucket"' in job.read_text()  # the storage config, as Lithops hands it on
            assert mode(job) & 0o004  # Lithops makes it world-readable: only the folder protects it
            assert not readable_by_nobody(job)
            # The test can fail: with the folder as Lithops makes it (0755), anyone reads the job file.
            lithops_tmp.chmod(0o755)
            try:
                assert readable_by_nobody(job)
            finally:
                lithops_tmp.chmod(0o700)
            assert snake.wait(120) == 0, log_path.read_text()[-3000:]
        finally:
            kill_everything(wd, snake)
    assert mode(lithops_tmp) == 0o700
