"""Workers whose software differs from the main's are refused with a sentence naming the versions
and the fix. Real engines with another ipyparallel (and, slow, another Python) are started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imgdist.connections import wait_for_workers
from imgdist.errors import VersionMismatchError
from imgdist.local_worker import WorkerEngine

from .conftest import start_plain_engine

pytestmark = pytest.mark.integration


def pip_target(python: str, folder, *requirements: str) -> None:
    """Install `requirements` for `python` into `folder`, or skip saying why not."""
    done = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(folder),
            *requirements,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"could not install {requirements} from the package index: {done.stderr.strip()[-300:]}"
        )


def start_engine(command_env: dict, controller, label: str, work_dir) -> WorkerEngine:
    saved = dict(os.environ)
    os.environ.update(command_env)
    try:
        return WorkerEngine.start(controller.engine_connection_file, label, work_dir=work_dir)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_another_ipyparallel_is_refused(bare_controller, tmp_path):
    """An engine running ipyparallel 8.8 registers, but is refused with both versions and the fix."""
    overlay = tmp_path / "ipp8"
    pip_target(sys.executable, overlay, "--no-deps", "ipyparallel==8.8.0", "entrypoints")
    engine = start_engine({"PYTHONPATH": str(overlay)}, bare_controller, "oldipp", tmp_path / "w")
    try:
        engine.wait_registered(60)
        with pytest.raises(VersionMismatchError) as info:
            wait_for_workers(bare_controller, [engine.name], timeout_s=20)
    finally:
        engine.stop()
    message = str(info.value)
    assert "has ipyparallel 8.8.0 (main: 9." in message
    assert "install Python 3.11, ipyparallel 9." in message
    assert "and start the worker again" in message


def other_python() -> str | None:
    """A working Python 3.12 interpreter (on PATH, or one pyenv keeps), if this machine has one."""
    pyenv = sorted(Path("/root/.pyenv/versions").glob("3.12*/bin/python3.12"))
    candidates = [shutil.which("python3.12"), *map(str, pyenv)]
    for candidate in filter(None, candidates):
        if (
            subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode
            == 0
        ):
            return candidate
    return None


@pytest.mark.slow
@pytest.mark.skipif(other_python() is None, reason="no working python3.12 on this machine")
def test_another_python_without_imgdist_is_refused(bare_controller, tmp_path):
    """A plain ipengine on Python 3.12 (ipyparallel installed, imgdist not) is refused, saying both."""
    python = other_python()
    overlay = tmp_path / "py312"
    pip_target(python, overlay, "ipyparallel==9.2.*")
    env = {**os.environ, "PYTHONPATH": str(overlay), "IMGDIST_WORKER_LABEL": "py312"}
    engine = start_plain_engine(
        python, bare_controller.engine_connection_file, tmp_path / "profile", env
    )
    try:
        with pytest.raises(VersionMismatchError) as info:
            wait_for_workers(bare_controller, [f"py312@{os.uname().nodename}"], timeout_s=90)
    finally:
        engine.terminate()
        engine.wait(20)
    message = str(info.value)
    assert "has Python 3.12" in message
    assert "no imgdist installed" in message
