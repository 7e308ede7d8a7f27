"""Engine side of the `direct` transport: chunks pulled from the main over the data route, the
output (or its bits, when the link is the bottleneck) sent back; the link measured as it goes."""

from __future__ import annotations

import collections
import json
import time

from imgdist.codec import DEFAULT_MAX_PIXELS, decode, encode
from imgdist.engine import STEPS, worker_name
from imgdist.image import pack_mostly_binary, threshold_and_label
from imgdist.tuning import tune_for_images


def process_direct(
    address: str,
    run_id: bytes,
    server_public_key: bytes = b"",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    prefetch: int = 2,
) -> list:
    """Process chunks fetched from the main over the data route until it has no more.

    `prefetch` chunks are asked for at once, so the next one is on its way while this one is
    processed. A chunk says its step (`encoded`: send the output file's bytes; `path`: names
    on a shared disk) and whether the main has CPU to spare for encoding (`bits_allowed`);
    then this worker sends an image's bits instead of its JPEG (`compact`, ~1/6 of the bytes)
    when its link could not carry the JPEGs as fast as it makes them: measured, not assumed
    (its link from how fast its chunks arrive, the JPEG's size and the time to make it from
    its last image). Returns `[worker, images processed]`.
    """
    from IPython import get_ipython  # the engine's kernel: it holds the cluster's key

    from imgdist.dataroute import DataClient

    tune_for_images()
    worker = worker_name()
    key = get_ipython().kernel.session.key
    client = DataClient(address, key, run_id, worker, server_public_key=server_public_key)
    # what this engine measured in earlier runs for the same main stays: a run's first images
    # are its slowest (caches cold), which would understate the link's share
    pace = _PACES.setdefault(address.rpartition(":")[0], _Pace())
    pace.new_run()
    try:
        return [worker, _pull_chunks(client, worker, pace, max_pixels, prefetch)]
    finally:
        client.close()


def _pull_chunks(client, worker: str, pace: _Pace, max_pixels: int, prefetch: int) -> int:
    """Ask for chunks, `prefetch` in flight, until the main has none; images processed."""
    processed, asks = 0, collections.deque()
    for _ in range(prefetch):
        client.ask()
        asks.append(time.perf_counter())
    while asks:
        kind, *frames = client.receive(DIRECT_TIMEOUT_S)
        asked_at = asks.popleft()  # the main answers a worker's asks in order
        if kind == b"none":
            continue
        if kind != b"chunk":
            msg = f"the main ended this worker's data connection: {kind.decode()}"
            raise ConnectionAbortedError(msg)
        header = json.loads(frames[0].bytes)
        seconds = time.perf_counter() - asked_at - header.get("held_s", 0.0)
        pace.arrived(sum(len(frame) for frame in frames), seconds)
        result, outputs = _direct_chunk(header, frames[1:], worker, max_pixels, pace)
        client.send_result(result, outputs)
        processed += len(result["done"])
        client.ask()
        asks.append(time.perf_counter())
    return processed


DIRECT_TIMEOUT_S = 600.0  # the main gives up on a silent worker long before (its stall timeout)


class _Pace:
    """What this worker measured: its link (bytes/s), its last JPEG's size and the shortest
    time it took to make one.

    Every chunk is a sample of the link: its size over the time from asking for it to having
    it, less the time the main held the request (it says so in the chunk). Waiting for the
    main, for this process's turn on a busy machine or behind another chunk only makes that
    time longer, so each sample is a lower bound of the link's speed and the run's best sample
    is its measure. Until a run has one, the previous run's measure holds. Chunks too small to
    fill the link (they pass in its burst) are not samples.
    """

    def __init__(self) -> None:
        self.link_bps = 0.0  # the measure in use
        self.run_best = 0.0  # this run's best sample so far
        self.jpeg_bytes = 0
        self.jpeg_s = 0.0

    def new_run(self) -> None:
        self.run_best = 0.0

    def arrived(self, size: int, seconds: float) -> None:
        """A chunk of `size` bytes had by `seconds` after asking (less the main's hold)."""
        if size < MIN_LINK_SAMPLE and self.link_bps:
            return
        self.run_best = max(self.run_best, size / max(seconds, 1e-4))
        self.link_bps = self.run_best

    def measured(self) -> bool:
        return bool(self.jpeg_bytes and self.link_bps)

    def link_bound(self) -> bool:
        """Whether sending JPEGs takes longer on the link than making them takes here."""
        return self.measured() and self.jpeg_bytes / self.link_bps > self.jpeg_s

    def made_jpeg(self, size: int, seconds: float) -> None:
        self.jpeg_bytes = size
        self.jpeg_s = min(self.jpeg_s, seconds) if self.jpeg_s else seconds


MIN_LINK_SAMPLE = 96 * 1024  # what a link's burst (tbf: 64 KB here) cannot swallow whole


_PACES: dict[str, _Pace] = {}  # by the main's address


def _direct_image(meta: list, payload: bytes, worker: str, max_pixels: int, pace, bits_allowed):
    """An image of an `encoded` chunk: (step, out meta, out payload), the bits instead of the
    JPEG when allowed and the link is the bottleneck (the first image makes its JPEG anyway,
    to measure)."""
    name, ext = meta
    clock = time.perf_counter()
    image = threshold_and_label(decode(payload, name, max_pixels=max_pixels), worker)
    jpeg = None
    if not (bits_allowed and pace.measured()):
        jpeg = encode(image, ext)
        pace.made_jpeg(len(jpeg), time.perf_counter() - clock)
    if bits_allowed and pace.link_bound():
        return "compact", image.shape, pack_mostly_binary(image)
    if jpeg is None:
        jpeg = encode(image, ext)
        pace.made_jpeg(len(jpeg), time.perf_counter() - clock)
    return "encoded", None, jpeg


def _direct_chunk(header: dict, payloads: list, worker: str, max_pixels: int, pace: _Pace):
    """One chunk of the data route: each image's step; (result, output payloads)."""
    done, errors, outputs = [], [], []
    bits_allowed = header.get("bits_allowed", False)
    for position, (index, meta) in enumerate(header["items"]):
        payload = payloads[position].bytes if payloads else b""
        try:
            if header["transport"] == "encoded":
                step, out_meta, out_payload = _direct_image(
                    meta, payload, worker, max_pixels, pace, bits_allowed
                )
            else:
                step = header["transport"]
                out_meta, out_payload = STEPS[step](meta, payload, worker, max_pixels)
        except OSError:
            raise  # the disk or the network, not this image: the main gives this worker up
        except Exception as exc:  # noqa: BLE001 - reported per image, never fatal for the chunk
            errors.append([index, str(exc) or type(exc).__name__])
            continue
        done.append([index, out_meta, step])
        if step != "path":
            outputs.append(out_payload)
    result = {
        "chunk": header["chunk"],
        "done": done,
        "errors": errors,
    }
    return result, outputs
