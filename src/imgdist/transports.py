"""How images travel: one record per transport, read by `distribute` (which run serves it), the
main's side (`prepare` before sending, `finish` on the answer), the engine (its step, by name in
`imgdist.engine`), the command line's choices and the tests. Adding a transport is one record
here, its main-side functions below, and its engine step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from imgdist.codec import DEFAULT_MAX_PIXELS, decode, encode, read_file
from imgdist.errors import ImageError, ParameterError
from imgdist.files import Item, atomic_write
from imgdist.image import Wire, from_wire, to_wire, unpack_mostly_binary


@dataclass(frozen=True)
class Transport:
    """One way images travel between the main and a worker."""

    name: str
    crosses: str  # what goes over the network, both ways
    main_does: str  # per image, on the main
    engine_does: str  # per image, on the worker
    engine_step: str = ""  # the engine's function for one image (`imgdist.engine`), '' if none
    run: str = "batch"  # what serves it with the balanced schedule: batch, claims or direct


TRANSPORTS: dict[str, Transport] = {
    t.name: t
    for t in (
        Transport(
            "auto",
            "per worker: names where it shares the main's disk (`path`), else `direct`",
            "checks each worker's disk once per folder, then as `path` or `direct`",
            "as `path` or `direct`",
        ),
        Transport(
            "pixels",
            "decoded pixels `(dtype, shape, bytes)` both ways: the Livebook's flow",
            "reads and decodes the input; encodes and writes the output",
            "thresholds and labels the pixels",
            "_pixels_step",
        ),
        Transport(
            "encoded",
            "the input file's bytes; the output file's bytes (through the controller)",
            "reads the input; writes the output",
            "decodes, thresholds and labels, encodes",
            "_encoded_step",
        ),
        Transport(
            "compact",
            "the input file's bytes; the output as bits, ~19 KB instead of a 126 KB JPEG "
            "(through the controller)",
            "reads the input; unpacks the bits, encodes and writes the output",
            "decodes, thresholds and labels, packs the bits",
            "_compact_step",
        ),
        Transport(
            "path",
            "names only: a shared disk at the same paths",
            "nothing per image (claims are files on the shared disk)",
            "reads, processes and writes the files itself",
            "_path_step",
            run="claims",
        ),
        Transport(
            "direct",
            "the input file's bytes and the output file's bytes on the data route, a "
            "connection of their own between main and worker (bits instead of the JPEG when "
            "the worker's link is its bottleneck and the main has CPU to spare)",
            "reads the input; writes the output (encodes bits only for link-bound workers)",
            "as `encoded` (or `compact`)",
            run="direct",
        ),
    )
}


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
    return _PREPARE[transport](item, max_pixels)


def _prepare_pixels(item: Item, max_pixels: int) -> tuple[tuple, bytes]:
    image = decode(read_file(item.source), str(item.source), max_pixels=max_pixels)
    wire = to_wire(image)
    return (item.source.name, wire.dtype, wire.shape), wire.data


def _prepare_bytes(item: Item, max_pixels: int) -> tuple[tuple, bytes]:
    return (str(item.source), item.output.suffix), read_file(item.source)


def _prepare_names(item: Item, max_pixels: int) -> tuple[tuple, bytes]:
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
    _FINISH[transport](item, meta, payload, max_pixels)


def _finish_pixels(item: Item, meta, payload, max_pixels: int) -> None:
    dtype, shape = meta
    save_image(item.output, Wire(dtype, tuple(shape), payload))


def _finish_bytes(item: Item, meta, payload, max_pixels: int) -> None:
    atomic_write(item.output, payload)


def _finish_bits(item: Item, meta, payload, max_pixels: int) -> None:
    try:
        image = unpack_mostly_binary(bytes(payload), tuple(meta), max_values=4 * max_pixels)
    except (ValueError, zstandard.ZstdError) as exc:
        msg = f"{item.source}: the worker's result cannot be unpacked ({exc})."
        raise ImageError(msg) from None
    atomic_write(item.output, encode(image, item.output.suffix))


def _nothing(item: Item, meta, payload, max_pixels: int) -> None:
    pass  # the engine wrote the output on the shared disk


# the main's side of each engine step (a direct chunk's images come back as encoded or compact)
_PREPARE: dict[str, Callable] = {
    "pixels": _prepare_pixels,
    "encoded": _prepare_bytes,
    "compact": _prepare_bytes,
    "path": _prepare_names,
}
_FINISH: dict[str, Callable] = {
    "pixels": _finish_pixels,
    "encoded": _finish_bytes,
    "compact": _finish_bits,
    "path": _nothing,
}
