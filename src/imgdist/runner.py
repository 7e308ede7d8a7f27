"""The main job, shared by the notebook and `imgdist run`: inputs, cluster, run, speed comparison."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from imgdist.bench import BenchReport, measure
from imgdist.cluster import Cluster, Worker
from imgdist.distribute import DEFAULT_SCHEDULE, DEFAULT_TRANSPORT, distribute
from imgdist.errors import ImageError, ParameterError
from imgdist.portrait import get_portrait, make_copies

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


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


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in the folders named."""
    found: list[Path] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        elif path.exists():
            found.append(path)
        else:
            msg = f"input {path} does not exist; give image files or folders that contain them."
            raise ImageError(msg)
    if not found:
        msg = f"no image files in {[str(p) for p in inputs]}; expected files ending in {', '.join(IMAGE_SUFFIXES)}."
        raise ImageError(msg)
    return found


def open_cluster(
    *,
    local: int = 0,
    connection: str = "",
    timeout_s: float = 60.0,
    controller_ip: str = "127.0.0.1",
    curve: bool = False,
) -> Cluster:
    """Connect to the cluster named by `connection`, or start a controller here (listening on
    `controller_ip`, loopback by default) with `local` engines (0: workers join from elsewhere)."""
    if local and connection:
        msg = f"both local={local} and connection={connection!r} given; choose one."
        raise ParameterError(msg)
    if connection:
        return Cluster.connect(connection, timeout_s=min(timeout_s, 30.0))
    if local < 0:
        msg = f"local = {local}; give how many local engines to start (0 for none), or a connection file."
        raise ParameterError(msg)
    return Cluster.start_local(local, timeout_s=timeout_s, controller_ip=controller_ip, curve=curve)


def join_instructions(engine_file: Path | None) -> str:
    """How a worker machine joins: the file to copy (never its key), the command, the ports."""
    if engine_file is None:
        return (
            "This cluster's engine connection file is not on this machine; ask whoever started it."
        )
    info = json.loads(Path(engine_file).read_text())
    address = str(info.get("interface", "")).removeprefix("tcp://")
    ports = sorted({int(p) for key in PORT_KEYS for p in _as_list(info.get(key)) if p})
    loopback = address.startswith("127.") or address in ("localhost", "::1")
    lines = [
        f"Engine connection file: {engine_file}",
        f"The controller listens on {address}, TCP ports {', '.join(map(str, ports))}"
        + (
            " (loopback only: start it with another address for other machines)."
            if loopback
            else "."
        ),
        "On each worker machine, copy the file (it holds the cluster's key: keep it private) and start a worker:",
        f"  scp {socket.gethostname()}:{engine_file} .",
        f"  imgdist worker --connection {Path(engine_file).name} --name worker1",
    ]
    return "\n".join(lines)


PORT_KEYS = ("registration", "control", "mux", "task", "iopub", "hb_ping", "hb_pong", "broadcast")


def _as_list(value: object) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def worker_count_label(n: int) -> str:
    """'1 worker', '2 workers', ... as the Livebook's Benchee cases are named."""
    return f"{n} worker" if n == 1 else f"{n} workers"


def speed_comparison(
    workers: Sequence[Worker],
    sources: Sequence[Path],
    *,
    counts: Sequence[int] = (1, 2, 4),
    runs: int = 5,
    warmup_runs: int = 1,
    include_seed: bool = True,
    scratch: Path | None = None,
) -> BenchReport:
    """Benchee-style timing of the job on the first 1, 2, 4 workers: the default flow, and the seed's."""
    counts = [n for n in counts if n <= len(workers)]
    if not counts:
        msg = (
            f"no worker counts to compare with {len(workers)} workers; connect at least one worker."
        )
        raise ParameterError(msg)
    scratch_dir = Path(tempfile.mkdtemp(prefix="imgdist-bench-", dir=scratch))
    cases = {}
    modes = [("", DEFAULT_TRANSPORT, DEFAULT_SCHEDULE)]
    if include_seed:
        modes.append(("seed: ", "pixels", "round-robin"))
    for prefix, transport, schedule in modes:
        for n in counts:

            def case(n=n, transport=transport, schedule=schedule):
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
            params={"images": len(sources), "workers": [w.name for w in workers]},
        )
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
