"""Starting a worker on this machine: an ipyparallel engine, named `label@host`, in the background."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from imgdist.cluster.connection import connection_file
from imgdist.engine import LABEL_ENV
from imgdist.errors import NoEnginesError
from imgdist.names import check_label, worker_name
from imgdist.processes import end, with_descendants

_REGISTERED = re.compile(r"Completed registration with id (\d+)")
DEFAULT_REGISTER_TIMEOUT_S = 30.0
NANNY_EXIT_S = 2.0  # its nanny's time to tell the controller, once the engine stopped


@dataclass(frozen=True)
class WorkerStatus:
    """What a worker engine is doing: starting, registered (with its engine id), or exited."""

    name: str
    state: str
    pid: int
    engine_id: int | None
    detail: str

    def __str__(self) -> str:
        if self.state == "registered":
            return f"{self.name}: registered as engine {self.engine_id} (pid {self.pid})"
        return f"{self.name}: {self.state} (pid {self.pid}){' — ' + self.detail if self.detail else ''}"


class WorkerEngine:
    """An `ipengine` process started here, whose log tells its state."""

    def __init__(self, process: subprocess.Popen, name: str, work_dir: Path) -> None:
        self.process = process
        self.name = name
        self.work_dir = work_dir
        self.log_path = work_dir / "engine.log"
        self.stop_requested = False
        self.owns_work_dir = False

    @classmethod
    def start(
        cls,
        connection: str | Path,
        label: str,
        *,
        work_dir: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> WorkerEngine:
        """Start an engine for the controller in `connection` (a path, or the file's JSON text)."""
        name = worker_name(label)
        # mkdtemp: a private folder (0700) with a name nobody can make beforehand
        work = (
            Path(work_dir)
            if work_dir
            else Path(tempfile.mkdtemp(prefix=f"imgdist-{check_label(label)}-"))
        )
        (work / "profile").mkdir(
            parents=True, exist_ok=True
        )  # ipengine exits if its profile dir is missing
        conn = connection_file(connection, work)
        env = dict(
            os.environ, **{LABEL_ENV: check_label(label), "IMGDIST_STARTER_PID": str(os.getpid())}
        )
        command = [
            sys.executable,
            "-m",
            "imgdist.engine_main",  # ipengine, stopping when this process dies
            f"--file={conn}",
            f"--profile-dir={work / 'profile'}",
            *(extra_args or []),
        ]
        with (work / "engine.log").open("ab") as log:
            process = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        engine = cls(process, name, work)
        engine.owns_work_dir = not work_dir
        # The engine lives in its own session (a signal to its group reaches it, not this
        # process; its nanny has a session of its own); stop it when this process ends, so a
        # closed notebook leaves no engine behind, and remove the folder made for it (it may
        # hold a pasted connection file, with the cluster's key).
        atexit.register(engine.close)
        return engine

    def close(self) -> None:
        """Stop the engine and remove the folder made for it (its log goes with it)."""
        self.stop()
        if self.owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the engine's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status(self) -> WorkerStatus:
        """The engine's state now, read from its process and log."""
        code = self.process.poll()
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        match = _REGISTERED.search(log)
        engine_id = int(match.group(1)) if match else None
        if code is not None:
            return WorkerStatus(
                self.name, f"exited with code {code}", self.process.pid, engine_id, self.log_tail(3)
            )
        if match:
            return WorkerStatus(self.name, "registered", self.process.pid, engine_id, "")
        return WorkerStatus(self.name, "starting", self.process.pid, None, self.log_tail(1))

    def wait_registered(self, timeout_s: float = DEFAULT_REGISTER_TIMEOUT_S) -> WorkerStatus:
        """Wait until the engine registers with the controller; a clear error if it exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status()
            if status.state == "registered":
                return status
            if status.state.startswith("exited"):
                msg = f"worker {self.name} stopped before registering ({status.state}); its log ends:\n{status.detail}"
                raise NoEnginesError(msg)
            time.sleep(0.1)
        self.stop()
        msg = (
            f"worker {self.name} did not register within {timeout_s:g} s; the controller is not reachable "
            "from here (address and ports in the connection file, firewall), it is gone, the key in the "
            "connection file is wrong (copy the file again), or its ipyparallel version differs from this "
            f"machine's. Log:\n{self.log_tail(3)}"
        )
        raise NoEnginesError(msg)

    def terminate(self) -> None:
        """Ask the engine and its nanny to stop, without waiting (safe in a signal handler)."""
        self.stop_requested = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the engine; kill it if it does not stop within `timeout_s`. Its nanny (in a
        session of its own) tells the controller and exits; one still running `NANNY_EXIT_S`
        later (the controller gone, or stuck for good) is killed."""
        if self.process.poll() is not None:
            return
        below = with_descendants(self.process.pid)[1:]  # the nanny (none if it just ended)
        self.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout_s)
        end(below, grace_s=NANNY_EXIT_S, timeout_s=timeout_s)

    def wait(self) -> int:
        """Block until the engine exits; its exit code."""
        return self.process.wait()
