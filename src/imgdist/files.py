"""Writing outputs safely: atomic replaces, and the manifest of who processed what."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename.

    A crash at any point leaves either the old file or the whole new one, never a truncated file.
    """
    path = Path(path)
    # Not mkstemp: its files are mode 0600, and the output should get the usual umask mode.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with tmp.open("xb") as handle:
            handle.write(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ManifestEntry:
    """One processed image: its source, its output and the worker that drew its name."""

    source: Path
    output: Path
    worker: str


def write_manifest(path: Path, entries: Iterable[ManifestEntry]) -> Path:
    """Write a manifest (a JSON list of {source, output, worker}) atomically.

    Paths are written relative to the manifest's folder when inside it.
    """
    path = Path(path)
    base = path.parent
    rows = [
        {
            "source": relative_to(e.source, base),
            "output": relative_to(e.output, base),
            "worker": e.worker,
        }
        for e in entries
    ]
    atomic_write(path, (json.dumps(rows, indent=1) + "\n").encode())
    return path


def read_manifest(path: Path) -> list[ManifestEntry]:
    """The entries of a manifest, with paths made absolute against its folder."""
    path = Path(path)
    rows = json.loads(path.read_text())
    return [
        ManifestEntry(path.parent / r["source"], path.parent / r["output"], r["worker"])
        for r in rows
    ]


def relative_to(path: Path, base: Path) -> str:
    """`path` relative to `base` when inside it, else the absolute path, as POSIX text."""
    path, base = Path(path).resolve(), Path(base).resolve()
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()
