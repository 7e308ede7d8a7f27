"""Shared disks as a lab sets them up: worker hosts (network namespaces) that mount the main's
folder over sshfs at the same path, each in its own mount namespace, `imgdist worker`s started
in another folder, and `imgdist run --local 0` on the main. Every image is processed exactly
once (the results checker with --exact), whatever route each worker gets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgdist.portrait import make_copies, sample_portrait

from .conftest import check_results, wait_until
from .netns import namespaces_usable
from .sshfs_lab import PYTHON, SharedDiskLab, binaries_missing

REASON = namespaces_usable() or binaries_missing()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.netns,
    pytest.mark.skipif(bool(REASON), reason=REASON or "-"),
]
WORKERS = ["h1", "h2"]
RUN = [PYTHON, "-m", "imgdist", "run"]
WORKER = [PYTHON, "-m", "imgdist", "worker"]
NAMES = ",".join(f"worker{i}@{host}host" for i, host in enumerate(WORKERS, start=1))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The main (sshd on its address) and two worker hosts that mount its share."""
    with SharedDiskLab(WORKERS, parent=tmp_path_factory.mktemp("disk")) as running:
        yield running


def start_workers(lab: SharedDiskLab, engine_file: Path, *, unmounted: tuple[str, ...] = ()):
    """`imgdist worker`s named worker<i>@<host>host, started in / (not the main's folder);
    hosts in `unmounted` do not mount the share (and cannot see the main's copy of it)."""
    return {
        host: lab.popen(
            host,
            [*WORKER, "--connection", str(engine_file), "--name", f"worker{i}", "--timeout", "60"],
            mount=host not in unmounted,
            hide=(lab.share,) if host in unmounted else (),
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, host in enumerate(WORKERS, start=1)
    }


def run_main(lab: SharedDiskLab, cwd: Path, *args: str) -> subprocess.Popen:
    """`imgdist run --local 0` on the main's address, in `cwd`, waiting for the two workers."""
    return lab.net.popen(
        "main",
        [*RUN, "--local", "0", "--ip", lab.address, "--workers", NAMES, "--timeout", "90", *args],
        hostname="mainhost",
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def engine_file_of(main: subprocess.Popen, timeout_s: float = 120) -> Path:
    """The engine connection file the main prints (it waits for workers to join). The wait is
    bounded: a main that has not said it by `timeout_s` is killed, which ends its output."""
    timer = threading.Timer(timeout_s, os.killpg, (main.pid, signal.SIGKILL))
    timer.start()
    try:
        for line in main.stdout:
            if "Engine connection file:" in line:
                return Path(line.split("Engine connection file:", 1)[1].strip())
    finally:
        timer.cancel()
    pytest.fail("the main printed no engine connection file")
    return Path()


@contextlib.contextmanager
def job(lab: SharedDiskLab, cwd: Path, *args: str, unmounted: tuple[str, ...] = ()):
    """The main (`run_main`) and its two workers; the workers and, if it is still running, the
    main are stopped however the block ends."""
    main = run_main(lab, cwd, *args)
    workers: dict = {}
    try:
        workers = start_workers(lab, engine_file_of(main), unmounted=unmounted)
        yield main, workers
    finally:
        stop(workers)
        if main.poll() is None:
            os.killpg(main.pid, signal.SIGTERM)
            main.wait(30)


def finish(main: subprocess.Popen, timeout_s: float = 240) -> str:
    output, _ = main.communicate(timeout=timeout_s)
    assert main.returncode == 0, output
    return output


def stop(workers: dict) -> None:
    for process in workers.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def test_relative_inputs_from_workers_started_elsewhere(lab):
    """`--inputs photos` (relative, on the share) with workers started in /: both workers take
    the path route, and each of 200 images is processed exactly once."""
    make_copies(sample_portrait(), 200, lab.share / "rel" / "photos")
    with job(lab, lab.share / "rel", "--inputs", "photos", "--out", "out") as (main, _):
        output = finish(main)
    assert "200 images processed, 0 failed" in output
    assert "(path transport, balanced schedule)" in output
    check_results(
        lab.share / "rel" / "out", "--exact", "--expect-images", 200, "--expect-workers", 2
    )


def test_inputs_private_to_the_main_with_outputs_on_the_share(lab):
    """Inputs only the main can read, outputs on the share: the check sees that the workers
    cannot read the inputs, so their bytes travel (direct), and every image is processed once."""
    make_copies(sample_portrait(), 40, lab.private / "photos")
    out = lab.share / "private-out"
    with job(lab, lab.base, "--inputs", str(lab.private / "photos"), "--out", str(out)) as (
        main,
        _,
    ):
        output = finish(main)
    assert "40 images processed, 0 failed" in output
    assert "(direct transport, balanced schedule)" in output
    assert f"worker1@h1host: direct ({lab.private / 'photos'}" in output  # the route, and why
    assert "cannot be read here (No such file or directory)" in output
    check_results(out, "--exact", "--expect-images", 40, "--expect-workers", 2)


def test_a_mixed_cluster_gives_each_worker_its_route(lab):
    """One worker mounts the share, one does not: the first gets names (path), the second the
    bytes (direct), in the same run; the summary says which and why; each image once."""
    make_copies(sample_portrait(), 60, lab.share / "mixed" / "photos")
    out = lab.share / "mixed" / "out"
    with job(lab, lab.share / "mixed", "--inputs", "photos", "--out", "out", unmounted=("h2",)) as (
        main,
        _,
    ):
        output = finish(main)
    assert "60 images processed, 0 failed" in output
    assert "(mixed transport, balanced schedule)" in output
    assert "Routes: worker1@h1host: path; worker2@h2host: direct (" in output
    manifest = json.loads((out / "manifest.json").read_text())
    assert {row["worker"] for row in manifest} == {"worker1@h1host", "worker2@h2host"}
    check_results(out, "--exact", "--expect-images", 60, "--expect-workers", 2)


@pytest.mark.slow  # 30 s: writing and processing 36 Mpx photos
def test_big_images_with_a_short_stall_timeout_finish(lab):
    """Twelve 36 Mpx photos on two workers with a 2 s stall timeout: each claimed and finished
    image is progress, so busy workers are never taken for stalled ones."""
    photos = lab.share / "big" / "photos"
    photos.mkdir(parents=True)
    ramp = np.tile(np.linspace(0, 255, 6000, dtype=np.uint8), (6000, 1))
    big = cv2.merge([ramp, ramp.T.copy(), np.full_like(ramp, 128)])
    for index in range(12):
        cv2.imwrite(str(photos / f"IMG_{index}.jpg"), np.roll(big, index * 50, axis=1))
    with job(
        lab, lab.share / "big", "--inputs", "photos", "--out", "out", "--stall-timeout", "2"
    ) as (main, _):
        output = finish(main, timeout_s=300)
    assert "12 images processed, 0 failed" in output
    assert "stopped answering" not in output
    check_results(lab.share / "big" / "out", "--exact", "--expect-images", 12)


def test_killing_a_worker_mid_run_loses_nothing(lab):
    """A worker killed while the run is under way: what it claimed and never finished goes to
    the other worker; every one of 600 images is processed exactly once."""
    make_copies(sample_portrait(), 600, lab.share / "kill" / "photos")
    out = lab.share / "kill" / "out"
    with job(lab, lab.share / "kill", "--inputs", "photos", "--out", "out") as (main, workers):
        images = out / "images"
        assert wait_until(
            lambda: images.is_dir() and len(list(images.glob("*_processed.jpg"))) >= 100,
            timeout_s=120,
            interval_s=0.05,
        )
        os.killpg(workers["h2"].pid, signal.SIGKILL)  # the worker and its engine, at once
        output = finish(main)
    assert "600 images processed, 0 failed" in output
    assert "Workers lost during the run: worker2@h2host" in output
    check_results(out, "--exact", "--expect-images", 600)
