"""Distributing a batch of images over named workers: schedules, streaming, retries, results.

`distribute(workers, images)` is the Livebook's function: images go to workers, each worker
thresholds and labels them, and the main process ends up with `<name>_processed<ext>` files.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imgdist.cluster import Worker
from imgdist.codec import DEFAULT_MAX_PIXELS
from imgdist.errors import ImgdistError, ParameterError, RunError, WorkerLostError
from imgdist.files import ManifestEntry, write_manifest
from imgdist.transports import Item, check_transport, finish, prepare

SCHEDULES = ("round-robin", "balanced")
DEFAULT_TRANSPORT = "encoded"
DEFAULT_SCHEDULE = "balanced"
SEED_IN_FLIGHT = 4  # the Livebook's Flow: stages: 4, max_demand: 1
DEFAULT_STALL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Progress:
    """How far a run is: images done (processed or failed) of total, and per-worker counts."""

    done: int
    total: int | None
    failed: int
    per_worker: dict[str, int]


@dataclass
class RunResult:
    """What a run did: outputs in input order, who made each, what failed, which workers were lost."""

    transport: str
    schedule: str
    out_dir: Path | None
    processed: list[ManifestEntry] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    lost_workers: list[str] = field(default_factory=list)
    redone: list[Path] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def outputs(self) -> list[Path]:
        """The processed files, in input order (what the Livebook's `distribute` returns)."""
        return [entry.output for entry in self.processed]

    @property
    def ok(self) -> bool:
        """Whether every image was processed."""
        return not self.failed

    def per_worker(self) -> dict[str, int]:
        """How many images each worker processed."""
        counts: dict[str, int] = {}
        for entry in self.processed:
            counts[entry.worker] = counts.get(entry.worker, 0) + 1
        return counts

    def summary(self) -> str:
        """One paragraph for a person: counts, time, workers, failures and redone work."""
        lines = [
            (
                f"{len(self.processed)} images processed, {len(self.failed)} failed, in {self.elapsed_s:.2f} s "
                f"({self.transport} transport, {self.schedule} schedule)."
            )
        ]
        lines += [f"  {name}: {count}" for name, count in sorted(self.per_worker().items())]
        if self.lost_workers:
            lines.append(
                f"Workers lost during the run: {', '.join(self.lost_workers)}; "
                f"{len(self.redone)} images redone on the others."
            )
        lines += [f"FAILED {source}: {reason}" for source, reason in self.failed]
        return "\n".join(lines)


def check_schedule(schedule: str) -> str:
    """`schedule` if known, else a ParameterError listing the choices."""
    if schedule not in SCHEDULES:
        msg = f"schedule {schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}."
        raise ParameterError(msg)
    return schedule


@dataclass
class _Task:
    worker: Worker
    items: list[Item]


class _Outputs:
    """Assigns each input its output path: never an input, never outside `out_dir`, never twice."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = Path(out_dir).resolve() if out_dir is not None else None
        self._taken: set[Path] = set()

    def plan(self, index: int, source: Path) -> Item:
        source = Path(source)
        folder = self.out_dir or source.resolve().parent
        stem, suffix = Path(source.name).stem, source.suffix
        self._taken.add(source.resolve())
        output = folder / f"{stem}_processed{suffix}"
        counter = 2
        while output in self._taken:
            output = folder / f"{stem}_{counter}_processed{suffix}"
            counter += 1
        self._taken.add(output)
        return Item(index, source, output)


def distribute(
    workers: Sequence[Worker],
    images: Iterable[str | Path],
    *,
    out_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    transport: str = DEFAULT_TRANSPORT,
    schedule: str = DEFAULT_SCHEDULE,
    batch_size: int | None = None,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Process `images` on `workers`; outputs go to `out_dir` (default: beside each source).

    `images` is consumed lazily, so the main process holds only the batches in flight.
    With `manifest`, that JSON file lists every processed image and its worker, even when
    the run stops early.
    """
    check_transport(transport)
    check_schedule(schedule)
    if not workers:
        msg = "no workers given; connect at least one worker (see the worker list) and try again."
        raise ParameterError(msg)
    cluster = workers[0].cluster
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    total = len(images) if isinstance(images, Sequence) else None
    run = _Run(
        list(workers),
        iter(images),
        _Outputs(out_dir),
        transport,
        schedule,
        batch_size or _batch_size(schedule, total, len(workers)),
        stall_timeout_s,
        max_pixels,
        on_progress,
        total,
    )
    result = RunResult(transport, schedule, out_dir)
    started = time.perf_counter()
    try:
        run.execute(cluster, result)
    finally:
        result.elapsed_s = time.perf_counter() - started
        result.processed.sort(key=lambda e: run.order[e.output])
        if manifest is not None:
            write_manifest(Path(manifest), result.processed)
    return result


def _batch_size(schedule: str, total: int | None, n_workers: int) -> int:
    # Round-robin is the Livebook's flow: one image per message. Balanced: about four batches
    # per worker, so per-task overhead is amortised and a slow worker holds back little.
    if schedule == "round-robin":
        return 1
    if total is None:
        return 8
    return max(1, min(64, math.ceil(total / (4 * n_workers))))


class _Run:
    """The state of one `distribute` call (a class only to keep the loop readable)."""

    def __init__(
        self,
        workers,
        images: Iterator,
        outputs: _Outputs,
        transport,
        schedule,
        batch_size,
        stall_timeout_s,
        max_pixels,
        on_progress,
        total,
    ) -> None:
        self.live: list[Worker] = workers
        self.images = images
        self.outputs = outputs
        self.transport = transport
        self.schedule = schedule
        self.batch_size = batch_size
        self.stall_timeout_s = stall_timeout_s
        self.max_pixels = max_pixels
        self.on_progress = on_progress
        self.total = total
        self.retry: deque[Item] = deque()
        self.in_flight: dict[cf.Future, _Task] = {}
        self.order: dict[Path, int] = {}
        self.next_index = 0
        self.turn = 0  # round-robin position
        self.done = 0
        self.per_worker: dict[str, int] = {}

    # --- feeding -------------------------------------------------------------------------
    def _take(self, n: int) -> list[Item]:
        items: list[Item] = []
        while self.retry and len(items) < n:
            items.append(self.retry.popleft())
        while len(items) < n:
            source = next(self.images, None)
            if source is None:
                break
            items.append(self.outputs.plan(self.next_index, Path(source)))
            self.next_index += 1
        return items

    def _load(self, worker: Worker) -> int:
        return sum(1 for task in self.in_flight.values() if task.worker is worker)

    def _next_worker(self) -> Worker | None:
        if self.schedule == "round-robin":
            if len(self.in_flight) >= SEED_IN_FLIGHT:
                return None
            worker = self.live[self.turn % len(self.live)]
            self.turn += 1
            return worker
        # balanced: two batches per worker keep it busy while an answer travels back
        worker = min(self.live, key=self._load)
        return worker if self._load(worker) < 2 else None

    def _fill(self, cluster, result: RunResult) -> None:
        while self.live:
            worker = self._next_worker()
            if worker is None:
                return
            items = self._take(self.batch_size)
            if not items:
                if self.schedule == "round-robin":
                    self.turn -= 1
                return
            metas, payloads, sendable = [], [], []
            for item in items:
                try:
                    meta, payload = prepare(self.transport, item, max_pixels=self.max_pixels)
                except ImgdistError as exc:
                    self._fail(result, item, str(exc))
                    continue
                metas.append(meta)
                payloads.append(payload)
                sendable.append(item)
            if not sendable:
                continue
            args = payloads if self.transport != "path" else []
            future = cluster.submit(
                worker, "process_batch", self.transport, metas, *args, max_pixels=self.max_pixels
            )
            self.in_flight[future] = _Task(worker, sendable)

    # --- collecting ----------------------------------------------------------------------
    def execute(self, cluster, result: RunResult) -> None:
        self._fill(cluster, result)
        while self.in_flight:
            finished, _ = cf.wait(
                list(self.in_flight), timeout=self.stall_timeout_s, return_when=cf.FIRST_COMPLETED
            )
            if not finished:
                busy = sorted({t.worker.name for t in self.in_flight.values()})
                msg = (
                    f"no worker answered for {self.stall_timeout_s:g} s (waiting on {', '.join(busy)}); "
                    f"{len(result.processed)} images were finished and kept. Check the workers, then run "
                    "again with resume to process only what is missing."
                )
                raise RunError(msg, result)
            for future in finished:
                self._collect(cluster, result, future, self.in_flight.pop(future))
            self._fill(cluster, result)

    def _collect(self, cluster, result: RunResult, future: cf.Future, task: _Task) -> None:
        try:
            answer = cluster.outcome(future, task.worker)
        except WorkerLostError:
            self._lose(task.worker, result)
            result.redone.extend(item.source for item in task.items)
            self.retry.extendleft(reversed(task.items))
            if not self.live:
                msg = (
                    f"every worker was lost ({', '.join(result.lost_workers)}); {len(result.processed)} images "
                    "were finished and kept. Start workers again, then run with resume to process the rest."
                )
                raise RunError(msg, result) from None
            return
        worker_name, errors, out_metas, *out_payloads = answer
        for position, item in enumerate(task.items):
            if position in errors:
                self._fail(result, item, errors[position])
                continue
            try:
                finish(self.transport, item, out_metas[position], out_payloads[position])
            except (ImgdistError, OSError) as exc:
                self._fail(result, item, str(exc))
                continue
            self._succeed(result, item, worker_name)

    def _lose(self, worker: Worker, result: RunResult) -> None:
        if worker in self.live:
            self.live.remove(worker)
            result.lost_workers.append(worker.name)

    def _succeed(self, result: RunResult, item: Item, worker_name: str) -> None:
        self.order[item.output] = item.index
        result.processed.append(ManifestEntry(item.source, item.output, worker_name))
        self.per_worker[worker_name] = self.per_worker.get(worker_name, 0) + 1
        self._progress(result)

    def _fail(self, result: RunResult, item: Item, reason: str) -> None:
        result.failed.append((item.source, reason))
        self._progress(result)

    def _progress(self, result: RunResult) -> None:
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(
                Progress(self.done, self.total, len(result.failed), dict(self.per_worker))
            )
