"""The main process's side of each transport: what it sends for a batch, and what it does with the answer.

- `pixels` (the Livebook's): main decodes, sends (dtype, shape, bytes); gets pixels back and encodes.
- `encoded`: main sends the file's bytes; the engine decodes, processes, encodes; main writes the bytes.
- `compact`: the file's bytes go out; the result comes back as one bit per value plus the few
  other values, ~19 KB instead of a 126 KB JPEG; main encodes and writes (for slow links).
- `path`: a shared file system; only names cross the wire and engines read and write the files.
- `direct`: the data route (`imgdist.dataroute`): file bytes out and output bytes back on a
  connection of their own between main and worker, the controller carrying one task per
  worker; the main only reads and writes files (or, for a link-bound worker while it has CPU
  to spare, gets bits and encodes).
- `auto` (default): per worker, `path` when it shares the main's disk (see `imgdist.routes`), else
  `compact`.
"""

from __future__ import annotations

import os
from pathlib import Path

import zstandard

from imgdist.codec import DEFAULT_MAX_PIXELS, decode, encode, read_file
from imgdist.errors import ImageError, ParameterError
from imgdist.files import Item, atomic_write
from imgdist.image import Wire, from_wire, to_wire, unpack_mostly_binary

TRANSPORTS = ("auto", "pixels", "encoded", "compact", "path", "direct")


def check_transport(transport: str) -> str:
    """`transport` if known, else a ParameterError listing the choices ('auto' picks one per worker)."""
    if transport not in TRANSPORTS:
        msg = f"transport {transport!r} is unknown; choose one of {', '.join(TRANSPORTS)}."
        raise ParameterError(msg)
    return transport


def prepare(
    transport: str, item: Item, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[tuple, bytes]:
    """(meta, payload) to send for `item`; raises ImageError when main cannot read it."""
    if transport == "pixels":
        image = decode(read_file(item.source), str(item.source), max_pixels=max_pixels)
        wire = to_wire(image)
        return (item.source.name, wire.dtype, wire.shape), wire.data
    if transport in ("encoded", "compact"):
        return (str(item.source), item.output.suffix), read_file(item.source)
    # absolute, resolved: a worker started in another folder reads the same file
    return (item.real_source or os.path.realpath(item.source), str(item.output)), b""


def save_image(output: Path, wire: Wire) -> Path:
    """The Livebook's `save_image`: pixels from their wire form, encoded by `output`'s suffix."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, encode(from_wire(wire), output.suffix))
    return output


def finish(
    transport: str,
    item: Item,
    meta: tuple | None,
    payload: bytes | memoryview,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Write `item`'s output from the engine's answer (the `path` engine wrote it already)."""
    if transport == "pixels":
        dtype, shape = meta
        save_image(item.output, Wire(dtype, tuple(shape), payload))
    elif transport == "encoded":
        atomic_write(item.output, payload)
    elif transport == "compact":
        try:
            image = unpack_mostly_binary(bytes(payload), tuple(meta), max_values=4 * max_pixels)
        except (ValueError, zstandard.ZstdError) as exc:
            msg = f"{item.source}: the worker's result cannot be unpacked ({exc})."
            raise ImageError(msg) from None
        atomic_write(item.output, encode(image, item.output.suffix))
