"""Decoding and encoding image files, with the checks that turn bad files into clear errors."""

from __future__ import annotations

import os
import stat
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
    try:
        size = image_size(data)
    except ImageError as exc:
        msg = f"{name}: {exc}"
        raise ImageError(msg) from None
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
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        msg = (
            f"{name}: {len(data):,} bytes that OpenCV cannot decode as an image "
            f"(starts with {data[:8]!r}); expected a JPEG, PNG or other image file."
        )
        raise ImageError(msg)
    return image


# Other names of JPEG files (browsers save .jfif, some cameras .jpe): OpenCV picks its writer by
# extension and has none for some of them, so they are written as the JPEGs they are.
JPEG_ALIASES = (".jfif", ".jif", ".jfi", ".jpe")


def encoder_extension(ext: str) -> str:
    """The extension OpenCV's writer is chosen by for an output named `*ext`."""
    ext = ext.lower()
    return ".jpg" if ext in JPEG_ALIASES else ext


def encode(image: np.ndarray, ext: str) -> bytes:
    """Encode pixels in the format named by `ext` ('.jpg', '.png', '.jfif', ...) with OpenCV's
    defaults; an ImageError when OpenCV has no writer for it or fails."""
    writer = encoder_extension(ext)
    if not cv2.haveImageWriter(f"x{writer}"):
        msg = (
            f"OpenCV has no writer for {ext!r} files, so the output cannot be written in the "
            "input's format; convert such files to JPEG or PNG first."
        )
        raise ImageError(msg)
    try:
        ok, buffer = cv2.imencode(writer, image)
        detail = ""
    except cv2.error as exc:
        ok, detail = False, f" ({str(exc).strip().splitlines()[-1]})"
    if not ok:
        msg = f"OpenCV could not encode a {image.shape} {image.dtype} image as {ext!r}{detail}."
        raise ImageError(msg)
    return buffer.tobytes()


def read_file(path: Path | str) -> bytes:
    """A regular file's bytes, with a clear error for missing files, folders and the like.

    Plain `os` calls: this runs once per image on the main for the transports that send bytes.
    Opened without blocking, so a FIFO named like a photo is refused instead of hanging.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        msg = f"{path}: no such file; check the path."
        raise ImageError(msg) from None
    except (PermissionError, IsADirectoryError) as exc:
        msg = f"{path}: cannot be read ({exc.strerror}); check its permissions."
        raise ImageError(msg) from None
    # other OSErrors (EIO, a network file system gone: ENOTCONN, ESTALE) are the machine's
    # trouble, not the file's: they propagate, so a worker that has them is given up
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            msg = f"{path}: is a folder, expected an image file."
            raise ImageError(msg)
        if not stat.S_ISREG(info.st_mode):
            msg = f"{path}: is not a regular file (a pipe or a device); expected an image file."
            raise ImageError(msg)
        data = os.read(fd, info.st_size + 1)  # a regular file: all of it at once
        if len(data) != info.st_size:  # it grew, or a file system that reads in parts
            chunks = [data]
            while chunks[-1]:
                chunks.append(os.read(fd, 1 << 20))
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of a PNG, JPEG, GIF, BMP, TIFF, WebP, PNM/PFM, Sun
    raster or Radiance HDR file without decoding it; None when `data` is none of these.

    Formats OpenCV decodes but whose size is not read here (OpenEXR, JPEG 2000, AVIF) raise
    ImageError: their pixel count cannot be checked before decoding.
    """
    for magic, reader in _SIZE_READERS:
        if data.startswith(magic):
            try:
                size = reader(data)
            except (IndexError, ValueError):
                size = None
            # a header too short or malformed gives no size: the decoder will refuse the file
            return size if size and all(size) else None
    kinds = [kind for magic, kind in _UNSIZED if data.startswith(magic)]
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        kinds.append("an AVIF")
    if kinds:
        msg = (
            f"{kinds[0]} file, whose pixel count imgdist cannot read before decoding it, so the "
            "decompression-bomb limit cannot be checked; convert it to PNG or TIFF first."
        )
        raise ImageError(msg)
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _gif_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")


def _bmp_size(data: bytes) -> tuple[int, int]:
    header = int.from_bytes(data[14:18], "little")
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)  # negative: stored top-down
    return abs(width), abs(height)


def _tiff_size(data: bytes) -> tuple[int, int]:
    # the first image file directory's ImageWidth (256) and ImageLength (257): what imdecode reads
    order = "little" if data[:2] == b"II" else "big"
    offset = int.from_bytes(data[4:8], order)
    count = int.from_bytes(data[offset : offset + 2], order)
    sizes = {}
    for entry in range(count):
        at = offset + 2 + 12 * entry
        tag = int.from_bytes(data[at : at + 2], order)
        if tag in (256, 257):
            kind = int.from_bytes(data[at + 2 : at + 4], order)
            width = 2 if kind == 3 else 4  # SHORT or LONG
            sizes[tag] = int.from_bytes(data[at + 8 : at + 8 + width], order)
    if len(sizes) != 2:
        raise ValueError
    return sizes[256], sizes[257]


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(
            data[28:30], "little"
        ) & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit width-1 and height-1 after the signature byte
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise ValueError


def _pnm_size(data: bytes) -> tuple[int, int]:
    # "P6 <width> <height> ...", with comments from '#' to the end of a line
    words: list[int] = []
    for line in data[2:512].split(b"\n"):
        words += [int(w) for w in line.split(b"#")[0].split()]
        if len(words) >= 2:
            return words[0], words[1]
    raise ValueError


def _sun_raster_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big")


def _hdr_size(data: bytes) -> tuple[int, int]:
    # the resolution line after the header's blank line, e.g. "-Y 512 +X 768"
    for line in data[:4096].split(b"\n"):
        words = line.split()
        if len(words) == 4 and words[0] in (b"-Y", b"+Y") and words[2] in (b"+X", b"-X"):
            return int(words[3]), int(words[1])
    raise ValueError


_SIZE_READERS = (
    (b"\x89PNG\r\n\x1a\n", _png_size),
    (b"\xff\xd8", lambda data: _jpeg_size(data)),
    (b"GIF87a", _gif_size),
    (b"GIF89a", _gif_size),
    (b"BM", _bmp_size),
    (b"II*\x00", _tiff_size),
    (b"MM\x00*", _tiff_size),
    *((b"P" + kind, _pnm_size) for kind in (b"1", b"2", b"3", b"4", b"5", b"6", b"F", b"f")),
    (b"\x59\xa6\x6a\x95", _sun_raster_size),
    (b"#?RADIANCE", _hdr_size),
    (b"#?RGBE", _hdr_size),
    (b"RIFF", lambda data: _webp_size(data) if data[8:12] == b"WEBP" else None),
)
_UNSIZED = (  # (AVIF is known by its ftyp box, not by a prefix)
    (b"\x76\x2f\x31\x01", "an OpenEXR"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000"),
    (b"\xff\x4f\xff\x51", "a JPEG 2000"),
)


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
