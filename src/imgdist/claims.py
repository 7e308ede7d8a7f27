"""The `path` transport's `balanced` schedule: every worker gets the same window of names in
one message and claims chunk after chunk by creating a claim file exclusively on the shared
disk, so there is one message per worker per window and a slow worker simply claims fewer."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import math
import shutil
import time
import uuid
from pathlib import Path

from imgdist.cluster import Worker
from imgdist.files import Item
from imgdist.runbase import CONTROLLER_CHECK_S, PROGRESS_POLL_S
from imgdist.schedules import MAX_BATCH, BatchRun

CLAIM_WINDOW = 1024


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
