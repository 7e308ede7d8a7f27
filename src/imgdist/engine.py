"""What runs on an engine: its identity and the engine side of each transport.

Engines import this module (it is sent by reference, never as pickled code), so main and
worker machines need the same imgdist installed.
"""

from __future__ import annotations

import fcntl
import os
import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from imgdist import __version__
from imgdist.codec import DEFAULT_MAX_PIXELS, decode, encode, read_file
from imgdist.files import atomic_write
from imgdist.image import Wire, pack_mostly_binary, process_image, threshold_and_label, to_wire
from imgdist.tuning import tune_for_images

LABEL_ENV = "IMGDIST_WORKER_LABEL"
_label: str | None = os.environ.get(LABEL_ENV) or None


@dataclass(frozen=True)
class Identity:
    """Who an engine is: its label (None until named), host, pid and software versions."""

    label: str | None
    host: str
    pid: int
    python: str
    imgdist: str


def identity() -> Identity:
    """This process's identity."""
    return Identity(
        _label, socket.gethostname(), os.getpid(), platform.python_version(), __version__
    )


def set_label(label: str, *, only_if_unset: bool = False) -> Identity:
    """Name this engine `label` (it then draws `label@host`); returns the new identity."""
    global _label
    if not (only_if_unset and _label):
        _label = label
    return identity()


def worker_name() -> str:
    """`label@host`, the name this engine draws on images."""
    return f"{_label or 'engine'}@{socket.gethostname()}"


def process_batch(
    transport: str, metas: list, *payloads: bytes, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list:
    """Process a batch on this engine; one bad image fails only itself.

    Returns a flat list `[worker, errors, out_metas, *out_payloads]` (flat so ipyparallel
    sends each payload as its own zero-copy buffer); `errors` maps batch position to message.
    """
    tune_for_images()
    worker = worker_name()
    errors: dict[int, str] = {}
    out_metas: list = []
    out_payloads: list[bytes] = []
    step = _STEPS[transport]
    for position, meta in enumerate(metas):
        payload = payloads[position] if payloads else b""
        try:
            out_meta, out_payload = step(meta, payload, worker, max_pixels)
        except Exception as exc:  # noqa: BLE001 - reported per image, never fatal for the batch
            errors[position] = str(exc) or type(exc).__name__
            out_meta, out_payload = None, b""
        out_metas.append(out_meta)
        out_payloads.append(out_payload)
    return [worker, errors, out_metas, *out_payloads]


def _pixels_step(meta: tuple, payload: bytes, worker: str, max_pixels: int) -> tuple:
    # The Livebook's flow: pixels in as (dtype, shape, bytes), pixels out the same way.
    name, dtype, shape = meta
    _, out = process_image(name, Wire(dtype, tuple(shape), payload), worker)
    wire = to_wire(out)
    return (wire.dtype, wire.shape), wire.data


def _encoded_step(meta: tuple, payload: bytes, worker: str, max_pixels: int) -> tuple:
    name, ext = meta
    out = threshold_and_label(decode(payload, name, max_pixels=max_pixels), worker)
    return None, encode(out, ext)


def _compact_step(meta: tuple, payload: bytes, worker: str, max_pixels: int) -> tuple:
    name, _ext = meta
    out = threshold_and_label(decode(payload, name, max_pixels=max_pixels), worker)
    return out.shape, pack_mostly_binary(out)


def _path_step(meta: tuple, payload: bytes, worker: str, max_pixels: int) -> tuple:
    source, output = meta
    process_file(source, output, worker, max_pixels=max_pixels)
    return None, b""


def process_file(
    source: str | Path, output: str | Path, label: str, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> None:
    """The whole job for one file: read, decode, threshold and label, encode, write atomically."""
    output = Path(output)
    image = decode(read_file(Path(source)), str(source), max_pixels=max_pixels)
    atomic_write(output, encode(threshold_and_label(image, label), output.suffix))


def process_claimed(
    items: list[tuple[int, str, str]],
    counter_path: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list:
    """Process the images this engine claims, on a file system shared with the main.

    All engines get the same list and claim the next image by incrementing a counter in the
    file `counter_path` under an exclusive lock, so the images are shared out with one message
    per engine and a slow engine simply claims fewer. (A counter, not a file per claim: file
    creation costs ~130 us on the project's disk, the counter ~5 us.) Returns
    `[worker, done, errors, times]`, `times` holding each processed image's (start, end) on
    this machine's clock (`time.time()`), for the run's timeline.
    """
    tune_for_images()
    worker = worker_name()
    done: list[int] = []
    errors: dict[int, str] = {}
    times: list[tuple[float, float]] = []
    with Path(counter_path).open("r+b") as counter:
        while (position := claim_next(counter.fileno())) < len(items):
            index, source, output = items[position]
            started = time.time()
            try:
                process_file(source, output, worker, max_pixels=max_pixels)
            except Exception as exc:  # noqa: BLE001 - reported per image, never fatal for the batch
                errors[index] = str(exc) or type(exc).__name__
                continue
            done.append(index)
            times.append((started, time.time()))
    return [worker, done, errors, times]


def claim_next(fd: int) -> int:
    """Atomically take the next position from the 8-byte counter file `fd`."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        position = int.from_bytes(os.pread(fd, 8, 0) or b"\0", "little")
        os.pwrite(fd, (position + 1).to_bytes(8, "little"), 0)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    return position


def read_counter(path: Path) -> int:
    """How many positions have been claimed from the counter file at `path`."""
    try:
        return int.from_bytes(Path(path).read_bytes()[:8] or b"\0", "little")
    except OSError:
        return 0


def sees(path: str, token: str) -> bool:
    """Whether this engine reads `token` in `path`: it shares the main's file system."""
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


_STEPS = {
    "pixels": _pixels_step,
    "encoded": _encoded_step,
    "compact": _compact_step,
    "path": _path_step,
}


@dataclass(frozen=True)
class EngineTask:
    """A reference to a function of this module, pickled by name so engines import it."""

    name: str

    def __call__(self, *args, **kwargs):
        return globals()[self.name](*args, **kwargs)
