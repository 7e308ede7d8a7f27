"""Distributing on a real local cluster of 4 engines: names, pixels, schedules, transports."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imgdist.connections import Connections, resolve
from imgdist.distribution import distribute
from imgdist.errors import ParameterError, WorkerNameError
from imgdist.files import read_manifest
from imgdist.floor import FLOOR, floor_run
from imgdist.image import threshold_and_label
from imgdist.portrait import make_copies
from imgdist.transports import TRANSPORTS

from .conftest import WORKER_NAMES, as_written

pytestmark = pytest.mark.integration
NAMES = WORKER_NAMES


@pytest.fixture
def copies(tmp_path, portrait_path):
    return make_copies(portrait_path, 32, tmp_path / "images")


def test_local_engines_are_named_worker1_to_4(local_cluster):
    """A local cluster's engines are worker1@host ... worker4@host, in engine-id order."""
    assert [w.name for w in local_cluster.workers()] == NAMES


def test_engine_pixels_equal_local_processing(workers, portrait_path):
    """An engine's result equals threshold + putText with its name done here, pixel for pixel."""
    pixels = cv2.imread(str(portrait_path))
    worker = workers[2]
    future = worker.cluster.submit(
        worker,
        "process_batch",
        "pixels",
        [("p.jpg", str(pixels.dtype), pixels.shape)],
        pixels.tobytes(),
    )
    name, errors, metas, payload = future.get(timeout=30)
    assert (name, errors) == (worker.name, {})
    dtype, shape = metas[0]
    out = np.frombuffer(payload, dtype=dtype).reshape(shape)
    assert np.array_equal(out, threshold_and_label(pixels, worker.name))


def test_four_workers_round_robin_order(workers, copies, tmp_path):
    """The seed flow on 4 workers: image i is processed by worker i mod 4; the manifest says so."""
    result = distribute(
        workers,
        copies,
        out_dir=tmp_path / "images",
        manifest=tmp_path / "manifest.json",
        transport="pixels",
        schedule="round-robin",
    )
    assert result.ok
    assert [e.worker for e in result.processed] == [NAMES[i % 4] for i in range(32)]
    manifest = read_manifest(tmp_path / "manifest.json")
    assert [e.worker for e in manifest] == [NAMES[i % 4] for i in range(32)]
    assert [e.output.name for e in manifest] == [
        f"grace_hopper_d_{i}_processed.jpg" for i in range(32)
    ]
    rows = (tmp_path / "manifest.json").read_text()
    assert '"source": "images/grace_hopper_d_0.jpg"' in rows


def expected_file(source, worker, suffix=".jpg"):
    return as_written(threshold_and_label(cv2.imread(str(source)), worker), suffix)


@pytest.mark.parametrize("transport", [name for name in TRANSPORTS if name != "auto"])
@pytest.mark.parametrize("schedule", ["round-robin", "balanced"])
def test_every_mode_gives_identical_outputs(workers, copies, tmp_path, transport, schedule):
    """Each transport and schedule writes, for every image, exactly threshold+label(worker) encoded."""
    result = distribute(
        workers[:2], copies[:8], out_dir=tmp_path / "out", transport=transport, schedule=schedule
    )
    assert result.ok
    assert len(result.processed) == 8
    for entry in result.processed:
        written = cv2.imread(str(entry.output))
        assert np.array_equal(written, expected_file(entry.source, entry.worker))
    assert {e.worker for e in result.processed} <= set(NAMES[:2])


@pytest.mark.parametrize(
    ("transport", "schedule"),
    [
        ("compact", "balanced"),
        ("pixels", "round-robin"),
        ("path", "balanced"),
        ("direct", "balanced"),
    ],
)
def test_the_timeline_holds_every_image(workers, copies, tmp_path, transport, schedule):
    """Every schedule records who worked when: spans cover each processed image once, on the
    workers that did them, inside the run."""
    result = distribute(
        workers, copies, out_dir=tmp_path / "out", transport=transport, schedule=schedule
    )
    assert result.ok
    assert sum(span.images for span in result.timeline) == 32
    per_worker = {}
    for span in result.timeline:
        per_worker[span.worker] = per_worker.get(span.worker, 0) + span.images
        assert 0 <= span.start_s <= span.end_s <= result.elapsed_s + 0.01
    assert per_worker == result.per_worker()


