"""`distribute(workers, images)`: the Livebook's function, streaming, with a choice of transport and schedule.

Images go to workers; each worker thresholds them and draws its own name; the main process
ends up with `<name>_processed<ext>` files and, optionally, a manifest of who did what.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from imgdist.claims import ClaimRun
from imgdist.cluster import Cluster, Worker
from imgdist.codec import DEFAULT_MAX_PIXELS, decode, read_file
from imgdist.defaults import (
    DEFAULT_SCHEDULE,
    DEFAULT_STALL_TIMEOUT_S,
    DEFAULT_TRANSPORT,
    SCHEDULES,
)
from imgdist.errors import ImgdistError, ParameterError
from imgdist.files import OutputPlan, finished_entries, write_manifest
from imgdist.lock import FolderLock
from imgdist.results import Progress, RunResult
from imgdist.routes import NOT_SHARED, Route, input_samples, plan_routes
from imgdist.runbase import ALLOWED_DEATHS
from imgdist.schedules import BatchRun
from imgdist.streaming import DirectRun
from imgdist.transports import TRANSPORTS, check_transport

__all__ = ["SCHEDULES", "Progress", "RunResult", "check_schedule", "distribute"]


def check_schedule(schedule: str) -> str:
    """`schedule` if known, else a ParameterError listing the choices."""
    if schedule not in SCHEDULES:
        msg = f"schedule {schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}."
        raise ParameterError(msg)
    return schedule


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
    resume: bool = False,
    input_roots: Sequence[str | Path] = (),
    allowed_deaths: int = ALLOWED_DEATHS,
) -> RunResult:
    """Process `images` on `workers`; outputs go to `out_dir` (default: beside each source).

    `images` is read lazily, so the main process holds only what is in flight. `transport`
    is how images travel (`auto`, `pixels`, `encoded`, `compact`, `path`, `direct`) and `schedule` how they are
    shared out (`balanced`, `round-robin`). With `manifest`, that JSON file lists every
    processed image and its worker, even when the run stops early; with `resume` too, images
    whose output that manifest lists and that still decodes are kept, not processed again.
    `input_roots` are the folders the images were found in: each output keeps its image's
    sub-folder under its root, inside `out_dir`. Images a worker held when it died (or stopped
    answering for `stall_timeout_s`) are retried alone; one that `allowed_deaths` workers were
    lost with fails, named, instead of being tried again.
    """
    _check_arguments(
        workers, transport, schedule, stall_timeout_s, allowed_deaths, resume, manifest
    )
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    images = list(images) if isinstance(images, Sequence) else images
    known_inputs = images if isinstance(images, Sequence) else []
    plan = OutputPlan(Path(out_dir) if out_dir is not None else None, known_inputs, input_roots)
    cluster = workers[0].cluster
    images, routes, transport = _routes(cluster, workers, images, plan, transport)
    result = RunResult(transport, schedule)
    result.routes = {w.name: str(routes[w.engine_id]) for w in workers}
    previous = finished_entries(Path(manifest), _decodes) if resume else {}
    plan.reserve(entry.output for entry in previous.values())
    common = {
        "total": len(images) if isinstance(images, Sequence) else None,
        "stall_timeout_s": stall_timeout_s,
        "max_pixels": max_pixels,
        "on_progress": on_progress,
        "manifest": Path(manifest) if manifest is not None else None,
        "previous": previous,
        "allowed_deaths": allowed_deaths,
    }
    args = (cluster, list(workers), iter(images), plan, result)
    run = _make_run(args, common, transport, schedule, routes, batch_size)
    _execute(run, result, plan, manifest)
    return result


def _routes(cluster, workers, images, plan: OutputPlan, transport: str):
    """(images, each worker's route, the run's transport: one of them, or 'mixed')."""
    if transport == "auto":
        images, routes = _auto_routes(cluster, workers, images, plan)
    else:
        routes = {w.engine_id: Route(transport) for w in workers}
    kinds = sorted({route.transport for route in routes.values()})
    return images, routes, kinds[0] if len(kinds) == 1 else "mixed"


def _execute(run, result: RunResult, plan: OutputPlan, manifest) -> None:
    """The run, with its folders locked; the manifest written however it ends."""
    started = time.perf_counter()
    folders = [f for f in (plan.out_dir, Path(manifest).parent if manifest else None) if f]
    with FolderLock(folders):
        try:
            run.execute()
        finally:
            result.elapsed_s = time.perf_counter() - started
            result.processed.sort(key=lambda e: run.order[str(e.output)])
            if manifest is not None:
                write_manifest(Path(manifest), run.manifest_entries())


def _check_arguments(
    workers, transport, schedule, stall_timeout_s, allowed_deaths, resume, manifest
) -> None:
    """A sentence for each argument `distribute` cannot work with."""
    check_transport(transport)
    check_schedule(schedule)
    if not workers:
        msg = "no workers given; connect at least one worker (see the worker list) and try again."
        raise ParameterError(msg)
    if not stall_timeout_s > 0:
        msg = f"stall timeout = {stall_timeout_s!r} s; give how many seconds without progress make a worker given up, e.g. {DEFAULT_STALL_TIMEOUT_S:g}."
        raise ParameterError(msg)
    if allowed_deaths < 1:
        msg = f"allowed_deaths = {allowed_deaths}; give how many workers an image may take down before it is given up, at least 1."
        raise ParameterError(msg)
    if resume and manifest is None:
        msg = (
            "resume needs the manifest of the run to resume; give manifest=<path of manifest.json>."
        )
        raise ParameterError(msg)


def _make_run(args: tuple, common: dict, transport: str, schedule: str, routes: dict, batch_size):
    """The run that serves the transport (the registry says which) and schedule."""
    served_by = "direct" if transport == "mixed" else TRANSPORTS[transport].run
    if served_by == "claims" and schedule == "balanced":
        return ClaimRun(*args, **common)
    if served_by == "direct":
        return DirectRun(
            *args, routes={eid: route.transport for eid, route in routes.items()}, **common
        )
    return BatchRun(*args, transport=transport, schedule=schedule, batch_size=batch_size, **common)


def _decodes(path: Path) -> bool:
    try:
        decode(read_file(path), str(path))
    except ImgdistError:
        return False
    return True


def _auto_routes(
    cluster: Cluster, workers: Sequence[Worker], images: Iterable, plan: OutputPlan
) -> tuple[Iterable, dict[int, Route]]:
    """`auto`: each worker's route, checked against one input per input folder (the first input
    only, for inputs that stream) and the output folder. Returns the images (unchanged, or the
    stream with its first item put back) and the routes."""
    if isinstance(images, Sequence):
        samples = input_samples(images)
    else:
        first = next(iter(images), None)
        images = itertools.chain([first], images) if first is not None else iter(())
        samples = input_samples([first]) if first is not None else []
    out_folder = plan.out_dir or (str(Path(samples[0][0]).parent) if samples else None)
    if out_folder is None:
        return images, {w.engine_id: Route(NOT_SHARED, "no folder to check") for w in workers}
    return images, plan_routes(cluster, workers, samples, Path(out_folder))
