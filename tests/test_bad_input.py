"""Bad input on a real cluster: each kind of image file has a defined result or a clear message,
one bad file fails only itself, and no input is ever written over."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imgdist.connections import resolve
from imgdist.distribution import distribute
from imgdist.errors import WorkerNameError
from imgdist.image import threshold_and_label

from .conftest import HOST

pytestmark = pytest.mark.integration


def write_png(path, pixels) -> None:
    assert cv2.imwrite(str(path), pixels)


@pytest.fixture
def zoo(tmp_path, portrait_path):
    """One file of every kind the issue names, good and bad."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    data = portrait_path.read_bytes()
    rng = np.random.default_rng(1)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.jpg").write_text("this is a text file, not a JPEG")
    (folder / "folder.jpg").mkdir()
    write_png(folder / "gray.png", rng.integers(0, 256, (60, 80), dtype=np.uint8))
    write_png(folder / "rgba.png", rng.integers(0, 256, (60, 80, 4), dtype=np.uint8))
    write_png(folder / "deep.png", rng.integers(0, 65536, (60, 80, 3), dtype=np.uint16))
    write_png(folder / "tiny.png", np.full((1, 1, 3), 200, np.uint8))
    write_png(folder / "huge.png", np.zeros((600, 800, 3), np.uint8))  # over the limit set below
    (folder / "good.jpg").write_bytes(data)
    return folder


EXPECTED_FAILURES = {
    "empty.jpg": "the file is empty (0 bytes)",
    "truncated.jpg": "no end-of-image marker: the file is truncated",
    "text.jpg": "bytes that OpenCV cannot decode as an image",
    "folder.jpg": "is a folder, expected an image file",
    "missing.jpg": "no such file; check the path",
    "huge.png": "800x600 = 480,000 pixels is over the limit of 400,000",
}


@pytest.mark.parametrize("transport", ["pixels", "encoded", "compact", "path"])
def test_every_kind_of_file(two_workers, zoo, tmp_path, transport):
    """Good kinds decode to 8-bit BGR and are processed; bad ones fail alone, once, with their reason."""
    inputs = [*sorted(zoo.iterdir()), zoo / "missing.jpg"]
    out = tmp_path / f"out-{transport}"
    result = distribute(two_workers, inputs, out_dir=out, transport=transport, max_pixels=400_000)
    failed = {source.name: reason for source, reason in result.failed}
    assert sorted(failed) == sorted(EXPECTED_FAILURES)
    assert len(result.failed) == len(EXPECTED_FAILURES)
    for name, reason in EXPECTED_FAILURES.items():
        assert reason in failed[name], (name, failed[name])
    processed = {e.source.name: e for e in result.processed}
    assert sorted(processed) == ["deep.png", "good.jpg", "gray.png", "rgba.png", "tiny.png"]
    for name, entry in processed.items():
        source = cv2.imread(str(zoo / name))  # IMREAD_COLOR: the defined result for every kind
        written = cv2.imread(str(entry.output), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint8
        assert written.shape == source.shape
        if entry.output.suffix == ".png":  # lossless: exact
            assert np.array_equal(written, threshold_and_label(source, entry.worker)), name
    assert not result.ok


def test_inputs_are_never_written_over(two_workers, tmp_path, portrait_path):
    """An input named like another input's output keeps its bytes; outputs get distinct names."""
    folder = tmp_path / "in"
    folder.mkdir()
    data = portrait_path.read_bytes()
    for name in ("a.jpg", "a_processed.jpg"):
        (folder / name).write_bytes(data)
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.jpg").write_bytes(data)
    inputs = [folder / "a.jpg", folder / "a_processed.jpg", other / "a.jpg"]
    result = distribute(two_workers, inputs, transport="encoded")  # outputs beside their sources
    assert result.ok
    assert (folder / "a_processed.jpg").read_bytes() == data  # the input is untouched
    outputs = [e.output for e in result.processed]
    assert len(set(outputs)) == 3
    assert not set(outputs) & {p.resolve() for p in inputs}


@pytest.mark.parametrize(
    "name", ["..jpg", " spaced name .jpg", "ünïcødé.jpg", "new\nline.jpg", "-rf.jpg"]
)
def test_odd_file_names_stay_inside_the_output_folder(two_workers, tmp_path, portrait_path, name):
    """Whatever a file is called, its output lands in the output folder and nowhere else."""
    source = tmp_path / "in" / name
    source.parent.mkdir()
    source.write_bytes(portrait_path.read_bytes())
    out = tmp_path / "out"
    for transport in ("encoded", "path"):
        result = distribute(two_workers, [source], out_dir=out, transport=transport)
        assert result.ok, result.summary()
        (entry,) = result.processed
        assert entry.output.parent == out.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_more_workers_than_engines(local_cluster):
    """Naming more workers than there are engines says how many there are."""
    names = [f"w{i}@{HOST}" for i in range(9)]
    with pytest.raises(
        WorkerNameError, match=r"9 workers named but only 4 engines are running \(worker1@"
    ):
        resolve(local_cluster, names)
