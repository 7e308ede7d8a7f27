"""The pure image operation and the wire form."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import zstandard

from imgdist.image import (
    Wire,
    from_wire,
    pack_mostly_binary,
    process_image,
    threshold_and_label,
    to_wire,
    unpack_mostly_binary,
)


def reference(image: np.ndarray, label: str) -> np.ndarray:
    _, out = cv2.threshold(image, 127, 255, cv2.THRESH_BINARY)
    out = np.ascontiguousarray(out)
    cv2.putText(out, label, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    return out


@pytest.fixture
def portrait_pixels(portrait_path) -> np.ndarray:
    return cv2.imread(str(portrait_path))


def test_threshold_and_label_matches_the_livebook_parameters(portrait_pixels):
    """Threshold 127->255 binary and the label at (10,30), Hershey simplex, scale 1, black, thickness 2."""
    out = threshold_and_label(portrait_pixels, "worker1@lab")
    assert np.array_equal(out, reference(portrait_pixels, "worker1@lab"))


def test_the_label_is_drawn():
    """On a white image, different labels give different pixels, only near the label's place."""
    white = np.full((100, 300, 3), 255, np.uint8)
    a = threshold_and_label(white, "worker1@lab")
    b = threshold_and_label(white, "worker2@lab")
    rows, cols = np.nonzero((a != b).any(axis=2))
    assert rows.size > 0
    assert rows.max() < 45
    assert cols.min() >= 5


def test_output_is_binary_and_input_untouched(portrait_pixels):
    """Every pixel is 0 or 255 and the input array is not modified."""
    before = portrait_pixels.copy()
    out = threshold_and_label(portrait_pixels, "x@y")
    assert set(np.unique(out)) <= {0, 255}
    assert np.array_equal(portrait_pixels, before)


@pytest.mark.parametrize("shape", [(40, 60), (40, 60, 3), (40, 60, 4)])
def test_any_channel_count(shape):
    """Grayscale, BGR and BGRA arrays keep their shape."""
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert threshold_and_label(image, "w@h").shape == shape


def test_wire_round_trip(portrait_pixels):
    """(dtype, shape, bytes) and back gives the same array, as the Livebook's {type, shape, binary}."""
    wire = to_wire(portrait_pixels)
    assert wire.dtype == "uint8"
    assert wire.shape == portrait_pixels.shape
    assert len(wire.data) == portrait_pixels.nbytes
    assert np.array_equal(from_wire(wire), portrait_pixels)
    assert "bytes" in repr(wire)


def test_process_image_names_the_output(portrait_pixels):
    """process_image returns `<base>_processed<ext>` and the labelled pixels."""
    name, out = process_image("pic_d_3.jpg", to_wire(portrait_pixels), "w@h")
    assert name == "pic_d_3_processed.jpg"
    assert np.array_equal(out, reference(portrait_pixels, "w@h"))


def test_wire_is_frozen():
    """A Wire is immutable data."""
    wire = Wire("uint8", (1,), b"\x00")
    with pytest.raises(AttributeError):
        wire.dtype = "uint16"  # type: ignore[misc]


def test_pack_mostly_binary_round_trip(portrait_pixels):
    """A labelled portrait packs to a fraction of its raw size and unpacks exactly."""
    out = threshold_and_label(portrait_pixels, "worker1@h1host")
    packed = pack_mostly_binary(out)
    assert len(packed) < out.nbytes // 20
    assert np.array_equal(unpack_mostly_binary(packed, out.shape), out)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13, 3), (40, 60, 4)])
def test_pack_any_values(shape):
    """Any 8-bit values survive packing, however few are 0 or 255."""
    image = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(unpack_mostly_binary(pack_mostly_binary(image), shape), image)


def test_a_packed_result_is_unpacked_only_within_bounds(portrait_pixels):
    """A result whose shape or size does not add up is refused, never decompressed unbounded."""
    out = threshold_and_label(portrait_pixels, "w@h")
    packed = pack_mostly_binary(out)
    with pytest.raises(ValueError, match="out of bounds"):
        unpack_mostly_binary(packed, out.shape, max_values=out.size - 1)
    with pytest.raises(ValueError, match="out of bounds"):
        unpack_mostly_binary(packed, (10**6, 10**6, 3))
    with pytest.raises((ValueError, zstandard.ZstdError)):
        unpack_mostly_binary(packed, (out.shape[0] // 2, out.shape[1], 3))  # a lying shape
