"""The main job, shared by the notebook and `imgdist run`: inputs, cluster, run, speed comparison."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from imgdist.bench import BenchReport, measure
from imgdist.cluster import (
    CONTROLLER_PORTS,
    DATA_ROUTE_PORTS,
    PORTS_NEEDED,
    Cluster,
    Worker,
    connection_ports,
)
from imgdist.codec import JPEG_ALIASES
from imgdist.distribute import DEFAULT_SCHEDULE, DEFAULT_TRANSPORT, distribute
from imgdist.engine import process_file
from imgdist.errors import ImageError, ParameterError
from imgdist.image import processed_name
from imgdist.portrait import get_portrait, make_copies
from imgdist.workers import own_name

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", *JPEG_ALIASES)


def check_out_dir(out_dir: str | Path) -> Path:
    """`out_dir` created and writable, or a ParameterError saying why not."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        msg = f"output folder {out} is a file; give a folder path (it is created if missing)."
        raise ParameterError(msg)
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        msg = f"output folder {out} cannot be written ({exc.strerror}); pick a folder you can write to."
        raise ParameterError(msg) from None
    return out


def portrait_copies(out_dir: Path, *, url: str = "", copies: int = 32) -> list[Path]:
    """Fetch the portrait into `out_dir` and write its copies into `out_dir/images`."""
    portrait = get_portrait(url, out_dir)
    return make_copies(portrait.path, copies, Path(out_dir) / "images")


def expand_inputs(inputs: Iterable[str | Path], *, skip: Iterable[Path] = ()) -> list[Path]:
    """Image files named directly or found in the folders named, walked recursively and sorted.

    Hidden files and folders (a leading '.') and the folders in `skip` (the output folder)
    are left out of the walk.
    """
    skipped = {Path(folder).resolve() for folder in skip}
    found: list[Path] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found.extend(_images_under(path, skipped))
        elif path.exists():
            found.append(path)
        else:
            msg = f"input {path} does not exist; give image files or folders that contain them."
            raise ImageError(msg)
    if not found:
        msg = f"no image files in {[str(p) for p in inputs]}; expected files ending in {', '.join(IMAGE_SUFFIXES)}."
        raise ImageError(msg)
    return list(dict.fromkeys(found))  # a file reached twice (nested folders given) counts once


def _images_under(folder: Path, skipped: set[Path]) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and Path(root, d).resolve() not in skipped
        )
        found.extend(
            Path(root, name)
            for name in sorted(files)
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
    return found


_open: dict[tuple, Cluster] = {}


def open_cluster(
    *,
    local: int = 0,
    connection: str = "",
    timeout_s: float = 60.0,
    controller_ip: str = "127.0.0.1",
    curve: bool = False,
    ports: str = "",
    launcher: str = "local",
    launcher_args: str = "",
) -> Cluster:
    """Connect to the cluster named by `connection`, or start a controller here (listening on
    `controller_ip`, loopback by default, on `ports` 'LO-HI' if given) with `local` engines
    (0: workers join from elsewhere), started by `launcher`: `local` processes, or `slurm`,
    `mpi`, `pbs`, `sge`, `lsf` with `launcher_args` for sbatch, mpiexec, ...

    Asked again for the same cluster (a notebook cell run twice), the one already open is
    returned while it still answers; any other cluster this process opened is stopped first.
    """
    if local and connection:
        msg = f"both local={local} and connection={connection!r} given; choose one."
        raise ParameterError(msg)
    if local < 0:
        msg = f"local = {local}; give how many local engines to start (0 for none), or a connection file."
        raise ParameterError(msg)
    port_range = parse_ports(ports)
    key = (local, connection, controller_ip, curve, port_range, launcher, launcher_args)
    previous = _open.pop(key, None)
    if previous is not None and previous.is_open and previous.controller_reachable():
        _open[key] = previous
        return previous
    for other in [previous, *_open.values()]:
        if other is not None:
            other.stop()
    _open.clear()
    if connection:
        cluster = Cluster.connect(connection, timeout_s=min(timeout_s, 30.0))
    else:
        cluster = Cluster.start_local(
            local,
            timeout_s=timeout_s,
            controller_ip=controller_ip,
            curve=curve,
            ports=port_range,
            launcher=launcher,
            launcher_args=launcher_args,
        )
    _open[key] = cluster
    return cluster


def parse_ports(text: str) -> tuple[int, int] | None:
    """'LO-HI' as (LO, HI), '' as None; a ParameterError for anything else."""
    if not str(text).strip():
        return None
    low, sep, high = str(text).strip().partition("-")
    if not (sep and low.isdigit() and high.isdigit() and 1024 <= int(low) <= int(high) <= 65535):
        msg = (
            f"ports {text!r} is not a range LO-HI of TCP ports between 1024 and 65535; "
            f"give e.g. 50000-50099 (at least {PORTS_NEEDED} ports)."
        )
        raise ParameterError(msg)
    if int(high) - int(low) + 1 < PORTS_NEEDED:
        msg = (
            f"ports {text!r} holds {int(high) - int(low) + 1} ports, but imgdist needs "
            f"{PORTS_NEEDED} ({CONTROLLER_PORTS} for the controller, {DATA_ROUTE_PORTS} for the "
            f"data route); give a wider range, e.g. {low}-{int(low) + PORTS_NEEDED - 1}."
        )
        raise ParameterError(msg)
    return int(low), int(high)


def join_instructions(engine_file: Path | None) -> str:
    """How a worker machine joins: the file to copy (never its key), the command, the ports."""
    if engine_file is None:
        return (
            "This cluster's engine connection file is not on this machine; ask whoever started it."
        )
    info = json.loads(Path(engine_file).read_text())
    address = str(info.get("interface", "")).removeprefix("tcp://")
    ports = connection_ports(engine_file)
    loopback = address.startswith("127.") or address in ("localhost", "::1")
    lines = [
        f"Engine connection file: {engine_file}",
        f"The controller listens on {address}, TCP ports {', '.join(map(str, ports))}"
        + (
            " (loopback only: start it with another address for other machines)."
            if loopback
            else "."
        ),
        (
            "Each run also opens one port there for its data route (the highest free port of "
            "--ports, or a random one): workers connect to it too."
        ),
        "On each worker machine, copy the file (it holds the cluster's key: keep it private) and start a worker:",
        f"  scp {socket.gethostname()}:{engine_file} .",
        f"  imgdist worker --connection {Path(engine_file).name} --name worker1",
    ]
    return "\n".join(lines)


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
    label = own_name()
    cases = {
        OWN_PROCESS: lambda: [
            process_file(source, scratch_dir / processed_name(str(source)), label)
            for source in sources
        ]
    }
    modes = [("", transport, schedule)]
    if include_seed:
        modes.append((SEED_PREFIX, "pixels", "round-robin"))
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
