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


@pytest.mark.parametrize(
    ("ext", "params"),
    [
        (".gif", []),
        (".bmp", []),
        (".tif", []),
        (".tiff", [cv2.IMWRITE_TIFF_COMPRESSION, 5]),
        (".webp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless
        (".ppm", []),
        (".pgm", []),
        (".ras", []),
        (".hdr", []),
        (".pfm", []),
    ],
)
def test_image_size_of_every_format_opencv_decodes(ext, params):
    """The pixel limit is checked before decoding in every format OpenCV reads and writes here:
    the header's size equals the image's."""
    pixels = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    if ext == ".pgm":
        pixels = pixels[:, :, 0].copy()
    if ext in (".hdr", ".pfm"):
        pixels = pixels.astype(np.float32)
    ok, data = cv2.imencode(ext, pixels, params)
    assert ok
    assert image_size(data.tobytes()) == (53, 37)


def test_an_81_mpx_tiff_bomb_is_refused_before_decoding():
    """An 81 Mpx TIFF of one colour (2 MB on disk) is over the default 50 Mpx limit: refused by
    its header, before a byte of it is decoded."""
    data = cv2.imencode(".tif", np.zeros((9000, 9000, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageError, match=r"bomb: 9000x9000 = 81,000,000 pixels is over the limit"):
        decode(data, "bomb")


@pytest.mark.parametrize("ext", [".webp", ".gif", ".png", ".bmp"])
def test_bombs_in_other_formats_are_refused(ext):
    """The same holds in every format whose size the header gives (a lower limit keeps it quick)."""
    data = cv2.imencode(ext, np.zeros((2000, 2000, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageError, match=r"bomb: 2000x2000 = 4,000,000 pixels is over the limit"):
        decode(data, "bomb", max_pixels=1_000_000)


@pytest.mark.parametrize(("ext", "kind"), [(".jp2", "a JPEG 2000"), (".avif", "an AVIF")])
def test_formats_whose_size_cannot_be_read_are_refused(ext, kind):
    """A format whose pixel count is not read from its header cannot pass the bomb check unseen."""
    data = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))[1].tobytes()
    with pytest.raises(ImageError, match=f"x.{ext[1:]}: {kind} file, whose pixel count imgdist"):
        decode(data, f"x.{ext[1:]}")


@pytest.mark.parametrize("ext", [".jfif", ".jpe", ".jif", ".JFIF"])
def test_jpeg_aliases_are_written_as_jpeg(ext):
    """Files named .jfif/.jpe/.jif are JPEGs: their outputs are encoded as JPEG."""
    data = encode(np.zeros((8, 8, 3), np.uint8), ext)
    assert data[:2] == b"\xff\xd8"


def test_no_writer_for_the_extension_is_one_sentence():
    """An output extension OpenCV cannot write is an ImageError saying what to do, not cv2.error."""
    with pytest.raises(ImageError, match=r"OpenCV has no writer for '.exr' files.*convert such"):
        encode(np.zeros((8, 8, 3), np.uint8), ".exr")


def test_read_file_errors(tmp_path):
    """A missing file and a folder each get a clear message."""
    with pytest.raises(ImageError, match="no such file"):
        read_file(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="is a folder, expected an image file"):
        read_file(tmp_path)
