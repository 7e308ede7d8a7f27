"""The image operation and the image's wire form: pure functions on NumPy arrays."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import zstandard

from imgdist.names import processed_name

# The Livebook's parameters: threshold at 127 to 255, name at (10, 30) in Hershey simplex.
THRESHOLD = 127
MAX_VALUE = 255
LABEL_ORIGIN = (10, 30)
LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX
LABEL_SCALE = 1.0
LABEL_COLOUR = (0, 0, 0)
LABEL_THICKNESS = 2


def threshold_and_label(image: np.ndarray, label: str) -> np.ndarray:
    """Threshold `image` (127 -> 255, binary) and draw `label` on it, as the Livebook does.

    Works on any channel count and on 8- or 16-bit images; the input is not modified.
    """
    _, out = cv2.threshold(image, THRESHOLD, MAX_VALUE, cv2.THRESH_BINARY)
    out = np.ascontiguousarray(out)
    cv2.putText(out, label, LABEL_ORIGIN, LABEL_FONT, LABEL_SCALE, LABEL_COLOUR, LABEL_THICKNESS)
    return out


@dataclass(frozen=True)
class Wire:
    """An image as it crosses between processes: the Livebook's `{type, shape, binary}`."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def __repr__(self) -> str:
        head = self.data[:8].hex(" ")
        return f"Wire(dtype={self.dtype!r}, shape={self.shape}, data=<{len(self.data)} bytes: {head} ...>)"


def to_wire(image: np.ndarray) -> Wire:
    """The image as (dtype, shape, raw bytes)."""
    return Wire(str(image.dtype), tuple(image.shape), np.ascontiguousarray(image).tobytes())


def from_wire(wire: Wire) -> np.ndarray:
    """The image back from (dtype, shape, raw bytes); a read-only view of the bytes, no copy."""
    return np.frombuffer(wire.data, dtype=np.dtype(wire.dtype)).reshape(wire.shape)


def process_image(source_name: str, wire: Wire, label: str) -> tuple[str, np.ndarray]:
    """The Livebook's `process_image`: rebuild the image from its wire form, threshold, label.

    Returns the output's file name and the processed pixels.
    """
    return processed_name(source_name), threshold_and_label(from_wire(wire), label)


def pack_mostly_binary(image: np.ndarray) -> bytes:
    """An 8-bit image whose pixels are nearly all 0 or 255 (a thresholded one), losslessly small.

    One bit per value, plus the few other values (OpenCV 5 anti-aliases parts of some glyphs)
    by position, Zstandard-compressed: a labelled 600x512 portrait is ~19 KB instead of 921 KB
    raw or 126 KB as JPEG. (zstd, not zlib: measured on that portrait, zlib level 1 took 0.9 ms
    for 23 KB, zstd level 1 0.12 ms for 19 KB.)
    """
    flat = np.ascontiguousarray(image, dtype=np.uint8).reshape(-1)
    others = np.flatnonzero((flat != 0) & (flat != 255)).astype("<u4")
    body = np.packbits(flat > 127).tobytes() + others.tobytes() + flat[others].tobytes()
    return len(others).to_bytes(4, "little") + zstandard.ZstdCompressor(level=1).compress(body)


def unpack_mostly_binary(
    data: bytes, shape: tuple[int, ...], *, max_values: int = 3 * 50_000_000
) -> np.ndarray:
    """The image `pack_mostly_binary` packed, exactly.

    At most `max_values` values (pixels x channels) are unpacked, and the compressed body may
    not grow past what that shape needs: a ValueError otherwise, so a bad answer cannot make
    the main decompress without bound.
    """
    size = int(np.prod(shape))
    n_others = int.from_bytes(data[:4], "little")
    if size > max_values or n_others > size or len(shape) not in (2, 3):
        msg = f"a packed result of shape {shape} with {n_others:,} other values is out of bounds"
        raise ValueError(msg)
    bits_length = (size + 7) // 8
    needed = bits_length + 5 * n_others
    body = zstandard.ZstdDecompressor().decompress(data[4:], max_output_size=needed)
    if len(body) != needed:
        msg = f"a packed result holds {len(body):,} bytes, expected {needed:,} for shape {shape}"
        raise ValueError(msg)
    flat = np.unpackbits(np.frombuffer(body, np.uint8, bits_length), count=size)
    flat *= 255
    positions = np.frombuffer(body, "<u4", n_others, offset=bits_length)
    flat[positions] = np.frombuffer(body, np.uint8, n_others, offset=bits_length + 4 * n_others)
    return flat.reshape(shape)
