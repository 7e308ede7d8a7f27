"""Which way each worker's images travel when the transport is `auto`.

A worker that reads the main's input files at the same paths (the same bytes, not merely a file
of that name) and can write into the output folder (an atomic rename that reads back) shares the
main's disk: only names cross (`path`). Any other worker gets the files' bytes. Mixed
clusters are normal: a run can have both. The answers are remembered per engine and folder.
Workers that do not share the disk get `direct`: the data route (`imgdist.dataroute`).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imgdist.cluster import DEFAULT_ANSWER_TIMEOUT_S, Cluster, Worker
from imgdist.engine import file_digest

SHARED = "path"
NOT_SHARED = "direct"  # the data route: bytes between main and worker, not via the controller


@dataclass(frozen=True)
class Route:
    """How one worker's images travel, and why not over the shared disk when they don't."""

    transport: str
    why: str = ""

    def __str__(self) -> str:
        return self.transport + (f" ({self.why})" if self.why else "")


def input_samples(inputs: Iterable[str | Path]) -> list[tuple[str, int, str]]:
    """(real path, size, digest) of the first input in each folder the inputs come from."""
    folders: dict[str, str] = {}  # folder as given -> its real path
    samples: dict[str, tuple[str, int, str]] = {}
    for raw in inputs:
        folder, name = os.path.split(os.fspath(raw))
        real_folder = folders.get(folder)
        if real_folder is None:
            real_folder = folders[folder] = os.path.realpath(folder or ".")
        if real_folder in samples:
            continue
        path = str(Path(real_folder, name))
        try:
            samples[real_folder] = (path, Path(path).stat().st_size, file_digest(path))
        except OSError:
            continue  # an input the main cannot read fails on its own later
    return list(samples.values())


def plan_routes(
    cluster: Cluster,
    workers: Sequence[Worker],
    samples: Sequence[tuple[str, int, str]],
    out_dir: Path,
) -> dict[int, Route]:
    """Each worker's route (by engine id): `path` when it passes the shared-disk check for every
    sampled input folder and `out_dir`, else `compact` with the reason."""
    key = "|".join([str(out_dir), *sorted(path for path, _, _ in samples)])
    unknown = [w for w in workers if (w.engine_id, key) not in cluster.shared_answers]
    if unknown:
        token = uuid.uuid4().hex
        probe = Path(out_dir) / f".imgdist-probe-{token}"
        try:
            probe.write_text(token)
        except OSError as exc:  # the main cannot write there: no shared disk to rely on
            return {
                w.engine_id: Route(NOT_SHARED, f"probe not written: {exc.strerror}")
                for w in workers
            }
        try:
            futures = {
                w: cluster.submit(w, "check_shared", list(samples), str(out_dir), token)
                for w in unknown
            }
            cf.wait(list(futures.values()), timeout=DEFAULT_ANSWER_TIMEOUT_S)
        finally:
            probe.unlink(missing_ok=True)
        for worker, future in futures.items():
            if future.done() and future.exception() is None:
                problems = future.result(timeout=0)
            else:
                problems = ["did not answer the shared-disk check"]
            cluster.shared_answers[(worker.engine_id, key)] = "; ".join(problems[:2])
    routes = {}
    for worker in workers:
        why = cluster.shared_answers[(worker.engine_id, key)]
        routes[worker.engine_id] = Route(NOT_SHARED, why) if why else Route(SHARED)
    return routes
