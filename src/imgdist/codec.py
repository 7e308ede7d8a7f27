"""Decoding and encoding image files, with the checks that turn bad files into clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from imgdist.errors import ImageError

# Decompression-bomb guard: a 600x512 portrait is 0.3 Mpx; 50 Mpx covers any camera photo.
DEFAULT_MAX_PIXELS = 50_000_000


def decode(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode file bytes to 8-bit BGR pixels (OpenCV's `imread` default), or raise ImageError.

    Grayscale becomes three equal channels, alpha is dropped and 16-bit is scaled to 8-bit,
    so every accepted kind has the same, defined result.
    """
    if not data:
        msg = f"{name}: the file is empty (0 bytes); expected an image file such as a JPEG or PNG."
        raise ImageError(msg)
    size = image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        width, height = size
        msg = (
            f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of "
            f"{max_pixels:,}; shrink the image or raise max_pixels if you trust the file."
        )
        raise ImageError(msg)
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.find(b"\xff\xda"):
        # No end-of-image after the scan starts (scan data cannot hold FF D9): OpenCV would
        # decode the part that is there and grey out the rest.
        msg = (
            f"{name}: a JPEG of {len(data):,} bytes with no end-of-image marker: the file is "
            "truncated; copy or download it again."
        )
        raise ImageError(msg)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        msg = (
            f"{name}: {len(data):,} bytes that OpenCV cannot decode as an image "
            f"(starts with {data[:8]!r}); expected a JPEG, PNG or other image file."
        )
        raise ImageError(msg)
    return image


def encode(image: np.ndarray, ext: str) -> bytes:
    """Encode pixels in the format named by `ext` ('.jpg', '.png', ...) with OpenCV's defaults."""
    ok, buffer = cv2.imencode(ext, image)
    if not ok:
        msg = f"OpenCV could not encode a {image.shape} {image.dtype} image as {ext!r}."
        raise ImageError(msg)
    return buffer.tobytes()


def read_file(path: Path) -> bytes:
    """A file's bytes, with a clear error for missing files and folders."""
    path = Path(path)
    if path.is_dir():
        msg = f"{path}: is a folder, expected an image file."
        raise ImageError(msg)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        msg = f"{path}: no such file; check the path."
        raise ImageError(msg) from None
    except OSError as exc:
        msg = f"{path}: cannot be read ({exc.strerror}); check its permissions."
        raise ImageError(msg) from None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding, or None if not found."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # Walk the marker segments to the first start-of-frame (SOF0..SOF15 except DHT/JPG/DAC).
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height
        pos += 2 + length
    return None
