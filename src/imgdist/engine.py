"""What runs on an engine: its identity and the engine side of each transport.

Engines import this module (it is sent by reference, never as pickled code), so main and
worker machines need the same imgdist installed.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
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
from imgdist.transports import TRANSPORTS
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


def process_claimed(
    chunks: list[list[tuple[int, str, str]]],
    claims_dir: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list:
    """Process the chunks of images this engine claims, on a file system shared with the main.

    Every engine gets the same chunks and claims chunk k by creating the file `claims_dir/k`
    exclusively (`O_CREAT | O_EXCL`, atomic on NFS, SMB and sshfs, where `flock` may not be
    shared between machines), so each chunk is processed by one engine and a slow engine simply
    claims fewer. Claims and finished images are published to the main as they happen (at most
    every `REPORT_EVERY_S`), so it sees progress, checkpoints the manifest and notices a stuck
    engine. Returns `[worker, done, errors, times]` for everything this engine processed.
    """
    tune_for_images()
    report = _Reporter(worker_name())
    for chunk_number, chunk in enumerate(chunks):
        if not claim(claims_dir, chunk_number, report.worker):
            continue
        report.claimed(chunk_number)
        for index, source, output in chunk:
            started = time.time()
            try:
                process_file(source, output, report.worker, max_pixels=max_pixels)
            except OSError:
                report.publish(force=True)  # what is done is done; the rest goes elsewhere
                raise  # the disk or the network, not this image: the main gives this worker up
            except Exception as exc:  # noqa: BLE001 - reported per image, never fatal for the batch
                report.failed(index, str(exc) or type(exc).__name__)
                continue
            report.finished(index, started, time.time())
    report.publish(force=True)
    return [report.worker, report.done, report.errors, report.times]


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
    processed, waited, asks = 0, 0.0, collections.deque()
    try:
        for _ in range(prefetch):
            client.ask()
            asks.append(time.perf_counter())
        while asks:
            started = time.perf_counter()
            kind, *frames = client.receive(DIRECT_TIMEOUT_S)
            waited += time.perf_counter() - started
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
            result |= {"recv_wait_s": waited, "send_wait_s": client.send_wait_s}
            client.send_result(result, outputs)
            processed += len(result["done"])
            client.ask()
            asks.append(time.perf_counter())
    finally:
        client.close()
    return [worker, processed]


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
    done, errors, times, outputs = [], [], [], []
    started = time.perf_counter()
    bits_allowed = header.get("bits_allowed", False)
    for position, (index, meta) in enumerate(header["items"]):
        payload = payloads[position].bytes if payloads else b""
        began = time.time()
        try:
            if header["transport"] == "encoded":
                step, out_meta, out_payload = _direct_image(
                    meta, payload, worker, max_pixels, pace, bits_allowed
                )
            else:
                step = header["transport"]
                out_meta, out_payload = _STEPS[step](meta, payload, worker, max_pixels)
        except OSError:
            raise  # the disk or the network, not this image: the main gives this worker up
        except Exception as exc:  # noqa: BLE001 - reported per image, never fatal for the chunk
            errors.append([index, str(exc) or type(exc).__name__])
            continue
        done.append([index, out_meta, step])
        times.append([began, time.time()])
        if step != "path":
            outputs.append(out_payload)
    result = {
        "chunk": header["chunk"],
        "done": done,
        "errors": errors,
        "times": times,
        "compute_s": time.perf_counter() - started,
        "link_bps": pace.link_bps,
        "jpeg_s": pace.jpeg_s,
    }
    return result, outputs


REPORT_EVERY_S = 0.2


class _Reporter:
    """What an engine has done in `process_claimed`, published to the main bit by bit."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.done: list[int] = []
        self.errors: dict[int, str] = {}
        self.times: list[tuple[float, float]] = []
        self.claims: list[int] = []
        self.sent = 0  # how many of `done`, `errors` and `claims` were published
        self.sent_errors = 0
        self.sent_claims = 0
        self.last = time.monotonic()
        self.number = 0

    def claimed(self, chunk_number: int) -> None:
        self.claims.append(chunk_number)
        self.publish()

    def finished(self, index: int, started: float, ended: float) -> None:
        self.done.append(index)
        self.times.append((started, ended))
        self.publish()

    def failed(self, index: int, reason: str) -> None:
        self.errors[index] = reason
        self.publish()

    def publish(self, *, force: bool = False) -> None:
        """Send what is new since the last report, if `REPORT_EVERY_S` has passed (or `force`)."""
        if not force and time.monotonic() - self.last < REPORT_EVERY_S:
            return
        errors = list(self.errors.items())
        news = {
            "claims": self.claims[self.sent_claims :],
            "done": list(zip(self.done[self.sent :], self.times[self.sent :], strict=True)),
            "errors": errors[self.sent_errors :],
        }
        if not any(news.values()):
            return
        self.number += 1
        _publish({f"report-{self.number}": (self.worker, news)})
        self.sent, self.sent_errors, self.sent_claims = (
            len(self.done),
            len(errors),
            len(self.claims),
        )
        self.last = time.monotonic()


def _publish(data: dict) -> None:
    # ipyparallel's data channel: messages go to the main while the task runs (keys add up in
    # the task's result metadata there); outside an engine (tests calling directly) nothing is sent
    try:
        from ipyparallel.datapub import publish_data

        publish_data(data)
    except (ImportError, AttributeError):
        pass


def claim(claims_dir: str, chunk_number: int, worker: str) -> bool:
    """Take chunk `chunk_number` by creating `claims_dir/<chunk_number>` exclusively; False if
    another engine has it."""
    path = Path(claims_dir, str(chunk_number))
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except PermissionError:
        # sshfs answers some lost O_EXCL races with EPERM instead of EEXIST
        if path.is_symlink() or path.exists():
            return False
        raise
    with os.fdopen(fd, "w") as handle:
        handle.write(worker)
    return True


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
_STEPS = {name: globals()[t.engine_step] for name, t in TRANSPORTS.items() if t.engine_step}


@dataclass(frozen=True)
class EngineTask:
    """A reference to a function of this module, pickled by name so engines import it."""

    name: str

    def __call__(self, *args, **kwargs):
        return globals()[self.name](*args, **kwargs)
