"""What runs on an engine: its identity and the engine side of each transport.

Engines import this module (it is sent by reference, never as pickled code), so main and
worker machines need the same imgdist installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

from imgdist.codec import DEFAULT_MAX_PIXELS, decode, encode, read_file
from imgdist.files import atomic_write
from imgdist.image import Wire, pack_mostly_binary, process_image, threshold_and_label, to_wire
from imgdist.names import DEFAULT_LABEL, name_of
from imgdist.transports import TRANSPORTS
from imgdist.tuning import tune_for_images

LABEL_ENV = "IMGDIST_WORKER_LABEL"
_label: str | None = os.environ.get(LABEL_ENV) or None


@dataclass(frozen=True)
class Identity:
    """Who an engine is: its label (None until named), host, pid and Python version."""

    label: str | None
    host: str
    pid: int
    python: str


def identity() -> Identity:
    """This process's identity."""
    return Identity(_label, socket.gethostname(), os.getpid(), platform.python_version())


def set_label(label: str, *, only_if_unset: bool = False) -> Identity:
    """Name this engine `label` (it then draws `label@host`); returns the new identity."""
    global _label
    if not (only_if_unset and _label):
        _label = label
    return identity()


def worker_name() -> str:
    """`label@host`, the name this engine draws on images."""
    return name_of(_label or DEFAULT_LABEL, socket.gethostname())


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
    step = STEPS[transport]
    for position, meta in enumerate(metas):
        payload = payloads[position] if payloads else b""
        try:
            out_meta, out_payload = step(meta, payload, worker, max_pixels)
        except OSError:
            raise  # the disk or the network, not this image: the main gives this worker up
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


def check_shared(samples: list[tuple[str, int, str]], out_dir: str, token: str) -> list[str]:
    """What keeps this engine from using the main's files at the same paths, or [] if nothing.

    `samples` are (path, size, digest) of one input per input folder, as the main sees them:
    each must be readable here with the same size and digest (not merely exist: lab PCs set up
    alike may hold a different file at the same path). The output folder must hold the main's
    probe file `.imgdist-probe-<token>` and take an atomic rename.
    """
    problems = []
    for path, size, digest in samples:
        try:
            if Path(path).stat().st_size != size or file_digest(path) != digest:
                problems.append(f"{path} is another file here")
        except OSError as exc:
            problems.append(f"{path} cannot be read here ({exc.strerror})")
    probe = Path(out_dir, f".imgdist-probe-{token}")
    try:
        same_folder = probe.read_text() == token
    except OSError:
        same_folder = False
    if not same_folder:
        problems.append(f"{out_dir} is not the main's output folder here")
        return problems
    mine = probe.with_name(f"{probe.name}-{socket.gethostname()}-{os.getpid()}")
    part = mine.with_name(mine.name + ".part")
    try:
        part.write_text(token)
        part.replace(mine)
        if mine.read_text() != token:
            problems.append(f"{out_dir} does not keep what is written there")
    except OSError as exc:
        problems.append(f"{out_dir} cannot be written here ({exc.strerror})")
    finally:
        for leftover in (mine, part):
            with contextlib.suppress(OSError):  # not there, or a read-only share
                leftover.unlink()
    return problems


def file_digest(path: str, head: int = 1 << 16) -> str:
    """A fingerprint of a file: SHA-256 of its first 64 KB."""
    with open(path, "rb") as handle:  # noqa: PTH123 - a plain open, as on the hot path
        return hashlib.sha256(handle.read(head)).hexdigest()


# each transport's step on one image, as its record names it
STEPS = {name: globals()[t.engine_step] for name, t in TRANSPORTS.items() if t.engine_step}


@dataclass(frozen=True)
class EngineTask:
    """A reference to an engine-side function, pickled by name so engines import it: one of this
    module's, or of the modules in `_ELSEWHERE`."""

    name: str

    def __call__(self, *args, **kwargs):
        module = _ELSEWHERE.get(self.name)
        if module is None:
            return globals()[self.name](*args, **kwargs)
        return getattr(importlib.import_module(module), self.name)(*args, **kwargs)


_ELSEWHERE = {
    "process_claimed": "imgdist.engine_claims",
    "process_direct": "imgdist.engine_direct",
}
