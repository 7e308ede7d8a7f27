"""What a run costs the main's machine against the workers', per image: CPU seconds counted per
process (the main and the controller on one side, the engines on the other), marginal over a
large run minus a small one, so start-up and fixed costs cancel out.

It answers "how many workers can one main keep busy": about worker cost / main cost of them.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from imgdist.bench import machine_info
from imgdist.files import atomic_write


@dataclass(frozen=True)
class MainCost:
    """CPU milliseconds per image on each side, for one transport."""

    transport: str
    main_ms: float  # the process running distribute()
    controller_ms: float  # the controller and its schedulers
    worker_ms: float  # all engines together
    images: tuple[int, int]  # the small and the large run
    steps: dict[str, int] = field(default_factory=dict)  # direct: images per step, timed runs

    @property
    def main_side_ms(self) -> float:
        """Everything on the main's machine."""
        return self.main_ms + self.controller_ms

    @property
    def ratio(self) -> float:
        """Main side / worker side: how much of a worker's CPU the main spends per image."""
        return self.main_side_ms / self.worker_ms if self.worker_ms else float("inf")

    @property
    def workers_kept_busy(self) -> float:
        """How many workers one main's core can feed: worker side / main side."""
        return 1 / self.ratio if self.ratio else float("inf")

    def to_json(self) -> dict:
        """Plain data, with the derived figures."""
        return {
            **asdict(self),
            "main_side_ms": self.main_side_ms,
            "ratio": self.ratio,
            "workers_kept_busy": self.workers_kept_busy,
        }


@dataclass(frozen=True)
class Route:
    """One way an image can travel, for the capacity model: CPU per image on each side (one core
    per worker, one for the main) and the bytes that cross the links."""

    name: str
    main_ms: float
    worker_ms: float
    bytes_per_image: float


@dataclass(frozen=True)
class Capacity:
    """The modelled throughput of `workers` workers on one route."""

    route: str
    workers: int
    images_per_s: float
    limited_by: str  # "workers", "the workers' links", "the main's CPU", "the main's link", "cores"


def modelled_capacity(
    route: Route,
    workers: int,
    *,
    main_link_bps: float,
    worker_link_bps: float,
    shared_cores: int | None = None,
) -> Capacity:
    """min(N x worker rate, main rate, link rate): each worker does one image per `worker_ms`
    unless its own link carries fewer; the main handles one per `main_ms`; every image's bytes
    cross the main's link. `shared_cores`: main and workers on one machine of that many cores
    (the netns test bed), which then cannot do more than cores / (main_ms + worker_ms)."""
    limits = {
        "workers": workers * 1000 / route.worker_ms,
        "the workers' links": workers * worker_link_bps / 8 / route.bytes_per_image,
        "the main's CPU": 1000 / route.main_ms,
        "the main's link": main_link_bps / 8 / route.bytes_per_image,
    }
    if shared_cores:
        limits["cores"] = shared_cores * 1000 / (route.main_ms + route.worker_ms)
    limited_by = min(limits, key=limits.__getitem__)
    return Capacity(route.name, workers, limits[limited_by], limited_by)


def mixed_capacity(jpeg: Route, bits: Route, workers: int, **links: float | None) -> Capacity:
    """The best mix of two routes (a share of the images one way, the rest the other, in steps
    of 1%): what `direct` aims for when it sends bits while the main has CPU to spare and JPEGs
    otherwise. `links` as for `modelled_capacity`."""

    def mix(percent: int) -> Route:
        share = percent / 100
        return Route(
            f"{percent}% {bits.name}",
            jpeg.main_ms + share * (bits.main_ms - jpeg.main_ms),
            jpeg.worker_ms + share * (bits.worker_ms - jpeg.worker_ms),
            jpeg.bytes_per_image + share * (bits.bytes_per_image - jpeg.bytes_per_image),
        )

    capacities = [modelled_capacity(mix(p), workers, **links) for p in range(101)]  # type: ignore[arg-type]
    return max(capacities, key=lambda capacity: round(capacity.images_per_s, 9))


