"""`imgdist bench`: imgdist's flows against the local baseline and the peers, interleaved, same inputs.

Cases: `local` (sequential, no ipyparallel); `seed/1,2,4` (the Livebook's pixels + round-robin
on 1, 2, 4 engines); `fast/1,2,4` (the defaults); the peers `multiprocessing`,
`process-pool` and `dask`, each with as many processes as cores; and `split/2,4`, the machine's
ceiling for 2 and 4 processes: the job cut into one part per process, each done by one warm
process, no scheduling.
"""

from __future__ import annotations

import contextlib
import itertools
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2

from imgdist.bench import BenchReport, measure
from imgdist.cluster import Cluster, Worker
from imgdist.codec import decode, encode, read_file
from imgdist.distribution import distribute
from imgdist.errors import ImageError, ParameterError
from imgdist.files import atomic_write
from imgdist.floor import FLOOR, floor_run
from imgdist.maincost import MainCost, marginal_costs
from imgdist.names import copy_name, output_name
from imgdist.peers import CEILING, PEERS, start_peer
from imgdist.portrait import get_portrait

ENGINE_COUNTS = (1, 2, 4)
CEILINGS = tuple(f"{CEILING}/{n}" for n in ENGINE_COUNTS[1:])
SETTLE_S = 0.2
ALL_CASES = (
    "local",
    *(f"seed/{n}" for n in ENGINE_COUNTS),
    *(f"fast/{n}" for n in ENGINE_COUNTS),
    *PEERS,
    *CEILINGS,
)


def parse_size(text: str) -> tuple[int, int] | None:
    """'640x480' -> (640, 480); '' -> None (the portrait's own size)."""
    if not text:
        return None
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        msg = f"size {text!r} is not WIDTHxHEIGHT; give e.g. 1024x768, or leave it out for the portrait's size."
        raise ParameterError(msg)
    return int(width), int(height)


def make_inputs(
    folder: Path, n_images: int, *, size: tuple[int, int] | None = None, url: str = ""
) -> list[Path]:
    """`n_images` copies of the portrait (its own bytes, or rescaled to `size`) in `folder`."""
    portrait = get_portrait(url, folder / "portrait")
    if size is None:
        data = read_file(portrait.path)
    else:
        data = encode(
            cv2.resize(portrait.pixels, size, interpolation=cv2.INTER_AREA), portrait.path.suffix
        )
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n_images):
        path = folder / copy_name(portrait.path.stem, index, portrait.path.suffix)
        atomic_write(path, data)
        paths.append(path)
    return paths


def pairs_for(sources: Sequence[Path], out_dir: Path) -> list[tuple[str, str]]:
    """(source, output) pairs with outputs named as `distribute` names them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [(str(s), str(out_dir / output_name(s.stem, s.suffix))) for s in sources]


@dataclass
class Suite:
    """A started benchmark: inputs, a 4-engine cluster, warm peers, and one output folder per case."""

    sources: list[Path]
    scratch: Path
    cluster: Cluster | None
    workers: list[Worker]
    peers: dict

    def cases(self, names: Sequence[str]) -> dict[str, Callable[[], None]]:
        """name -> a function doing the whole 32-portrait job once for that case."""
        table: dict[str, Callable[[], None]] = {}
        for name in names:
            out = self.scratch / "out" / name.replace("/", "-")
            if name in self.peers:
                pairs = pairs_for(self.sources, out)
                table[name] = lambda peer=self.peers[name], pairs=pairs: peer.run(pairs)
            else:
                flow, _, count = name.partition("/")
                options = (
                    {"transport": "pixels", "schedule": "round-robin"} if flow == "seed" else {}
                )
                table[name] = lambda n=int(count), out=out, options=options: self._distribute(
                    n, out, options
                )
        return table

    def _distribute(self, n_engines: int, out: Path, options: dict) -> None:
        result = distribute(self.workers[:n_engines], self.sources, out_dir=out, **options)
        if not result.ok:
            raise ImageError(result.summary())

    def close(self) -> None:
        for peer in self.peers.values():
            with contextlib.suppress(Exception):
                peer.close()
        if self.cluster is not None:
            self.cluster.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)


def start_suite(
    names: Sequence[str],
    *,
    n_images: int,
    size: tuple[int, int] | None = None,
    url: str = "",
    scratch: Path | None = None,
) -> Suite:
    """Make the inputs, start what the cases in `names` need, and return the suite."""
    unknown = [n for n in names if n not in ALL_CASES]
    if unknown:
        msg = f"unknown bench cases {unknown}; choose from {', '.join(ALL_CASES)}."
        raise ParameterError(msg)
    folder = Path(tempfile.mkdtemp(prefix="imgdist-bench-", dir=scratch))
    suite = Suite(
        make_inputs(folder / "inputs", n_images, size=size, url=url), folder, None, [], {}
    )
    try:
        flows = [n for n in names if n.partition("/")[0] in ("seed", "fast")]
        engines = max([int(n.partition("/")[2]) for n in flows], default=0)
        if engines:
            suite.cluster = Cluster.start_local(
                engines, profile_dir=folder / "profile", controller_args=["--nodb"]
            )
            suite.workers = suite.cluster.workers()
        for name in names:
            if name in (*PEERS, "local"):
                suite.peers[name] = start_peer(name, 1 if name == "local" else None)
            elif name in CEILINGS:
                suite.peers[name] = start_peer(CEILING, int(name.partition("/")[2]))
    except BaseException:
        suite.close()
        raise
    return suite


def run_bench(
    names: Sequence[str] = ALL_CASES,
    *,
    n_images: int = 32,
    size: tuple[int, int] | None = None,
    runs: int = 10,
    warmup_runs: int = 2,
    url: str = "",
    on_sample=None,
) -> BenchReport:
    """The interleaved benchmark of `names`; speed-ups are against `local`."""
    suite = start_suite(names, n_images=n_images, size=size, url=url)
    try:
        shape = decode(read_file(suite.sources[0]), "input").shape
        params = {
            "images": n_images,
            "size": f"{shape[1]}x{shape[0]}",
            "cases": list(names),
            "engines": [w.name for w in suite.workers],
        }
        return measure(
            suite.cases(names),
            runs=runs,
            warmup_runs=warmup_runs,
            params=params,
            on_sample=on_sample,
            settle_s=SETTLE_S,
        )
    finally:
        suite.close()


@dataclass(frozen=True)
class ScalingPoint:
    """One batch size: median time, time per image, and the main process's peak RSS after it."""

    images: int
    median_s: float
    per_image_ms: float
    peak_rss_mb: float


