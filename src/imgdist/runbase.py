"""What every schedule shares: the run's bookkeeping (who did what, the manifest checkpoints,
progress), and what happens when a worker is lost or stalls: its images go to the workers
still alive, retried one at a time, each alone on a worker that holds nothing else, so one file
that kills or hangs its worker (a decoder crash, an out-of-memory kill) is found: after
`allowed_deaths` workers were lost with it, it fails alone, named, instead of walking through
the cluster (Dask's `allowed-failures`)."""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from imgdist.cluster import Cluster, Worker
from imgdist.errors import RunError, WorkerLostError
from imgdist.files import Item, ManifestEntry, OutputPlan, remove_partial, write_manifest
from imgdist.results import Progress, RunResult, Span

ALLOWED_DEATHS = 2  # workers an image may take down with it before it is given up
PROGRESS_POLL_S = 0.25
MANIFEST_CHECKPOINT_S = 2.0
CONTROLLER_CHECK_S = 2.0
REJOIN_CHECK_S = 1.0


class RunBase:
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
        # output (as text: a Path's hash costs ~4 us the first time) -> its input's position
        self.order: dict[str, int] = {}
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
                self.order[str(kept.output)] = self.taken
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
        output = str(item.output)
        if output in self.order:  # first report wins: one output, one manifest entry
            self.result.duplicates.append((item.source, worker_name))
            return
        self.order[output] = item.index
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
