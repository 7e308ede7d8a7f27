"""One run per output folder: a lock file created exclusively (atomic on local disks, NFS, SMB
and sshfs, where `flock` may not be shared between machines), taken over when stale."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Self

import psutil

from imgdist.errors import FolderBusyError
from imgdist.files import write_new

LOCK_NAME = ".imgdist-run.lock"


class FolderLock:
    """Marks folders as being written by this run, so a second run into them is refused.

    The lock is a file made with an atomic create-if-absent (a hard link, which network file
    systems honour where `flock` is not shared), holding who took it; it is removed when the run
    ends. A lock left by a run on this machine whose process is gone is stale and taken over;
    one from another machine is honoured until someone removes it.
    """

    def __init__(self, folders: Iterable[Path]) -> None:
        self.locks = list(dict.fromkeys(Path(folder).resolve() / LOCK_NAME for folder in folders))
        self.token = secrets.token_hex(8)
        self.held: list[Path] = []

    def __enter__(self) -> Self:
        try:
            for lock in self.locks:
                if self._take(lock):
                    self.held.append(lock)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for lock in self.held:
            if _lock_holder(lock).get("token") == self.token:
                lock.unlink(missing_ok=True)
        self.held = []

    def _take(self, lock: Path) -> bool:
        """Take `lock`; False when this process holds it already (a run inside a command)."""
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "process_start": _process_start(os.getpid()),
            "token": self.token,
        }
        for _attempt in range(5):
            if write_new(lock, json.dumps(me).encode()):
                return True
            holder = _lock_holder(lock)
            mine = (holder.get("host"), holder.get("pid"), holder.get("process_start"))
            if mine == (me["host"], me["pid"], me["process_start"]):
                return False
            if not _is_stale(holder):
                msg = (
                    f"{lock.parent} is being written by another imgdist run (pid "
                    f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                    f"{holder.get('started', '?')}); wait for it to end or give another output "
                    f"folder. If that run is gone (its machine crashed), delete {lock}."
                )
                raise FolderBusyError(msg)
            _remove_if_still(lock, holder)
        msg = f"could not take the lock {lock}: other runs keep taking it; try again."
        raise FolderBusyError(msg)


def _lock_holder(lock: Path) -> dict:
    try:
        holder = json.loads(lock.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {"corrupt": True}
    return holder if isinstance(holder, dict) else {"corrupt": True}


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _is_stale(holder: dict) -> bool:
    """A lock of a run on this machine whose process is gone (or is another process now)."""
    if not holder or holder.get("corrupt"):
        return True
    if holder.get("host") != socket.gethostname():
        return False
    started = _process_start(int(holder.get("pid", 0)))
    return started is None or started != holder.get("process_start")


def _remove_if_still(lock: Path, holder: dict) -> None:
    """Remove a stale lock, unless another run replaced it meanwhile (then it is put back)."""
    aside = lock.with_name(f"{lock.name}.{secrets.token_hex(4)}.stale")
    try:
        lock.rename(aside)
    except FileNotFoundError:
        return
    if _lock_holder(aside).get("token") != holder.get("token"):
        with contextlib.suppress(OSError):
            os.link(aside, lock)  # a fresh lock taken meanwhile: give it back
    aside.unlink(missing_ok=True)
