"""What a run costs the main's machine against the workers', per image: CPU seconds counted per
process (the main and the controller on one side, the engines on the other), marginal over a
large run minus a small one, so start-up and fixed costs cancel out.

It answers "how many workers can one main keep busy": about worker cost / main cost of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
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


def cpu_seconds(pids: Sequence[int], *, with_children: bool = False) -> float:
    """User + system CPU seconds used so far by the processes `pids` (and their children)."""
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            members = [process, *(process.children(recursive=True) if with_children else [])]
            for member in members:
                times = member.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue  # gone meanwhile: what it used is lost to the count, said in the docs
    return total


def marginal_cost(
    transport: str,
    run: Callable[[int], None],
    *,
    controller_pid: int,
    worker_pids: Sequence[int],
    small: int = 64,
    large: int = 1024,
    repeats: int = 3,
) -> MainCost:
    """Run `run(n)` for `small` and `large` images `repeats` times each, interleaved, counting
    CPU per side; the cost per image is (large - small) / (large - small images), medians."""
    me = psutil.Process()
    samples: dict[int, list[tuple[float, float, float]]] = {small: [], large: []}
    run(small)  # warm-up: imports, caches, engines' first images
    for _ in range(repeats):
        for n in (small, large):
            before = _sides(me, controller_pid, worker_pids)
            run(n)
            time.sleep(0.2)  # let the controller and engines finish their bookkeeping
            after = _sides(me, controller_pid, worker_pids)
            samples[n].append(tuple(b - a for a, b in zip(before, after, strict=True)))
    per_image = [
        (_median([s[i] for s in samples[large]]) - _median([s[i] for s in samples[small]]))
        / (large - small)
        * 1000
        for i in range(3)
    ]
    return MainCost(transport, *per_image, images=(small, large))


def _sides(me: psutil.Process, controller_pid: int, worker_pids: Sequence[int]) -> tuple:
    times = me.cpu_times()
    return (
        times.user + times.system,
        cpu_seconds([controller_pid], with_children=True),
        cpu_seconds(worker_pids),
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def save_main_cost(path: Path | str, costs: Sequence[MainCost], **params: object) -> Path:
    """The figures as JSON: {"main_cost": [{transport, main_ms, controller_ms, worker_ms,
    main_side_ms, ratio, workers_kept_busy, images: [small, large]}], "machine", "params"}."""
    data = {
        "main_cost": [cost.to_json() for cost in costs],
        "machine": machine_info(),
        "params": params,
    }
    atomic_write(Path(path), (json.dumps(data, indent=1) + "\n").encode())
    return Path(path)
