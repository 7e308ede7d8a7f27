"""Decoding files, with clear errors for what is not an image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imgdist.codec import decode, encode, image_size, read_file
from imgdist.errors import ImageError


def test_decode_gives_8bit_bgr(portrait_path):
    """A JPEG decodes to the same pixels as cv2.imread."""
    pixels = decode(portrait_path.read_bytes(), "p.jpg")
    assert np.array_equal(pixels, cv2.imread(str(portrait_path)))


def test_empty_file_is_named():
    """An empty file is reported as empty, by name."""
    with pytest.raises(ImageError, match=r"empty\.jpg: the file is empty \(0 bytes\)"):
        decode(b"", "empty.jpg")


def test_text_file_is_not_an_image():
    """A text file named .jpg is reported as undecodable, with its first bytes."""
    with pytest.raises(
        ImageError, match=r"notes\.jpg: 11 bytes that OpenCV cannot decode.*b'hello wo'"
    ):
        decode(b"hello world", "notes.jpg")


def test_pixel_limit_from_header(portrait_path):
    """An image over the pixel limit is refused before decoding, naming its size and the limit."""
    with pytest.raises(ImageError, match=r"512x600 = 307,200 pixels is over the limit of 1,000"):
        decode(portrait_path.read_bytes(), "big.jpg", max_pixels=1000)


def test_image_size_png_and_jpeg(portrait_path):
    """Width and height are read from PNG and JPEG headers."""
    png = encode(np.zeros((7, 9, 3), np.uint8), ".png")
    assert image_size(png) == (9, 7)
    assert image_size(portrait_path.read_bytes()) == (512, 600)
    assert image_size(b"GIF89a") is None


def test_read_file_errors(tmp_path):
    """A missing file and a folder each get a clear message."""
    with pytest.raises(ImageError, match="no such file"):
        read_file(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="is a folder, expected an image file"):
        read_file(tmp_path)