def cpu_seconds(pids: Sequence[int], *, with_children: bool = False) -> float:
    """User + system CPU seconds used so far by the processes `pids` (and their children)."""
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            members = [process, *(process.children(recursive=True) if with_children else [])]
            total += sum(_process_cpu_s(member) for member in members)
        except psutil.Error:
            continue  # gone meanwhile: what it used is lost to the count, said in the docs
    return total


_CPUCLOCK_SCHED = 2  # Linux: a process's CPU clock id is (~pid << 3) | 2 (clock_getcpuclockid)


def _process_cpu_s(process: psutil.Process) -> float:
    """A process's CPU seconds, all its threads, living and ended. On Linux from its CPU clock,
    to the nanosecond: /proc's user and system times count in 10 ms ticks, ~10 us per image
    of a 1,000-image run, as much as the differences being measured."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            return time.clock_gettime(((~process.pid) << 3) | _CPUCLOCK_SCHED)
    times = process.cpu_times()
    return times.user + times.system


def marginal_costs(
    runs: Mapping[str, Callable[[int], Mapping[str, int] | None]],
    *,
    controller_pid: int,
    worker_pids: Sequence[int],
    small: int = 64,
    large: int = 1024,
    repeats: int = 3,
) -> list[MainCost]:
    """For each transport's `run(n)`: `small` and `large` images `repeats` times each, counting
    CPU per side; the cost per image is (large - small) / (large - small images), medians.
    The transports take turns within each repeat, so that they are compared side by side (this
    machine's costs drift within minutes). `run` may return its run's steps (images per step):
    they are added up over the timed runs.

    Give every run a folder of its own, and delete none until the end: replacing the previous
    run's files costs the main more than writing new ones, and on ext4 without a journal (this
    project's VM) creating a file in the minutes after many were deleted costs 3-10x more (the
    inode allocator steps over each recently deleted inode: `recently_deleted` in the kernel).
    """
    me = psutil.Process()
    samples = {name: {small: [], large: []} for name in runs}
    steps: dict[str, dict[str, int]] = {name: {} for name in runs}
    for run in runs.values():
        run(small)  # warm-up: imports, caches, engines' first images
    for _ in range(repeats):
        for name, run in runs.items():
            for n in (small, large):
                before = _sides(me, controller_pid, worker_pids)
                for step, count in (run(n) or {}).items():
                    steps[name][step] = steps[name].get(step, 0) + count
                time.sleep(0.2)  # let the controller and engines finish their bookkeeping
                after = _sides(me, controller_pid, worker_pids)
                samples[name][n].append(tuple(b - a for a, b in zip(before, after, strict=True)))
    return [
        MainCost(name, *_per_image(samples[name], small, large), (small, large), steps[name])
        for name in runs
    ]


def _per_image(samples: dict[int, list[tuple]], small: int, large: int) -> list[float]:
    """Milliseconds per image on each side: the medians' difference over the images'."""
    return [
        (
            statistics.median([s[i] for s in samples[large]])
            - statistics.median([s[i] for s in samples[small]])
        )
        / (large - small)
        * 1000
        for i in range(3)
    ]


def _sides(me: psutil.Process, controller_pid: int, worker_pids: Sequence[int]) -> tuple:
    return (
        _process_cpu_s(me),
        cpu_seconds([controller_pid], with_children=True),
        cpu_seconds(worker_pids),
    )


def save_main_cost(path: Path | str, costs: Sequence[MainCost], **params: object) -> Path:
    """The figures as JSON: {"main_cost": [{transport, main_ms, controller_ms, worker_ms,
    main_side_ms, ratio, workers_kept_busy, images: [small, large], steps}], "machine",
    "params"}."""
    data = {
        "main_cost": [cost.to_json() for cost in costs],
        "machine": machine_info(),
        "params": params,
    }
    atomic_write(Path(path), (json.dumps(data, indent=1) + "\n").encode())
    return Path(path)
