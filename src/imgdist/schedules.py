"""How images are shared out among workers while a run streams through its inputs.

- `BatchRun`: batches that carry their images (any transport). `round-robin` is the
  Livebook's: one image per message, worker after worker, up to 4 in flight. `balanced`
  sends guided batches (large first, smaller towards the end), two in flight per worker, so
  per-message overhead is amortised and a slow worker holds back only a small batch.
- `ClaimRun` (in `claims`): `path` transport with `balanced` schedule, claims on the shared disk.
- `DirectRun` (in `streaming`): the `direct` transport's data route.

Both resubmit the work of a worker that dies, or that stops making progress for the stall
timeout while still answering heartbeats (its queued work is aborted and it is interrupted),
to the workers still alive. Such images are retried one at a time, each alone on a worker
that holds nothing else, so one file that kills or hangs its worker (a decoder crash, an
out-of-memory kill) is found: after `allowed_deaths` workers were lost with it, it fails alone,
named, instead of walking through the cluster (Dask's `allowed-failures`).
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import time
from dataclasses import dataclass

from imgdist.cluster import Worker
from imgdist.errors import ImgdistError
from imgdist.files import Item
from imgdist.runbase import CONTROLLER_CHECK_S, PROGRESS_POLL_S, RunBase
from imgdist.transports import finish, prepare

SEED_IN_FLIGHT = 4  # the Livebook's Flow: stages: 4, max_demand: 1
BATCHES_IN_FLIGHT_PER_WORKER = 2
MAX_BATCH = 16  # bounds the bytes in flight: 2 x workers x 16 images
# Guided batches shrink no further than this (less for jobs too small to give every worker two):
# each message costs a round trip, and over 100 Mbit/s links a tail of one-image batches made
# 32 portraits take 185 ms instead of 154 ms with batches of 4 (measured side by side).
MIN_BATCH = 4


@dataclass
class _Batch:
    worker: Worker
    items: list[Item]
    sent: float
    alone: bool = False  # a suspect, sent alone: its worker gets nothing else meanwhile
    transport: str = ""


class BatchRun(RunBase):
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
        sendable, metas, payloads = self._prepared(transport, items)
        if not sendable:
            return
        if self._load(worker) == 0:
            self.heard[worker.engine_id] = time.monotonic()
        args = payloads if transport != "path" else []
        future = self.cluster.submit(
            worker, "process_batch", transport, metas, *args, max_pixels=self.max_pixels
        )
        self.in_flight[future] = _Batch(worker, sendable, time.perf_counter(), alone, transport)

    def _prepared(self, transport: str, items: list[Item]) -> tuple[list[Item], list, list]:
        """(items, metas, payloads) ready to send by `transport`; an image the main cannot
        read fails alone and is left out."""
        sendable, metas, payloads = [], [], []
        for item in items:
            try:
                meta, payload = prepare(transport, item, max_pixels=self.max_pixels)
            except (ImgdistError, OSError) as exc:
                self.fail(item, str(exc))
                continue
            sendable.append(item)
            metas.append(meta)
            payloads.append(payload)
        return sendable, metas, payloads

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
