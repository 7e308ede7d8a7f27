"""A file that kills its worker: real workers with a real memory limit (a cgroup each), and an
image that needs more memory than that, which the kernel's out-of-memory killer answers by
SIGKILLing the engine. It must fail alone, named, after taking down at most `allowed_deaths`
workers, while every other image is processed once."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import cv2
import numpy as np
import pytest

from imgdist.cluster import Cluster
from imgdist.connections import resolve
from imgdist.distribution import distribute
from imgdist.portrait import make_copies

from .conftest import check_results, wait_until

MEMORY = Path("/sys/fs/cgroup/memory")  # cgroup v1, as on the project's machines
LIMIT_MB = 300  # a worker with a portrait peaks at ~130 MB, with the 49 Mpx poison at ~550 MB


def cgroups_usable() -> str:
    """'' when this process can give workers a memory limit, else why not."""
    if os.geteuid() != 0:
        return "memory cgroups need root (CI runs these tests as root)"
    if not (MEMORY / "memory.limit_in_bytes").exists():
        return f"no cgroup v1 memory controller at {MEMORY}"
    return ""


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(cgroups_usable()), reason=cgroups_usable() or "-"),
]


class LimitedWorkers:
    """`imgdist worker`s, each in a memory cgroup of its own (so the out-of-memory killer takes
    that worker's engine only); killed and their cgroups removed on exit."""

    def __init__(self, engine_file: Path, names: list[str]) -> None:
        self.engine_file, self.names = engine_file, names
        self.groups = [MEMORY / f"imgdist-test-{os.getpid()}-{name}" for name in names]
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> Self:
        try:
            for name, group in zip(self.names, self.groups, strict=True):
                group.mkdir()
                (group / "memory.limit_in_bytes").write_text(str(LIMIT_MB << 20))
                worker = [sys.executable, "-m", "imgdist", "worker", "--connection"]
                worker += [str(self.engine_file), "--name", name]
                # the shell joins the cgroup, then becomes the worker: its engine is born in it
                joined = f"echo $$ > {shlex.quote(str(group / 'cgroup.procs'))} && exec {shlex.join(worker)}"
                self.processes.append(
                    subprocess.Popen(
                        ["sh", "-c", joined],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for group in self.groups:
            if group.exists():
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        for group in self.groups:
            if group.exists():
                wait_until(
                    lambda group=group: not (group / "cgroup.procs").read_text(), timeout_s=10
                )
                group.rmdir()


@pytest.fixture
def controller(tmp_path) -> Iterator[Cluster]:
    """A controller of its own: the workers it loses do not come back."""
    cluster = Cluster.start_local(0, profile_dir=tmp_path / "profile", timeout_s=60)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def poisoned_inputs(tmp_path, portrait_path) -> tuple[list[Path], Path]:
    """200 portraits and, in their middle, a 7000x7000 PNG of one colour (160 KB on disk, 49 Mpx:
    under the pixel limit, over what a worker's memory holds once decoded and processed)."""
    good = make_copies(portrait_path, 200, tmp_path / "in")
    poison = tmp_path / "in" / "poison.png"
    cv2.imwrite(str(poison), np.full((7000, 7000, 3), 200, np.uint8))
    return [*good[:100], poison, *good[100:]], poison


@pytest.mark.parametrize("transport", ["compact", "path", "direct"])
def test_a_file_that_kills_its_worker_fails_alone(controller, poisoned_inputs, tmp_path, transport):
    """The poison takes down two of four workers (the cap) and then fails alone, named; the
    200 other images are processed once each; the summary names the lost workers."""
    inputs, poison = poisoned_inputs
    names = [f"limited{i}" for i in range(1, 5)]
    with LimitedWorkers(controller.engine_connection_file, names):
        controller.wait_for_engines(4, timeout_s=60)
        workers = resolve(controller, [f"{name}@{os.uname().nodename}" for name in names])
        started = time.monotonic()
        result = distribute(
            workers,
            inputs,
            out_dir=tmp_path / "out" / "images",
            manifest=tmp_path / "out" / "manifest.json",
            transport=transport,
            stall_timeout_s=60,
        )
        elapsed = time.monotonic() - started
    assert [source for source, _ in result.failed] == [poison]
    reason = result.failed[0][1]
    assert f"{poison}: 2 workers were lost while processing it (" in reason
    assert "so it is not tried again; the file may crash or hang the decoder" in reason
    assert len(result.lost_workers) == 2
    assert len(result.processed) == 200
    assert elapsed < 60
    check_results(tmp_path / "out", "--exact", "--expect-images", 200)
