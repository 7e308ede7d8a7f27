"""Nothing lost: engines SIGKILLed mid-run, all workers gone, the controller gone, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import psutil
import pytest

from imgdist.cluster import Cluster
from imgdist.distribution import distribute
from imgdist.errors import ParameterError, RunError
from imgdist.files import OutputPlan, read_manifest
from imgdist.image import threshold_and_label
from imgdist.portrait import make_copies
from imgdist.results import RunResult
from imgdist.schedules import BatchRun

from .conftest import as_written, check_results, kill_engine, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def four(local_cluster):
    """Four live workers, replacing any that an earlier test killed."""
    missing = 4 - len(local_cluster.engine_ids)
    if missing > 0:
        local_cluster.start_engines(missing)
    return local_cluster.workers()[:4]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, portrait_path):
    return make_copies(portrait_path, 400, tmp_path_factory.mktemp("inputs"))


class KillAt:
    """An on_progress callback that SIGKILLs one engine once `at` images are done."""

    def __init__(self, victims, at: int) -> None:
        self.victims, self.at, self.fired = victims, at, False

    def __call__(self, progress) -> None:
        if not self.fired and progress.done >= self.at:
            self.fired = True
            for victim in self.victims:
                kill_engine(victim.pid)


def assert_complete(result, inputs, out, manifest) -> None:
    entries = read_manifest(manifest)
    assert len(entries) == len(inputs)
    assert sorted(e.source.name for e in entries) == sorted(p.name for p in inputs)
    assert all(e.output.is_file() for e in entries)
    assert not list(out.glob(".*.part"))
    assert not list(out.glob(".imgdist-*"))
    for entry in entries[:: max(1, len(entries) // 12)]:  # a sample, pixel for pixel
        written = cv2.imread(str(entry.output))
        expected = threshold_and_label(cv2.imread(str(entry.source)), entry.worker)
        assert np.array_equal(written, as_written(expected)), entry


@pytest.mark.parametrize(
    ("transport", "schedule"),
    [
        ("path", "balanced"),
        ("encoded", "balanced"),
        ("pixels", "round-robin"),
        ("encoded", "round-robin"),
        ("direct", "balanced"),
    ],
)
def test_a_worker_killed_mid_run_loses_nothing(four, inputs, tmp_path, transport, schedule):
    """SIGKILL one of 4 engines mid-run: every image is still processed and the result says who died."""
    victim = four[1]
    killer = KillAt([victim], at=len(inputs) // 4)
    out = tmp_path / "out"
    result = distribute(
        four,
        inputs,
        out_dir=out,
        manifest=tmp_path / "manifest.json",
        transport=transport,
        schedule=schedule,
        on_progress=killer,
    )
    assert killer.fired
    assert result.ok, result.summary()
    assert result.lost_workers == [victim.name]
    assert result.redone
    assert "Workers lost during the run: " + victim.name in result.summary()
    assert_complete(result, inputs, out, tmp_path / "manifest.json")


@pytest.mark.parametrize(
    ("transport", "schedule"),
    [("path", "balanced"), ("compact", "balanced"), ("pixels", "round-robin")],
)
def test_a_dead_workers_batches_are_the_last_answers(four, inputs, tmp_path, transport, schedule):
    """An engine killed just before the run is still registered, so it is sent work; its batch
    fails only when the controller gives it up, after the other worker is done, and still goes
    out again (with claims, the dead worker never claims anything, so nothing is redone)."""
    alive, victim = four[0], four[1]
    kill_engine(victim.pid)
    some = inputs[:2]  # one batch each: the dead worker's is the only thing left in flight
    out = tmp_path / "out"
    result = distribute(
        [alive, victim],
        some,
        out_dir=out,
        manifest=tmp_path / "manifest.json",
        transport=transport,
        schedule=schedule,
    )
    assert result.ok, result.summary()
    assert result.lost_workers == [victim.name]
    assert len(result.redone) == (0 if transport == "path" else 1)
    assert {e.worker for e in result.processed} == {alive.name}
    assert_complete(result, some, out, tmp_path / "manifest.json")


def test_all_workers_gone_then_resume(four, local_cluster, inputs, tmp_path):
    """Every engine killed: a clear error, finished outputs kept; resume processes only the rest."""
    out, manifest = tmp_path / "out", tmp_path / "manifest.json"
    killer = KillAt(four, at=len(inputs) // 3)
    started = time.monotonic()
    with pytest.raises(
        RunError, match=r"every worker was lost \(.*\); \d+ images were finished and kept"
    ) as info:
        distribute(
            four, inputs, out_dir=out, manifest=manifest, transport="encoded", on_progress=killer
        )
    assert time.monotonic() - started < 60
    kept = info.value.result.processed
    assert 0 < len(kept) < len(inputs)
    assert len(read_manifest(manifest)) == len(kept)
    # one finished output is damaged in the meantime: resume must redo it too
    damaged = kept[0].output
    damaged.write_bytes(damaged.read_bytes()[:1000])
    local_cluster.start_engines(4 - len(local_cluster.engine_ids))
    again = distribute(
        local_cluster.workers()[:4], inputs, out_dir=out, manifest=manifest, resume=True
    )
    assert again.ok, again.summary()
    assert again.resumed == len(kept) - 1
    assert len(again.processed) == len(inputs)
    assert f"{len(kept) - 1} of them kept from the previous run" in again.summary()
    assert_complete(again, inputs, out, manifest)


def test_resume_needs_a_manifest(four, inputs):
    """resume without a manifest path says what to give."""
    with pytest.raises(ParameterError, match="resume needs the manifest of the run to resume"):
        distribute(four, inputs, resume=True)


def test_controller_gone_mid_run(tmp_path, portrait_path):
    """The controller (hub and scheduler processes) SIGKILLed mid-run: a clear error within seconds."""
    inputs = make_copies(portrait_path, 400, tmp_path / "in")
    doomed = Cluster.start_local(2, profile_dir=tmp_path / "profile", timeout_s=90)
    try:
        workers = doomed.workers()
        controller = psutil.Process(doomed.controller_pid)
        processes = [controller, *controller.children(recursive=True)]

        def kill_controller(progress, fired=[]):  # noqa: B006 - a one-shot flag
            if not fired and progress.done >= 40:
                fired.append(True)
                for process in processes:
                    process.send_signal(signal.SIGKILL)

        started = time.monotonic()
        with pytest.raises(
            RunError, match=r"the controller at 127.0.0.1:\d+ is gone; \d+ images were finished"
        ):
            distribute(
                workers,
                inputs,
                out_dir=tmp_path / "out",
                manifest=tmp_path / "manifest.json",
                transport="encoded",
                schedule="round-robin",
                on_progress=kill_controller,
            )
        assert time.monotonic() - started < 30
        assert len(read_manifest(tmp_path / "manifest.json")) >= 40
    finally:
        doomed.stop()


@pytest.mark.parametrize("transport", ["compact", "path", "direct"])
def test_a_worker_that_hangs_but_answers_heartbeats(
    local_cluster, four, inputs, tmp_path, transport
):
    """A worker whose engine is stuck (here: busy with another client's endless task, which
    keeps its heartbeat going) is given up after the stall timeout: its queued work is
    cancelled, it is interrupted, its images go to the others, and the run completes."""
    import ipyparallel as ipp

    stuck = four[2]
    other = ipp.Client(str(local_cluster.client_connection_file))
    try:
        endless = other[stuck.engine_id].apply_async(time.sleep, 600)
        time.sleep(0.5)  # the endless task is running before the run starts
        out = tmp_path / "out"
        started = time.monotonic()
        result = distribute(
            four,
            inputs[:120],
            out_dir=out,
            manifest=tmp_path / "manifest.json",
            transport=transport,
            stall_timeout_s=3,
        )
        elapsed = time.monotonic() - started
        assert result.ok, result.summary()
        assert result.hung_workers == [stuck.name]
        assert result.lost_workers == [stuck.name]
        assert stuck.name not in result.per_worker()
        assert f"Of them, stopped answering and given up: {stuck.name}" in result.summary()
        assert elapsed < 30
        assert_complete(result, inputs[:120], out, tmp_path / "manifest.json")
        # it was interrupted: the endless task ends with KeyboardInterrupt, the engine is free
        with pytest.raises(ipp.RemoteError, match="KeyboardInterrupt"):
            endless.get(timeout=30)
        assert local_cluster.submit(stuck, "identity").result(timeout=30).pid == stuck.pid
    finally:
        other.close()


@pytest.mark.slow  # ~40 s: 300 photos of 3 Mpx, written and processed twice
def test_a_main_killed_inside_a_claim_window_can_resume(
    local_cluster, four, tmp_path, portrait_path
):
    """The manifest is checkpointed as workers report images, inside a window of claims: a main
    killed half-way through (one window, nothing answered yet) leaves a manifest of what was
    done and a stale lock, and `--resume` keeps those and processes only the rest, each once."""
    big = cv2.resize(cv2.imread(str(portrait_path)), (1600, 1875))
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(300):
        cv2.imwrite(str(photos / f"p{index}.jpg"), big)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "imgdist", "run", "--connection"]
    command += [
        str(local_cluster.client_connection_file),
        "--inputs",
        str(photos),
        "--out",
        str(out),
    ]
    main = subprocess.Popen([*command, "--transport", "path"], stdout=subprocess.DEVNULL)
    try:
        manifest = out / "manifest.json"
        assert wait_until(
            lambda: manifest.is_file() and len(json.loads(manifest.read_text())) >= 20,
            timeout_s=120,
            interval_s=0.05,
        )
        main.kill()
        main.wait(10)
    finally:
        if main.poll() is None:
            main.kill()
    listed = len(json.loads(manifest.read_text()))
    assert 20 <= listed < 300  # checkpointed mid-window, not at its end
    assert (out / ".imgdist-run.lock").exists()  # left by the killed run: stale
    again = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr
    assert "300 images processed, 0 failed" in again.stdout
    kept = int(again.stdout.split(" of them kept from the previous run")[0].rsplit("(", 1)[1])
    assert kept >= listed
    check_results(out, "--exact", "--expect-images", 300)


def test_the_first_report_of_an_image_wins(local_cluster, four, inputs, tmp_path):
    """An image reported twice (say, by a worker given up that answers after all) keeps its
    first output and manifest entry; the summary says a second report came."""
    result = RunResult("path", "balanced")
    run = BatchRun(
        local_cluster,
        four,
        iter(inputs[:1]),
        OutputPlan(tmp_path, inputs[:1]),
        result,
        total=1,
        stall_timeout_s=10,
        max_pixels=10**7,
        on_progress=None,
        transport="path",
        schedule="balanced",
        batch_size=None,
    )
    (item,) = run.take(1)
    run.succeed(item, four[0].name)
    run.succeed(item, four[1].name)
    assert [entry.worker for entry in result.processed] == [four[0].name]
    assert result.duplicates == [(item.source, four[1].name)]
    assert "1 images were reported twice; the first report was kept" in result.summary()
