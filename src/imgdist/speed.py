"""The notebook's speed comparison: the job in this process, then on 1, 2 and 4 workers with the
default flow and with the Livebook's (`imgdist bench`, beside it in `benchsuite`, compares
flows and peers on local engines)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from imgdist.bench import BenchReport, measure
from imgdist.cluster import Worker
from imgdist.defaults import DEFAULT_SCHEDULE, DEFAULT_TRANSPORT
from imgdist.distribution import distribute
from imgdist.engine import process_file
from imgdist.errors import ImageError, ParameterError
from imgdist.names import own_name, processed_name


def worker_count_label(n: int) -> str:
    """'1 worker', '2 workers', ... as the Livebook's Benchee cases are named."""
    return f"{n} worker" if n == 1 else f"{n} workers"


OWN_PROCESS = "own process"
SEED_PREFIX = "seed: "


def speed_comparison(
    workers: Sequence[Worker],
    sources: Sequence[Path],
    *,
    counts: Sequence[int] = (1, 2, 4),
    runs: int = 5,
    warmup_runs: int = 1,
    transport: str = DEFAULT_TRANSPORT,
    schedule: str = DEFAULT_SCHEDULE,
    include_seed: bool = True,
    scratch: Path | None = None,
) -> BenchReport:
    """Benchee-style timing of the job: done in this process with no workers (`own process`, the
    reference), then on the first 1, 2, 4 workers with `transport` and `schedule`, and with the
    Livebook's flow (`seed: ...`: pixels, round-robin)."""
    counts = [n for n in counts if n <= len(workers)]
    if not counts:
        msg = (
            f"no worker counts to compare with {len(workers)} workers; connect at least one worker."
        )
        raise ParameterError(msg)
    scratch_dir = Path(tempfile.mkdtemp(prefix="imgdist-bench-", dir=scratch))
    modes = [("", transport, schedule)]
    if include_seed:
        modes.append((SEED_PREFIX, "pixels", "round-robin"))
    cases = _cases(workers, sources, counts, modes, scratch_dir)
    try:
        return measure(
            cases,
            runs=runs,
            warmup_runs=warmup_runs,
            params={
                "images": len(sources),
                "workers": [w.name for w in workers],
                "transport": transport,
                "schedule": schedule,
                "reference": OWN_PROCESS,
            },
        )
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)


def _cases(workers, sources, counts, modes, scratch_dir: Path) -> dict:
    """The timed cases: the job in this process, then each (prefix, transport, schedule) mode
    on each worker count."""
    label = own_name()
    cases = {
        OWN_PROCESS: lambda: [
            process_file(source, scratch_dir / processed_name(str(source)), label)
            for source in sources
        ]
    }
    for prefix, mode_transport, mode_schedule in modes:
        for n in counts:

            def case(n=n, transport=mode_transport, schedule=mode_schedule):
                result = distribute(
                    workers[:n],
                    sources,
                    out_dir=scratch_dir,
                    transport=transport,
                    schedule=schedule,
                )
                if not result.ok:
                    raise ImageError(result.summary())

            cases[f"{prefix}{worker_count_label(n)}"] = case
    return cases
