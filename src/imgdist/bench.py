"""Measuring the way Benchee does: warm-up, repeated runs, ips, average, deviation, median, 99th %.

Cases are measured interleaved (one run of each in turn), so a noisy neighbour on a shared
machine slows every case alike and the ratios stay fair.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from imgdist.errors import ParameterError
from imgdist.files import atomic_write


@dataclass(frozen=True)
class CaseStats:
    """One case's samples and Benchee's statistics of them (seconds)."""

    name: str
    samples_s: list[float]
    ips: float
    average_s: float
    deviation_pct: float
    median_s: float
    p99_s: float
    min_s: float
    max_s: float

    @classmethod
    def of(cls, name: str, samples_s: list[float]) -> CaseStats:
        """Statistics of `samples_s`."""
        average = statistics.fmean(samples_s)
        deviation = statistics.stdev(samples_s) / average * 100 if len(samples_s) > 1 else 0.0
        return cls(
            name=name,
            samples_s=list(samples_s),
            ips=1.0 / average,
            average_s=average,
            deviation_pct=deviation,
            median_s=statistics.median(samples_s),
            p99_s=percentile(samples_s, 99),
            min_s=min(samples_s),
            max_s=max(samples_s),
        )


@dataclass(frozen=True)
class Comparison:
    """A case against the fastest: '4 workers — 1.3x slower (+20 ms)'."""

    name: str
    ips: float
    slower_by: float
    extra_s: float


@dataclass
class BenchReport:
    """All cases of one benchmark run, with the machine and parameters it ran with."""

    cases: list[CaseStats]
    params: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)

    def case(self, name: str) -> CaseStats:
        """The case called `name`."""
        for case in self.cases:
            if case.name == name:
                return case
        msg = f"no case {name!r}; the cases are {[c.name for c in self.cases]}"
        raise KeyError(msg)

    def comparison(self) -> list[Comparison]:
        """Cases from fastest to slowest (by average), each against the fastest."""
        ranked = sorted(self.cases, key=lambda c: c.average_s)
        best = ranked[0]
        return [
            Comparison(c.name, c.ips, c.average_s / best.average_s, c.average_s - best.average_s)
            for c in ranked
        ]

    def speedup(self, name: str, baseline: str) -> float:
        """How many times faster `name` is than `baseline`, by median."""
        return self.case(baseline).median_s / self.case(name).median_s

    def to_json(self) -> dict:
        """The report as plain JSON data: {"cases": [...], "machine": {...}, "params": {...}}."""
        return {
            "cases": [asdict(c) for c in self.cases],
            "machine": self.machine,
            "params": self.params,
        }

    def save(self, path: Path) -> Path:
        """Write the JSON form to `path`."""
        atomic_write(Path(path), (json.dumps(self.to_json(), indent=1) + "\n").encode())
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> BenchReport:
        """Read a report written by `save`."""
        data = json.loads(Path(path).read_text())
        return cls(
            [CaseStats(**c) for c in data["cases"]], data.get("params", {}), data.get("machine", {})
        )


def percentile(samples: list[float], pct: float) -> float:
    """The `pct`th percentile with linear interpolation (numpy's default)."""
    return float(np.percentile(samples, pct))


def machine_info() -> dict:
    """What the numbers were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def measure(
    cases: Mapping[str, Callable[[], object]],
    *,
    runs: int = 10,
    warmup_runs: int = 1,
    params: dict | None = None,
    on_sample: Callable[[str, int, float], None] | None = None,
    settle_s: float = 0.0,
) -> BenchReport:
    """Time each case `runs` times after `warmup_runs`, interleaving the cases run by run.

    `settle_s` is a pause before each timed run, so work a case leaves behind (dask's
    workers tidy up for tens of ms after a gather) is not charged to the next case.
    """
    if runs < 1 or warmup_runs < 0:
        msg = f"runs = {runs}, warmup_runs = {warmup_runs}; give runs >= 1 and warmup_runs >= 0."
        raise ParameterError(msg)
    if not cases:
        msg = "no cases to measure; give at least one name -> function."
        raise ParameterError(msg)
    for _ in range(warmup_runs):
        for function in cases.values():
            function()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for run in range(runs):
        for name, function in cases.items():
            if settle_s:
                time.sleep(settle_s)
            started = time.perf_counter()
            function()
            elapsed = time.perf_counter() - started
            samples[name].append(elapsed)
            if on_sample is not None:
                on_sample(name, run, elapsed)
    merged = {"runs": runs, "warmup_runs": warmup_runs, "settle_s": settle_s, **(params or {})}
    return BenchReport([CaseStats.of(n, s) for n, s in samples.items()], merged, machine_info())
