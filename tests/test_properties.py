"""Property tests (hypothesis) on a real cluster: any accepted image gives the same result on a
worker as locally, and in any batch exactly the good files are processed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imgdist.distribution import distribute
from imgdist.image import threshold_and_label

pytestmark = pytest.mark.integration
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def images(draw):
    """Any kind imgdist accepts: 1, 3 or 4 channels, 8 or 16 bits, 1..120 pixels a side."""
    channels = draw(st.sampled_from([1, 3, 4]))
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    height, width = draw(st.integers(1, 120)), draw(st.integers(1, 120))
    shape = (height, width) if channels == 1 else (height, width, channels)
    return draw(arrays(dtype, shape, elements=st.integers(0, np.iinfo(dtype).max)))


@SETTINGS
@given(image=images(), transport=st.sampled_from(["pixels", "encoded", "compact", "path"]))
def test_worker_result_equals_local(two_workers, image, transport):
    """For a random image of any accepted kind, the worker's output equals the same work done here."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "random.png"
        assert cv2.imwrite(str(source), image)
        result = distribute(
            two_workers, [source], out_dir=Path(folder) / "out", transport=transport
        )
        (entry,) = result.processed
        expected = threshold_and_label(cv2.imread(str(source)), entry.worker)
        assert np.array_equal(cv2.imread(str(entry.output), cv2.IMREAD_UNCHANGED), expected)


BAD_KINDS = {
    "empty": b"",
    "text": b"plain text pretending to be an image",
    "truncated": None,  # the first half of the portrait
}


@SETTINGS
@given(
    batch=st.lists(st.sampled_from(["good", *BAD_KINDS]), min_size=1, max_size=12),
    transport=st.sampled_from(["pixels", "encoded", "compact", "path"]),
    schedule=st.sampled_from(["balanced", "round-robin"]),
)
def test_exactly_the_good_files_are_processed(
    two_workers, portrait_path, batch, transport, schedule
):
    """In a random batch with bad files mixed in, the good ones are processed and each bad one is
    reported exactly once."""
    portrait = portrait_path.read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        sources = []
        for index, kind in enumerate(batch):
            path = Path(folder) / f"{kind}_{index}.jpg"
            data = portrait if kind == "good" else BAD_KINDS[kind]
            path.write_bytes(portrait[: len(portrait) // 2] if data is None else data)
            sources.append(path)
        result = distribute(
            two_workers,
            sources,
            out_dir=Path(folder) / "out",
            transport=transport,
            schedule=schedule,
        )
        good = [p for p, kind in zip(sources, batch, strict=True) if kind == "good"]
        bad = [p for p, kind in zip(sources, batch, strict=True) if kind != "good"]
        assert [e.source for e in result.processed] == good
        assert sorted(source for source, _ in result.failed) == sorted(bad)
        assert all(e.output.is_file() for e in result.processed)
