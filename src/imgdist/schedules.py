"""How images are shared out among workers while a run streams through its inputs.

- `BatchRun`: batches that carry their images (any transport). `round-robin` is the
  Livebook's: one image per message, worker after worker, up to 4 in flight. `balanced`
  sends guided batches (large first, smaller towards the end), two in flight per worker, so
  per-message overhead is amortised and a slow worker holds back only a small batch.
- `ClaimRun`: `path` transport with `balanced` schedule. Every worker gets the same window
  of names in one message and claims images one by one from a counter on the shared disk,
  so there is one message per worker per window and perfect balance.

Both resubmit the work of a worker that dies, or that stops making progress for the stall
timeout while still answering heartbeats (its queued work is aborted and it is interrupted),
to the workers still alive. Such images are retried one at a time, each alone on a worker
that holds nothing else, so one file that kills or hangs its worker (a decoder crash, an
out-of-memory kill) is found: after `allowed_deaths` workers were lost with it, it fails alone,
named, instead of walking through the cluster (Dask's `allowed-failures`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import math
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imgdist.cluster import Cluster, Worker
from imgdist.errors import ImgdistError, RunError, WorkerLostError
from imgdist.files import Item, ManifestEntry, OutputPlan, remove_partial, write_manifest
from imgdist.results import Progress, RunResult, Span
from imgdist.transports import finish, prepare

SEED_IN_FLIGHT = 4  # the Livebook's Flow: stages: 4, max_demand: 1
BATCHES_IN_FLIGHT_PER_WORKER = 2
MAX_BATCH = 16  # bounds the bytes in flight: 2 x workers x 16 images
# Guided batches shrink no further than this (less for jobs too small to give every worker two):
# each message costs a round trip, and over 100 Mbit/s links a tail of one-image batches made
# 32 portraits take 185 ms instead of 154 ms with batches of 4 (measured side by side).
MIN_BATCH = 4
CLAIM_WINDOW = 1024
ALLOWED_DEATHS = 2  # workers an image may take down with it before it is given up
PROGRESS_POLL_S = 0.25
MANIFEST_CHECKPOINT_S = 2.0
CONTROLLER_CHECK_S = 2.0
REJOIN_CHECK_S = 1.0


class _Run:
    """What every schedule shares: the input feed, retries, outcomes and progress."""

    def __init__(
        self,
        cluster: Cluster,
        workers: list[Worker],
        images: Iterator,
        plan: OutputPlan,
        result: RunResult,
        *,
        total: int | None,
        stall_timeout_s: float,
        max_pixels: int,
        on_progress: Callable[[Progress], None] | None,
        manifest: Path | None = None,
        previous: dict[Path, ManifestEntry] | None = None,
        allowed_deaths: int = ALLOWED_DEATHS,
    ) -> None:
        self.cluster = cluster
        self.live = list(workers)
        self.images = images
        self.plan = plan
        self.result = result
        self.total = total
        self.stall_timeout_s = stall_timeout_s
        self.max_pixels = max_pixels
        self.on_progress = on_progress
        self.manifest = manifest
        self.previous = previous or {}
        self.allowed_deaths = allowed_deaths
        # images a lost worker held: each is retried alone, on a worker holding nothing else
        self.suspects: deque[Item] = deque()
        self.deaths: dict[int, list[str]] = {}  # image index -> workers lost while holding it
        self.taken = 0
        self.order: dict[Path, int] = {}
        self.per_worker: dict[str, int] = {}
        self.last_checkpoint = time.monotonic()
        self.seen_ids = set(cluster.engine_ids)
        self.last_rejoin_check = 0.0
        self.last_controller_check = time.monotonic()
        # the timeline's zero, on this process's clock and on the wall clock (engines report in it)
        self.started = time.perf_counter()
        self.started_wall = time.time()

    def take(self, n: int) -> list[Item]:
        """Up to `n` new items, read lazily from the input.

        Inputs whose output a previous run finished (when resuming) are kept, not sent.
        """
        items: list[Item] = []
        while len(items) < n:
            source = next(self.images, None)
            if source is None:
                break
            kept = self.previous.pop(Path(source).resolve(), None) if self.previous else None
            if kept is not None:  # its output keeps its name, which the plan holds reserved
                self.order[kept.output] = self.taken
                self.result.processed.append(kept)
                self.result.resumed += 1
            else:
                items.append(self.plan.item(self.taken, source))
            self.taken += 1
        return items

    def manifest_entries(self) -> list[ManifestEntry]:
        """What the manifest lists: this run's outputs, and (when resuming) the previous run's
        outputs of inputs not reached yet or not part of this run, which stay valid."""
        return [*self.result.processed, *self.previous.values()]

    def remaining(self) -> int | None:
        """Images not yet handed out, when the total is known."""
        return None if self.total is None else len(self.suspects) + self.total - self.taken

    def lose(self, workers: list[Worker], items: list[Item]) -> None:
        """`workers` died (or hung) holding `items`: drop them; each item is retried alone on the
        others, or fails once `allowed_deaths` workers were lost with it."""
        for worker in workers:
            if worker in self.live:
                self.live.remove(worker)
                self.result.lost_workers.append(worker.name)
        names = [w.name for w in workers]
        for item in items:
            remove_partial(item.output)
            lost_with = self.deaths.setdefault(item.index, [])
            lost_with.extend(names)
            if len(lost_with) >= self.allowed_deaths:
                self.fail(
                    item,
                    f"{item.source}: {len(lost_with)} workers were lost while processing it "
                    f"({', '.join(lost_with)}), so it is not tried again; the file may crash "
                    "or hang the decoder, or need more memory than a worker has.",
                )
                continue
            self.result.redone.append(item.source)
            self.suspects.append(item)
        if not self.live:
            msg = (
                f"every worker was lost ({', '.join(self.result.lost_workers)}); "
                f"{len(self.result.processed)} images were finished and kept. Start workers "
                "again, then run with resume to process the rest."
            )
            raise RunError(msg, self.result)

    def rejoin(self) -> None:
        """Bring back lost workers whose name a newly registered engine has (a restarted worker)."""
        lost = set(self.result.lost_workers) - {w.name for w in self.live}
        if not lost or time.monotonic() - self.last_rejoin_check < REJOIN_CHECK_S:
            return
        self.last_rejoin_check = time.monotonic()
        new_ids = set(self.cluster.engine_ids) - self.seen_ids
        for worker in self.cluster.identify(new_ids, timeout_s=REJOIN_CHECK_S):
            if worker.name in lost:
                self.seen_ids.add(worker.engine_id)
                self.live.append(worker)
                self.result.rejoined.append(worker.name)

    def succeed(self, item: Item, worker_name: str) -> None:
        if item.output in self.order:  # first report wins: one output, one manifest entry
            self.result.duplicates.append((item.source, worker_name))
            return
        self.order[item.output] = item.index
        self.result.processed.append(ManifestEntry(item.source, item.output, worker_name))
        self.per_worker[worker_name] = self.per_worker.get(worker_name, 0) + 1
        self.progress()
        if (
            self.manifest is not None
            and time.monotonic() - self.last_checkpoint > MANIFEST_CHECKPOINT_S
        ):
            # so that even a main process killed mid-run leaves a manifest to resume from
            write_manifest(self.manifest, self.manifest_entries())
            self.last_checkpoint = time.monotonic()

    def span(self, worker_name: str, start_s: float, end_s: float, images: int) -> None:
        """Note on the timeline that `worker_name` held `images` from `start_s` to `end_s`
        (seconds since the run started)."""
        start_s = max(0.0, start_s)
        self.result.timeline.append(Span(worker_name, start_s, max(start_s, end_s), images))

    def fail(self, item: Item, reason: str) -> None:
        self.result.failed.append((item.source, reason))
        self.progress()

    def progress(self, done: int | None = None) -> None:
        if self.on_progress is not None:
            finished = len(self.result.processed) + len(self.result.failed)
            self.on_progress(
                Progress(
                    done or finished, self.total, len(self.result.failed), dict(self.per_worker)
                )
            )

    def check_controller(self) -> None:
        """Raise RunError at once if the controller has gone away (nothing would ever answer)."""
        if not self.cluster.controller_reachable():
            host, port = self.cluster.controller_address()
            msg = (
                f"the controller at {host}:{port} is gone; {len(self.result.processed)} images were "
                "finished and kept. Start the cluster again, then run with resume to process the rest."
            )
            raise RunError(msg, self.result)

    def stalled(self, waiting_on: list[Worker]) -> RunError:
        busy = ", ".join(sorted({w.name for w in waiting_on}))
        msg = (
            f"no worker answered for {self.stall_timeout_s:g} s (waiting on {busy}); "
            f"{len(self.result.processed)} images were finished and kept. Check the workers, "
            "then run again with resume to process only what is missing."
        )
        return RunError(msg, self.result)

    def collect(self, future: cf.Future, worker: Worker) -> list | None:
        """The engine's answer, or None after handling the loss of its worker."""
        try:
            return self.cluster.outcome(future, worker)
        except WorkerLostError:
            return None


