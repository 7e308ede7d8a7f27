"""The main job, shared by the notebook and `imgdist run`: the output folder, the inputs, the cluster."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from imgdist.cluster import (
    Cluster,
)
from imgdist.cluster.connection import parse_ports
from imgdist.codec import JPEG_ALIASES
from imgdist.errors import ImageError, ParameterError
from imgdist.portrait import get_portrait, make_copies

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
