"""One run per output folder: a second run into it is refused with a sentence, stale locks of
dead runs are taken over, and the lock goes when the run ends."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from imgdist.errors import FolderBusyError
from imgdist.lock import LOCK_NAME, FolderLock


def try_lock(folder) -> subprocess.CompletedProcess:
    """Another process taking the lock on `folder`, as a second run would."""
    code = (
        "import sys; from imgdist.lock import FolderLock\n"
        "from imgdist.errors import FolderBusyError\n"
        f"try:\n    with FolderLock([{str(folder)!r}]):\n        pass\n"
        "except FolderBusyError as exc:\n    sys.exit(str(exc))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_second_run_on_the_folder_is_refused(tmp_path):
    """While one run holds the folder, another process is refused, naming the holder and the
    way out; once released, the folder can be taken again."""
    with FolderLock([tmp_path]):
        assert (tmp_path / LOCK_NAME).is_file()
        refused = try_lock(tmp_path)
        assert refused.returncode == 1
        assert f"{tmp_path} is being written by another imgdist run (pid " in refused.stderr
        assert f"on {socket.gethostname()}" in refused.stderr
        assert "wait for it to end or give another output folder" in refused.stderr
        assert f"delete {tmp_path / LOCK_NAME}" in refused.stderr
    assert not (tmp_path / LOCK_NAME).exists()  # released on exit
    assert try_lock(tmp_path).returncode == 0
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_of_a_dead_run_is_taken_over(tmp_path):
    """A run killed before it could remove its lock leaves it stale: the next run takes it."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = {
        "host": socket.gethostname(),
        "pid": int(dead.stdout),
        "process_start": 1.0,
        "token": "x",
    }
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    with FolderLock([tmp_path]) as lock:
        held = json.loads((tmp_path / LOCK_NAME).read_text())
        assert held["token"] == lock.token
    assert list(tmp_path.iterdir()) == []  # no lock and no leftover of the stale one


def test_a_lock_from_another_machine_is_honoured(tmp_path):
    """A lock taken on another machine (a shared disk) cannot be judged from here: refused."""
    other = {"host": "lab-pc7", "pid": 4242, "started": "2026-11-25 09:00:00", "token": "y"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    busy = r"\(pid 4242 on lab-pc7, since 2026-11-25 09:00:00\)"
    with pytest.raises(FolderBusyError, match=busy), FolderLock([tmp_path]):
        pass
    assert json.loads((tmp_path / LOCK_NAME).read_text()) == other  # left as it was


def test_a_run_inside_a_command_shares_the_commands_lock(tmp_path):
    """A run (distribute) inside a command that holds the folder is not refused by its own lock,
    and leaves the command's lock in place when it ends."""
    (tmp_path / "images").mkdir()
    with FolderLock([tmp_path]) as command:
        with FolderLock([tmp_path, tmp_path / "images"]) as run:
            assert run.held == [(tmp_path / "images").resolve() / LOCK_NAME]
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == command.token
