"""`DirectRun`: images and results over the data route, the controller carrying only one task per
worker. Workers pull chunks (two at a time, so the next is on its way while one is processed);
the main reads inputs and writes outputs and nothing else, unless a worker's link is the
bottleneck and the main has CPU to spare: then that worker sends bits and the main encodes.

How each image comes back is decided from measurements made during the run:
- `path` for a worker that shares the main's disk (only names travel);
- otherwise the worker sends the output JPEG (`encoded`: the main only writes bytes), or, when
  the main allows it, the image's bits (`compact`, ~1/6 of the bytes; the main encodes) if the
  worker's link could not carry its JPEGs as fast as it makes them (its link measured from how
  fast its chunks arrive after it asks, less the time the main held each request: the run's
  best such sample; the size of its JPEGs and the time it takes to make one). The main allows
  bits while its loop spent under `MAIN_SPARE` of the last second working rather than waiting
  for workers.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass, field

from imgdist.cluster import Worker
from imgdist.dataroute import DataServer, Event
from imgdist.errors import ImgdistError, WorkerLostError
from imgdist.files import Item
from imgdist.runbase import CONTROLLER_CHECK_S
from imgdist.schedules import MAX_BATCH, BatchRun
from imgdist.transports import finish
from imgdist.tuning import keep_freed_memory

MAIN_SPARE = 0.6  # the main keeps 40% of a core for serving when it encodes for link-bound workers
LOAD_WINDOW_S = 1.0
SERVE_POLL_S = 0.05
END_POLL_S = 0.002
QUEUED_S = 0.0005  # a poll that returned sooner found its messages already queued


@dataclass
class _Peer:
    """One worker's data connection: what it holds and what it measured of its link."""

    worker: Worker
    peer: bytes = b""
    held: dict[int, tuple[list[Item], str, float]] = field(default_factory=dict)
    heard: float = 0.0


