"""Worker names as people type them: checking them, finding their engines, and the connected list."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from imgdist.cluster import Cluster, Worker
from imgdist.errors import VersionMismatchError, WorkerNameError
from imgdist.names import check_names


def resolve(
    cluster: Cluster, typed: Sequence[str], *, known: Iterable[Worker] | None = None
) -> list[Worker]:
    """The workers named by `typed`, in order, or WorkerNameError listing the names that exist."""
    names = check_names(typed)
    by_name = {w.name: w for w in (known if known is not None else cluster.workers())}
    if len(names) > len(by_name):
        have = ", ".join(sorted(by_name)) or "none"
        msg = (
            f"{len(names)} workers named but only {len(by_name)} engines are running ({have}); "
            "start more workers or name fewer."
        )
        raise WorkerNameError(msg)
    missing = [n for n in names if n not in by_name]
    if missing:
        have = ", ".join(sorted(by_name)) or "none: no engine is registered"
        msg = f"no engine is named {', '.join(map(repr, missing))}; the engines are: {have}."
        raise WorkerNameError(msg)
    chosen = [by_name[n] for n in names]
    problems = [w.problem for w in chosen if w.problem]
    if problems:
        raise VersionMismatchError(" ".join(problems))
    return chosen


@dataclass(frozen=True)
class WorkerState:
    """One row of the worker panel."""

    name: str
    host: str
    state: str  # "idle", "busy", "not connected" or "gone"
    processed: int


def wait_for_workers(cluster: Cluster, typed: Sequence[str], *, timeout_s: float) -> list[Worker]:
    """The named workers once all have registered (workers on other machines join when they
    start), or after `timeout_s` the error saying which names exist."""
    names = check_names(typed)
    deadline = time.monotonic() + timeout_s
    while True:
        known = cluster.workers(timeout_s=min(10.0, timeout_s))
        present = {w.name for w in known}
        if set(names) <= present or time.monotonic() > deadline:
            return resolve(cluster, names, known=known)
        time.sleep(0.25)


class Connections:
    """The workers this notebook is connected to: the Livebook's `Node.list(:connected)`."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._connected: dict[str, Worker] = {}

    def connect(self, typed: Sequence[str]) -> list[Worker]:
        """Connect the named workers (all must exist); returns the connected list."""
        for worker in resolve(self.cluster, typed):
            self._connected[worker.name] = worker
        return self.list()

    def disconnect(self, typed: Sequence[str]) -> list[Worker]:
        """Disconnect the named workers (names not connected are ignored); returns the connected list."""
        for name in check_names(typed):
            self._connected.pop(name, None)
        return self.list()

    def list(self) -> list[Worker]:
        """Connected workers whose engines are still registered, in connection order."""
        alive = set(self.cluster.engine_ids)
        return [w for w in self._connected.values() if w.engine_id in alive]

    def names(self) -> list[str]:
        """Names of the connected workers."""
        return [w.name for w in self.list()]

    def states(self, known: Iterable[Worker], processed: dict[str, int]) -> list[WorkerState]:
        """The panel: every known or connected worker, its state and how many images it processed."""
        alive = set(self.cluster.engine_ids)
        busy = self.cluster.busy_engine_ids()
        rows: dict[str, WorkerState] = {}
        for worker in [*known, *self._connected.values()]:
            if worker.engine_id not in alive:
                state = "gone"
            elif worker.name not in self._connected:
                state = "not connected"
            else:
                state = "busy" if worker.engine_id in busy else "idle"
            rows[worker.name] = WorkerState(
                worker.name, worker.host, state, processed.get(worker.name, 0)
            )
        return list(rows.values())