@dataclass
class _Batch:
    worker: Worker
    items: list[Item]
    sent: float
    alone: bool = False  # a suspect, sent alone: its worker gets nothing else meanwhile
    transport: str = ""


class BatchRun(_Run):
    """Batches that carry their images: round-robin (the Livebook's) or guided balanced."""

    def __init__(
        self,
        *args,
        transport: str,
        schedule: str,
        batch_size: int | None,
        routes: dict[int, str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.transport = transport
        self.routes = routes or {}  # engine id -> its transport, when workers differ
        self.schedule = schedule
        self.batch_size = batch_size
        self.turn = 0
        self.in_flight: dict[cf.Future, _Batch] = {}
        self.heard: dict[int, float] = {}  # engine id -> last answer, or send to an idle worker

    def _size(self) -> int:
        if self.schedule == "round-robin":
            return 1
        if self.batch_size:
            return self.batch_size
        remaining = self.remaining()
        if remaining is None or self.total is None:
            return 8
        # guided: a share of what is left, so batches shrink as the run nears its end
        guided = math.ceil(remaining / (2 * BATCHES_IN_FLIGHT_PER_WORKER * len(self.live)))
        smallest = min(MIN_BATCH, math.ceil(self.total / (2 * len(self.live))))
        return max(1, smallest, min(MAX_BATCH, guided))

    def _load(self, worker: Worker) -> int:
        batches = [b for b in self.in_flight.values() if b.worker is worker]
        return len(batches) + (BATCHES_IN_FLIGHT_PER_WORKER if any(b.alone for b in batches) else 0)

    def _next_worker(self) -> Worker | None:
        candidates = self.live
        if self.suspects and len(candidates) > 1:
            # keep one worker from new work, so it drains and can take a suspect alone
            reserved = min(candidates, key=self._load)
            candidates = [w for w in candidates if w is not reserved]
        if self.schedule == "round-robin":
            if len(self.in_flight) >= SEED_IN_FLIGHT:
                return None
            worker = candidates[self.turn % len(candidates)]
            return worker if self._load(worker) < BATCHES_IN_FLIGHT_PER_WORKER else None
        worker = min(candidates, key=self._load)
        return worker if self._load(worker) < BATCHES_IN_FLIGHT_PER_WORKER else None

    def _fill(self, *, new_work: bool = True) -> None:
        self.rejoin()
        while self.live and self.suspects:
            idle = next((w for w in self.live if self._load(w) == 0), None)
            if idle is None:
                break
            self._send(idle, [self.suspects.popleft()], alone=True)
        while new_work and self.live:
            worker = self._next_worker()
            if worker is None:
                return
            items = self.take(self._size())
            if not items:
                return
            self.turn += 1
            self._send(worker, items)

    def _send(self, worker: Worker, items: list[Item], *, alone: bool = False) -> None:
        transport = self.routes.get(worker.engine_id, self.transport)
        metas, payloads, sendable = [], [], []
        for item in items:
            try:
                meta, payload = prepare(transport, item, max_pixels=self.max_pixels)
            except (ImgdistError, OSError) as exc:  # the main cannot read it: it fails alone
                self.fail(item, str(exc))
                continue
            metas.append(meta)
            payloads.append(payload)
            sendable.append(item)
        if not sendable:
            return
        if self._load(worker) == 0:
            self.heard[worker.engine_id] = time.monotonic()
        args = payloads if transport != "path" else []
        future = self.cluster.submit(
            worker, "process_batch", transport, metas, *args, max_pixels=self.max_pixels
        )
        self.in_flight[future] = _Batch(worker, sendable, time.perf_counter(), alone, transport)

    def execute(self) -> None:
        """Run until every input is processed or failed."""
        self._fill()
        self._wait(new_work=True)

    def _wait(self, *, new_work: bool) -> None:
        """Collect answers until nothing is in flight, sending more (new images when
        `new_work`, else only lost workers' images) as workers free up."""
        while self.in_flight or (self.suspects and self.live):
            if not self.in_flight:
                self._fill(new_work=new_work)
                continue
            finished, _ = cf.wait(
                list(self.in_flight), timeout=PROGRESS_POLL_S, return_when=cf.FIRST_COMPLETED
            )
            if not finished:
                self._give_up_on_hung_workers()
                if time.monotonic() - self.last_controller_check > CONTROLLER_CHECK_S:
                    self.check_controller()
                    self.last_controller_check = time.monotonic()
                continue
            answered = [(future, self.in_flight.pop(future)) for future in finished]
            # new work goes out before the main writes these results, so workers never wait on it
            self._fill(new_work=new_work)
            for future, batch in answered:
                self._answer(future, batch)
            # a lost worker's images go out again now, even if nothing else is in flight
            if self.suspects:
                self._fill(new_work=new_work)

    def _give_up_on_hung_workers(self) -> None:
        """A worker that holds work but has answered nothing for the stall timeout is given up:
        its queued work is aborted, it is interrupted, and its images go to the others."""
        now = time.monotonic()
        holding = {b.worker.engine_id: b.worker for b in self.in_flight.values()}
        hung = {
            engine_id: worker
            for engine_id, worker in holding.items()
            if now - self.heard.get(engine_id, now) > self.stall_timeout_s
        }
        if hung and len(hung) == len(self.live):  # nobody answers: the run cannot go on
            raise self.stalled(list(hung.values()))
        for worker in hung.values():
            futures = [f for f, b in self.in_flight.items() if b.worker is worker]
            items = [item for f in futures for item in self.in_flight.pop(f).items]
            self.cluster.abandon(worker, futures)
            self.result.hung_workers.append(worker.name)
            self.lose([worker], items)

    def _answer(self, future: cf.Future, batch: _Batch) -> None:
        answer = self.collect(future, batch.worker)
        if answer is None:
            self.lose([batch.worker], batch.items)
            return
        self.heard[batch.worker.engine_id] = time.monotonic()
        worker_name, errors, out_metas, *out_payloads = answer
        # ipyparallel's futures sit in reference cycles until a full garbage collection; the
        # answer list is shared with them, so emptying it frees the payloads now.
        answer.clear()
        now = time.perf_counter()
        self.span(worker_name, batch.sent - self.started, now - self.started, len(batch.items))
        for position, item in enumerate(batch.items):
            if position in errors:
                self.fail(item, errors[position])
                continue
            try:
                finish(
                    batch.transport,
                    item,
                    out_metas[position],
                    out_payloads[position],
                    max_pixels=self.max_pixels,
                )
            except (ImgdistError, OSError) as exc:
                self.fail(item, str(exc))
                continue
            self.succeed(item, worker_name)
            out_payloads[position] = b""


class ClaimRun(BatchRun):
    """`path` + `balanced`: each window of names goes to every worker, cut into chunks that the
    workers claim with files created exclusively on the shared disk (correct where `flock` is
    not shared between machines). Workers report claims and finished images as they go.

    Images of lost workers are retried one at a time between windows, as batches of one.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, transport="path", schedule="balanced", batch_size=1, **kwargs)

    def execute(self) -> None:
        """Run window after window until every input is processed or failed."""
        while self.live:
            self.rejoin()
            if self.suspects:
                self._fill(new_work=False)
                self._wait(new_work=False)
                continue
            window = self.take(CLAIM_WINDOW)
            if not window:
                return
            self._window(window)

    def _window(self, items: list[Item]) -> None:
        # the claims of this window: a folder beside the outputs, one file per claimed chunk
        claims = Path(self.plan.out_dir or items[0].output.parent) / (
            f".imgdist-claims-{uuid.uuid4().hex[:12]}"
        )
        claims.mkdir(parents=True)
        try:
            _Window(self, items, claims).share()
        finally:
            shutil.rmtree(claims, ignore_errors=True)

    def chunks(self, items: list[Item]) -> list[list[Item]]:
        """The window cut into guided chunks: a share of what is left, at most MAX_BATCH, so
        the workers' last chunks are small and they finish together."""
        chunks, start = [], 0
        while start < len(items):
            size = max(1, min(MAX_BATCH, math.ceil((len(items) - start) / (4 * len(self.live)))))
            chunks.append(items[start : start + size])
            start += size
        return chunks


class _Window:
    """One window of a ClaimRun: sent to every worker, followed through their reports."""

    def __init__(self, run: ClaimRun, items: list[Item], claims: Path) -> None:
        self.run = run
        self.items = items
        self.claims = claims
        self.by_index = {item.index: item for item in items}
        self.handled: dict[int, str] = {}  # image index -> the worker whose report counted
        self.reports: dict[cf.Future, set[str]] = {}
        self.chunks: list[list[Item]] = []
        self.heard_any = False  # a report or an answer from any worker in this window

    def share(self) -> None:
        run = self.run
        chunks = self.chunks = run.chunks(self.items)
        names = [
            [(item.index, item.real_source or str(item.source), str(item.output)) for item in chunk]
            for chunk in chunks
        ]
        futures = {
            run.cluster.submit(
                worker, "process_claimed", names, str(self.claims), max_pixels=run.max_pixels
            ): worker
            for worker in run.live
        }
        self.reports = {future: set() for future in futures}
        now = time.monotonic()
        heard = {worker.engine_id: now for worker in futures.values()}
        lost: list[Worker] = []
        while futures:
            finished, _ = cf.wait(
                list(futures), timeout=PROGRESS_POLL_S, return_when=cf.FIRST_COMPLETED
            )
            for future, worker in futures.items():
                if self._read_reports(future):
                    heard[worker.engine_id] = time.monotonic()
                    self.heard_any = True
            for future in finished:
                worker = futures.pop(future)
                self.heard_any = True
                answer = run.collect(future, worker)
                if answer is None:
                    lost.append(worker)
                    continue
                worker_name, done, errors, times = answer
                self._take(
                    {"done": list(zip(done, times, strict=True)), "errors": list(errors.items())},
                    worker_name,
                )
            if not finished:
                if time.monotonic() - run.last_controller_check > CONTROLLER_CHECK_S:
                    run.check_controller()
                    run.last_controller_check = time.monotonic()
                lost += self._hung(futures, heard)
        self._settle(lost)

    def _read_reports(self, future: cf.Future) -> bool:
        """Handle what the task behind `future` published since last time; whether there was any."""
        news = False
        for key, (worker_name, report) in self.run.cluster.published(future).items():
            if key not in self.reports[future]:
                self.reports[future].add(key)
                self._take(report, worker_name)
                news = True
        return news

    def _take(self, report: dict, worker_name: str) -> None:
        """A worker's report: images done or failed (first report wins; a second one is noted)."""
        run = self.run
        for index, (start, end) in report.get("done", []):
            if self._first(index, worker_name):
                run.span(worker_name, start - run.started_wall, end - run.started_wall, 1)
                run.succeed(self.by_index[index], worker_name)
        for index, reason in report.get("errors", []):
            if self._first(index, worker_name):
                run.fail(self.by_index[index], reason)

    def _first(self, index: int, worker_name: str) -> bool:
        earlier = self.handled.get(index)
        if earlier is None:
            self.handled[index] = worker_name
            return True
        if earlier != worker_name:
            self.run.result.duplicates.append((self.by_index[index].source, worker_name))
        return False

    def _hung(self, futures: dict[cf.Future, Worker], heard: dict[int, float]) -> list[Worker]:
        """Workers silent (no claim, no image, no answer) for the stall timeout are given up,
        unless nobody at all has been heard from: then the run cannot go on."""
        run = self.run
        now = time.monotonic()
        silent = {
            f: w for f, w in futures.items() if now - heard[w.engine_id] > run.stall_timeout_s
        }
        if not silent:
            return []
        if not self.heard_any:
            raise run.stalled(list(silent.values()))
        for future, worker in silent.items():
            futures.pop(future)
            run.cluster.abandon(worker, [future])
            run.result.hung_workers.append(worker.name)
        return list(silent.values())

    def _settle(self, lost: list[Worker]) -> None:
        """Images claimed by lost workers and never reported go round again, one at a time."""
        owners = {}
        for entry in self.claims.iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    owners[int(entry.name)] = entry.read_text()
        lost_names = {w.name for w in lost}
        orphans: list[Item] = []
        for number, chunk in enumerate(self.chunks):
            unhandled = [item for item in chunk if item.index not in self.handled]
            if unhandled and owners.get(number) in lost_names:
                orphans += unhandled
            elif unhandled:
                self.run.suspects.extend(unhandled)  # never claimed, or its owner answered
        if lost:
            self.run.lose(lost, orphans)