class DirectRun(BatchRun):
    """Chunks over the data route to every worker; `routes` gives `path` to those sharing the
    main's disk. Lost workers' images are retried alone at the end, through the controller."""

    def __init__(self, *args, routes: dict[int, str], **kwargs) -> None:
        retry_routes = {eid: "path" if r == "path" else "encoded" for eid, r in routes.items()}
        super().__init__(
            *args,
            transport="encoded",
            schedule="balanced",
            batch_size=None,
            routes=retry_routes,
            **kwargs,
        )
        self.shared = {eid for eid, route in routes.items() if route == "path"}
        self.exhausted = False  # every input has been handed out
        self.chunk_number = 0
        # (end, seconds worked) of each loop turn: the loop's time not spent waiting in poll
        self.busy_marks: deque[tuple[float, float]] = deque()
        self.steps: dict[str, int] = {}  # images sent per step, for the summary

    def execute(self) -> None:
        """Stream every input over the data route, then retry lost workers' images."""
        keep_freed_memory()  # the route's buffers are reused, not faulted in again per image
        server = self.cluster.data_server(os.urandom(16))
        try:
            self._stream(server)
        finally:
            server.close()
        self.result.refused_connections = server.refused
        self.result.steps = dict(self.steps)
        while self.suspects and self.live:
            self._fill(new_work=False)
            self._wait(new_work=False)

    def _stream(self, server: DataServer) -> None:
        tasks, peers = self._start_tasks(server)
        previous_turn = time.monotonic()  # the set-up above counts as a turn
        while tasks:
            # nothing left to hand out or collect: only the tasks' ends are awaited, and
            # ipyparallel does not wake this loop for them, so look often
            only_ends = self.exhausted and not any(peer.held for peer in peers.values())
            poll_s = END_POLL_S if only_ends else SERVE_POLL_S
            # requests first: a worker waiting for data waits while the main writes results
            poll_began = time.monotonic()
            events = sorted(server.serve(poll_s), key=lambda e: e.kind != "next")
            turn_started = time.monotonic()
            # what poll found at once may have waited since the previous turn began: the main
            # held it that long (the worker's measure of its link leaves that time out)
            since = turn_started if turn_started - poll_began > QUEUED_S else previous_turn
            previous_turn = turn_started
            for event in events:
                self._handle(server, peers, event, since)
            self._collect_ended(tasks, peers)
            self._give_up_silent(tasks, peers)
            if time.monotonic() - self.last_controller_check > CONTROLLER_CHECK_S:
                self.check_controller()
                self.last_controller_check = time.monotonic()
            if events:  # a turn with work: how long it worked (time in poll was waiting)
                self.busy_marks.append((time.monotonic(), time.monotonic() - turn_started))

    def _start_tasks(self, server: DataServer) -> tuple[dict, dict[str, _Peer]]:
        """One task per worker: connect to the data route and pull chunks until none are left."""
        tasks, peers = {}, {}
        for worker in self.live:
            future = self.cluster.submit(
                worker,
                "process_direct",
                server.address,
                server.run_id,
                server.public_key,
                max_pixels=self.max_pixels,
            )
            tasks[future] = worker
            peers[worker.name] = _Peer(worker, heard=time.monotonic())
        return tasks, peers

    def _handle(self, server: DataServer, peers: dict[str, _Peer], event: Event, since: float):
        peer = peers.get(event.worker)
        if peer is None:
            return  # a worker of no task of this run: nothing is served to it
        peer.peer, peer.heard = event.peer, time.monotonic()
        if event.kind == "next":
            self._next(server, peer, since=since)
        elif event.kind == "result":
            self._result(peer, event)
        elif event.kind == "bye":
            server.send_bye(event.peer)

    def _collect_ended(self, tasks: dict, peers: dict[str, _Peer]) -> None:
        """Tasks that ended: a lost worker's chunks go round again (and, though a task that
        ended well holds none, its chunks would too)."""
        for future in [f for f in tasks if f.done()]:
            worker = tasks.pop(future)
            peer = peers[worker.name]
            try:
                self.cluster.outcome(future, worker)
            except WorkerLostError:
                self._lose(peer)
                continue
            for items, _, _ in peer.held.values():
                self.suspects.extend(items)
            peer.held.clear()

    def _next(self, server: DataServer, peer: _Peer, *, since: float) -> None:
        step = self._step(peer)
        items = self.take(self._chunk_size())
        sendable, metas, payloads = self._prepared(step, items)
        metas = [[item.index, list(meta)] for item, meta in zip(sendable, metas, strict=True)]
        if not items:
            self.exhausted = True
            server.send_none(peer.peer)
            return
        self.chunk_number += 1
        header = {"chunk": self.chunk_number, "transport": step, "items": metas}
        if step == "encoded":
            header["bits_allowed"] = self._main_load() < MAIN_SPARE
        header["held_s"] = time.monotonic() - since  # for the worker's measure of its link
        peer.held[self.chunk_number] = (sendable, step, time.perf_counter())
        if not server.send_chunk(peer.peer, header, payloads if step != "path" else []):
            self._lose(peer)

    def _chunk_size(self) -> int:
        remaining = self.remaining()
        if remaining is None:
            return 8
        return max(1, min(MAX_BATCH, math.ceil(remaining / (4 * len(self.live)))))

    def _step(self, peer: _Peer) -> str:
        return "path" if peer.worker.engine_id in self.shared else "encoded"

    def _main_load(self) -> float:
        """The share of the last second this loop spent working rather than waiting for
        workers: the main's own measure of how busy it is (its set-up before the first
        request does not count)."""
        now = time.monotonic()
        while len(self.busy_marks) > 1 and now - self.busy_marks[0][0] > LOAD_WINDOW_S:
            self.busy_marks.popleft()
        if not self.busy_marks:
            return 0.0
        start = self.busy_marks[0][0] - self.busy_marks[0][1]  # the first mark's interval start
        busy = sum(worked for _, worked in self.busy_marks)
        return busy / max(now - start, 1e-6)

    def _result(self, peer: _Peer, event: Event) -> None:
        header = event.header
        held = peer.held.pop(header.get("chunk"), None)
        if held is None:
            return  # not a chunk it holds: nothing it sent is written
        items, step, sent = held
        by_index = {item.index: item for item in items}
        done = header.get("done", [])
        now = time.perf_counter()
        self.span(event.worker, sent - self.started, now - self.started, len(items))
        outputs = iter(event.frames) if step != "path" else None
        for index, out_meta, made_by in done:
            item = by_index.pop(index, None)
            payload = next(outputs).buffer if outputs is not None else b""
            if item is None or made_by not in (step, "compact"):
                continue  # not an image of this chunk, or a step the main did not offer
            try:
                finish(made_by, item, out_meta, payload, max_pixels=self.max_pixels)
            except (ImgdistError, OSError) as exc:
                self.fail(item, str(exc))
                continue
            self.steps[made_by] = self.steps.get(made_by, 0) + 1
            self.succeed(item, event.worker)
        for index, reason in header.get("errors", []):
            item = by_index.pop(index, None)
            if item is not None:
                self.fail(item, reason)
        if by_index:  # a result that left images out: they go round again
            self.suspects.extend(by_index.values())

    def _lose(self, peer: _Peer) -> None:
        items = [item for held in peer.held.values() for item in held[0]]
        peer.held.clear()
        self.lose([peer.worker], items)

    def _give_up_silent(self, tasks: dict, peers: dict[str, _Peer]) -> None:
        """A worker silent for the stall timeout while it holds chunks, or that has not even
        connected (its engine busy or stuck), is given up."""
        now = time.monotonic()
        for future, worker in list(tasks.items()):
            peer = peers[worker.name]
            waiting_on_it = peer.held or not peer.peer
            if waiting_on_it and now - peer.heard > self.stall_timeout_s:
                tasks.pop(future)
                self.cluster.abandon(worker, [future])
                self.result.hung_workers.append(worker.name)
                self._lose(peer)