def test_balanced_uses_every_worker(workers, copies, tmp_path):
    """The balanced schedule shares 32 images among all 4 workers."""
    result = distribute(workers, copies, out_dir=tmp_path / "out")
    assert result.ok
    assert set(result.per_worker()) == set(NAMES)
    assert sum(result.per_worker().values()) == 32


def test_outputs_beside_sources_by_default(workers, copies):
    """Without out_dir, as in the Livebook, `<name>_processed<ext>` is written beside its source."""
    result = distribute(workers[:1], copies[:2])
    assert [p.name for p in result.outputs] == [
        "grace_hopper_d_0_processed.jpg",
        "grace_hopper_d_1_processed.jpg",
    ]
    assert all(p.parent == copies[0].parent.resolve() for p in result.outputs)


def test_unknown_worker_lists_existing_names(local_cluster):
    """A name no engine has is refused with the names that exist."""
    with pytest.raises(WorkerNameError) as info:
        resolve(local_cluster, ["nobody@nowhere"])
    message = str(info.value)
    assert "no engine is named 'nobody@nowhere'; the engines are:" in message
    assert all(name in message for name in NAMES)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (["", "x@y"], r"worker 1 is empty; type a worker name such as 'worker1@host'"),
        (["   "], r"worker 1 is empty"),
        (["worker 1@h"], r"worker 1 is 'worker 1@h'; a worker name is 'label@host' with no spaces"),
        (["nohost"], r"worker 1 is 'nohost'; a worker name is 'label@host'"),
        (["a@h", "a@h"], r"worker 2 repeats 'a@h' \(also worker 1\)"),
    ],
)
def test_malformed_names(local_cluster, typed, message):
    """Empty, spaced, host-less and repeated names each get their own message."""
    with pytest.raises(WorkerNameError, match=message):
        resolve(local_cluster, typed)


def test_connect_and_disconnect(local_cluster):
    """The connected list grows on connect and shrinks on disconnect, like Node.list(:connected)."""
    connections = Connections(local_cluster)
    assert connections.names() == []
    assert [w.name for w in connections.connect(NAMES[:1])] == NAMES[:1]
    connections.connect(NAMES)
    assert connections.names() == NAMES
    connections.disconnect([f"  {NAMES[0]} "])
    assert connections.names() == NAMES[1:]


def test_parameter_errors(workers, copies):
    """Unknown transport or schedule, or no workers, are refused with the choices."""
    with pytest.raises(
        ParameterError,
        match=r"transport .carrier-pigeon. is unknown; choose one of auto, pixels, encoded, compact, path, direct",
    ):
        distribute(workers, copies, transport="carrier-pigeon")
    with pytest.raises(
        ParameterError, match=r"schedule 'random' is unknown; choose one of round-robin, balanced"
    ):
        distribute(workers, copies, schedule="random")
    with pytest.raises(ParameterError, match="no workers given"):
        distribute([], copies)


def test_auto_transport_uses_the_shared_disk(workers, copies, tmp_path):
    """On one machine the default transport is `path`: engines see the main's files."""
    result = distribute(workers[:2], copies[:4], out_dir=tmp_path / "out")
    assert result.transport == "path"
    assert result.schedule == "balanced"
    assert not list((tmp_path / "out").glob(".imgdist-*"))


def test_streamed_inputs_are_processed_in_order(workers, copies, tmp_path):
    """A generator of inputs (length unknown) is consumed lazily and the manifest keeps input order."""
    for transport in ("encoded", "path"):
        result = distribute(
            workers, (p for p in copies), out_dir=tmp_path / transport, transport=transport
        )
        assert [e.source for e in result.processed] == copies
        assert len(set(result.per_worker())) >= 2


def test_the_floor_run_writes_every_output(two_workers, copies, tmp_path):
    """The main-cost floor (`imgdist.floor`) is a real job, not a stand-in: every input's output
    is written under its name, thresholded and labelled by one of the workers."""
    assert floor_run(two_workers[0].cluster, two_workers, copies, tmp_path / "floor") == {
        FLOOR: len(copies)
    }
    source = cv2.imread(str(copies[0]))
    expected = [as_written(threshold_and_label(source, w.name)) for w in two_workers]
    for copy in copies:
        out = cv2.imread(str(tmp_path / "floor" / copy.name))
        assert any(np.array_equal(out, e) for e in expected), copy.name
    assert sorted(p.name for p in (tmp_path / "floor").iterdir()) == sorted(c.name for c in copies)
