"""What a run reports: progress while it runs, and the result when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imgdist.files import ManifestEntry


@dataclass(frozen=True)
class Progress:
    """How far a run is: images done (processed or failed) of total, and per-worker counts."""

    done: int
    total: int | None
    failed: int
    per_worker: dict[str, int]


@dataclass(frozen=True)
class Span:
    """Work one worker held: from when the main sent it to when it was done, in seconds since
    the run started, and how many images it was."""

    worker: str
    start_s: float
    end_s: float
    images: int


@dataclass
class RunResult:
    """What a run did: outputs in input order, who made each, what failed, which workers were lost."""

    transport: str
    schedule: str
    processed: list[ManifestEntry] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    lost_workers: list[str] = field(default_factory=list)
    hung_workers: list[str] = field(default_factory=list)  # lost because they stopped answering
    redone: list[Path] = field(default_factory=list)
    rejoined: list[str] = field(default_factory=list)
    resumed: int = 0
    elapsed_s: float = 0.0
    timeline: list[Span] = field(default_factory=list)
    routes: dict[str, str] = field(default_factory=dict)  # worker -> transport (and why)
    duplicates: list[tuple[Path, str]] = field(default_factory=list)  # ignored second reports
    steps: dict[str, int] = field(default_factory=dict)  # direct: images per engine step
    refused_connections: int = 0  # direct: messages from peers that had not proved themselves

    @property
    def outputs(self) -> list[Path]:
        """The processed files, in input order (what the Livebook's `distribute` returns)."""
        return [entry.output for entry in self.processed]

    @property
    def ok(self) -> bool:
        """Whether every image was processed."""
        return not self.failed

    def per_worker(self) -> dict[str, int]:
        """How many images each worker processed."""
        counts: dict[str, int] = {}
        for entry in self.processed:
            counts[entry.worker] = counts.get(entry.worker, 0) + 1
        return counts

    def summary(self) -> str:
        """A few lines for a person: counts, time, workers, failures and redone work."""
        lines = [
            (
                f"{len(self.processed)} images processed, {len(self.failed)} failed, "
                f"in {self.elapsed_s:.2f} s ({self.transport} transport, {self.schedule} schedule)."
            )
        ]
        if self.resumed:
            lines.append(f"  ({self.resumed} of them kept from the previous run: resumed)")
        if len(set(self.routes.values())) > 1 or any("(" in r for r in self.routes.values()):
            lines.append(
                "Routes: " + "; ".join(f"{name}: {route}" for name, route in self.routes.items())
            )
        lines += [f"  {name}: {count}" for name, count in sorted(self.per_worker().items())]
        if self.lost_workers:
            lines.append(
                f"Workers lost during the run: {', '.join(self.lost_workers)}; "
                f"{len(self.redone)} images redone on the others."
            )
        if self.hung_workers:
            lines.append(
                f"Of them, stopped answering and given up: {', '.join(self.hung_workers)} "
                "(their queued work was cancelled)."
            )
        if self.rejoined:
            lines.append(f"Workers that came back and rejoined: {', '.join(self.rejoined)}.")
        if self.refused_connections:
            lines.append(
                f"{self.refused_connections} messages on the data route came from peers without "
                "the cluster's key; they got nothing and nothing they sent was written."
            )
        if self.duplicates:
            lines.append(
                f"{len(self.duplicates)} images were reported twice; the first report was kept "
                f"(e.g. {self.duplicates[0][0]} again from {self.duplicates[0][1]})."
            )
        lines += [f"FAILED {source}: {reason}" for source, reason in self.failed]
        return "\n".join(lines)