def run_scaling(counts: Sequence[int], *, n_engines: int = 2, runs: int = 3) -> list[ScalingPoint]:
    """`fast/<n_engines>` on each count of images, smallest first, in this process.

    Peak RSS is monotonic, so its growth from the first count to the last is what the main
    process needed for the larger runs.
    """
    counts = sorted(counts)
    suite = start_suite([f"fast/{n_engines}"], n_images=max(counts))
    points = []
    try:
        for count in counts:
            sources = suite.sources[:count]
            out = suite.scratch / "out" / str(count)
            distribute(suite.workers, sources, out_dir=out)  # warm-up
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                result = distribute(suite.workers, (s for s in sources), out_dir=out)
                samples.append(time.perf_counter() - started)
                if not result.ok:
                    raise ImageError(result.summary())
                return result.steps
            median = statistics.median(samples)
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            points.append(ScalingPoint(count, median, median / count * 1000, peak_kb / 1024))
            shutil.rmtree(out, ignore_errors=True)
    finally:
        suite.close()
    return points


MAIN_COST_TRANSPORTS = ("path", "direct", "encoded", "compact", "pixels", FLOOR)


def main_cost_runs(
    cluster: Cluster, workers: Sequence[Worker], sources: Sequence[Path], folder: Path, transports
) -> dict[str, Callable[[int], dict]]:
    """For `marginal_costs`: per transport (or the floor), a run of the first n `sources` on
    `workers`; each run writes into a new folder under `folder`, none deleted before the end
    (see `marginal_costs`)."""

    def runner(transport: str) -> Callable[[int], dict]:
        runs = itertools.count()

        def run(n: int) -> dict:
            out = folder / f"{transport}-{next(runs)}"
            if transport == FLOOR:
                return floor_run(cluster, workers, sources[:n], out)
            result = distribute(workers, sources[:n], out_dir=out, transport=transport)
            if not result.ok:
                raise ImageError(result.summary())
            return result.steps

        return run

    return {transport: runner(transport) for transport in transports}


def run_main_cost(
    transports: Sequence[str] = MAIN_COST_TRANSPORTS,
    *,
    n_engines: int = 2,
    small: int = 64,
    large: int = 1024,
    repeats: int = 3,
) -> list[MainCost]:
    """CPU per image on the main's side (this process and the controller) against the
    engines', per transport, on `n_engines` local engines: see `imgdist.maincost`."""
    suite = start_suite([f"fast/{n_engines}"], n_images=large)
    try:
        costs = marginal_costs(
            main_cost_runs(
                suite.cluster, suite.workers, suite.sources, suite.scratch / "out", transports
            ),
            controller_pid=suite.cluster.controller_pid,
            worker_pids=[w.pid for w in suite.workers],
            small=small,
            large=large,
            repeats=repeats,
        )
    finally:
        suite.close()
    return costs
