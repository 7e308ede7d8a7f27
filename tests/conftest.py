"""Shared fixtures: a real local cluster per module, a real controller with no engines, paths."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from imgdist.cluster import Cluster
from imgdist.connections import resolve
from imgdist.portrait import sample_portrait

REPO = Path(__file__).resolve().parent.parent
# the project's shared results checker (../shared/tools), the way results are judged
CHECKER = REPO.parent / "shared" / "tools" / "check_results.py"
HOST = socket.gethostname()
WORKER_NAMES = [f"worker{i}@{HOST}" for i in range(1, 5)]  # the local cluster's engines

# The tests' clusters live under a private IPython dir, so they never touch the user's profiles.
os.environ.setdefault(
    "IPYTHONDIR",
    str(Path(os.environ.get("TMPDIR", "/tmp")) / f"imgdist-tests-ipython-{os.getpid()}"),
)


@pytest.fixture(scope="session")
def portrait_path() -> Path:
    """The bundled portrait (matplotlib's grace_hopper.jpg)."""
    return sample_portrait()


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real 4-engine local cluster, started once per module and always stopped."""
    cluster = Cluster.start_local(4, profile_dir=tmp_path_factory.mktemp("profile"), timeout_s=90)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def workers(local_cluster: Cluster) -> list:
    """The local cluster's four workers, found by name, in order."""
    return resolve(local_cluster, WORKER_NAMES)


@pytest.fixture(scope="module")
def two_workers(local_cluster: Cluster) -> list:
    """The local cluster's first two workers."""
    return local_cluster.workers()[:2]


@pytest.fixture(scope="module")
def bare_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real controller with no engines, for workers that tests start themselves."""
    cluster = Cluster.start_local(
        0, profile_dir=tmp_path_factory.mktemp("bare-profile"), timeout_s=60
    )
    try:
        yield cluster
    finally:
        cluster.stop()


def wait_until(condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def stop_then_left(stop: Callable[[], object], started: list[psutil.Process]) -> list[int]:
    """Call `stop`, then the pids of `started` still running when it returned; every one of
    them is killed afterwards, whatever happened (a test's clean-up)."""
    try:
        stop()
        return [p.pid for p in started if _running(p)]
    finally:
        for process in started:
            with contextlib.suppress(psutil.Error):
                process.kill()


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_engine(pid: int) -> None:
    """SIGKILL an engine process (its own pid, not its nanny's)."""
    os.kill(pid, signal.SIGKILL)


def start_plain_engine(
    python: str, engine_file: Path, profile: Path, env: dict
) -> subprocess.Popen:
    """A plain `ipengine --file` (not imgdist's worker) with its own profile folder; its output
    goes to `engine.log` there."""
    profile.mkdir(parents=True, exist_ok=True)  # ipengine exits if its profile folder is missing
    with (profile / "engine.log").open("wb") as log:
        return subprocess.Popen(
            [
                python,
                "-m",
                "ipyparallel.engine",
                f"--file={engine_file}",
                f"--profile-dir={profile}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def check_results(folder: Path, *options: object, python: str = sys.executable) -> str:
    """Run the shared results checker on `folder` with `options` (e.g. "--exact"); the test
    fails when it fails, and when it is missing (it is never silently skipped)."""
    if not CHECKER.is_file():
        pytest.fail(
            f"the results checker {CHECKER} is missing: these tests judge results with it; "
            "put the shared tools folder beside the repository."
        )
    done = subprocess.run(
        [python, str(CHECKER), str(folder), *map(str, options)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def as_written(pixels, suffix: str = ".jpg"):
    """`pixels` as they read back after being encoded as `suffix`: what an output file holds."""
    import cv2

    return cv2.imdecode(cv2.imencode(suffix, pixels)[1], cv2.IMREAD_COLOR)


def read_line(process: subprocess.Popen, *, timeout_s: float) -> str:
    """The next line of `process`'s stdout, failing after `timeout_s`."""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=timeout_s), f"no output within {timeout_s} s"
    return process.stdout.readline()
