"""Writing outputs safely: atomic replaces, and the manifest of who processed what."""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from imgdist.names import output_name

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
_part_numbers = itertools.count()
_pid = os.getpid()  # in every temporary name: asked once, not once per file


def _new_pid() -> None:
    global _pid  # a forked child has a pid of its own
    _pid = os.getpid()


os.register_at_fork(after_in_child=_new_pid)


def atomic_write(path: Path | str, data: bytes | memoryview, *, durable: bool = False) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename.

    A process that dies at any point leaves either the old file or the whole new one, never a
    truncated file. With `durable`, the file and its folder are also synced to the disk before
    returning, so the same holds after a power loss (a few ms per call on a real disk: used for
    the manifest, not for every output; resume redoes any output that does not decode).
    Plain `os` calls: this runs once per image on the main (direct transport) and the engines.
    """
    path = os.fspath(path)
    folder, sep, name = path.rpartition(os.sep)
    # Not mkstemp: its files are mode 0600, and the output should get the usual umask mode.
    tmp = f"{folder}{sep}.{name}.{_pid}.{next(_part_numbers)}.part"
    try:
        fd = os.open(tmp, _NEW_FILE, 0o666)
        try:
            view = memoryview(data)
            written = os.write(fd, view)
            while written < view.nbytes:  # a short write: the rest
                view = view[written:]
                written = os.write(fd, view)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        # some network file systems cannot sync a folder; the file itself is synced already
        with contextlib.suppress(OSError):
            folder_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
            try:
                os.fsync(folder_fd)
            finally:
                os.close(folder_fd)


def write_new(path: Path, data: bytes) -> bool:
    """Write `data` as a new file at `path`, atomically; False (nothing written) if `path`
    exists. A hard link of a complete temporary file is made there: never a partial file, and
    never over another file, even one that appeared a moment ago."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with tmp.open("xb") as handle:
            handle.write(data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some SMB shares): exclusive, not atomic
            with path.open("xb") as handle:
                handle.write(data)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def remove_partial(path: Path) -> None:
    """Remove temporary files that an interrupted `atomic_write` of `path` left behind."""
    path = Path(path)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        leftover.unlink(missing_ok=True)


@dataclass(frozen=True)
class ManifestEntry:
    """One processed image: its source, its output and the worker that drew its name."""

    source: Path
    output: Path
    worker: str


def write_manifest(path: Path, entries: Iterable[ManifestEntry]) -> Path:
    """Write a manifest (a JSON list of {source, output, worker}) atomically.

    Paths are written relative to the manifest's folder when inside it. Each folder's real
    path is resolved once (the manifest is rewritten as a run checkpoints: resolving every
    path took ~35 us each, 70 ms for 1,000 images).
    """
    path = Path(path)
    relative = _Relative(path.parent)
    rows = [
        {"source": relative(e.source), "output": relative(e.output), "worker": e.worker}
        for e in entries
    ]
    atomic_write(path, (json.dumps(rows, indent=1) + "\n").encode(), durable=True)
    return path


def read_manifest(path: Path) -> list[ManifestEntry]:
    """The entries of a manifest, with paths made absolute against its folder."""
    path = Path(path)
    rows = json.loads(path.read_text())
    return [
        ManifestEntry(path.parent / r["source"], path.parent / r["output"], r["worker"])
        for r in rows
    ]


def finished_entries(manifest: Path, decodes: Callable[[Path], bool]) -> dict[Path, ManifestEntry]:
    """Entries of `manifest` whose output exists and decodes, by resolved source: what resume keeps.

    A missing or unreadable manifest keeps nothing (everything is processed again).
    """
    try:
        entries = read_manifest(manifest)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {Path(e.source).resolve(): e for e in entries if decodes(Path(e.output))}


class _Relative:
    """Paths relative to `base` when inside it, else absolute, as POSIX text (folders resolved
    once each)."""

    def __init__(self, base: Path) -> None:
        self.base = os.path.realpath(base) + os.sep
        self.folders: dict[str, str] = {}

    def __call__(self, path: Path | str) -> str:
        folder, name = os.path.split(os.path.abspath(path))
        real = self.folders.get(folder)
        if real is None:
            real = self.folders[folder] = os.path.realpath(folder)
        full = os.path.join(real, name)
        return full.removeprefix(self.base)


class Item(NamedTuple):
    """One image of a run: its position in the input, its source (as given, and as an absolute
    real path: what a worker on a shared disk is sent) and where its output goes. (A named
    tuple: the main makes one per image, at a third of a frozen dataclass's cost.)"""

    index: int
    source: Path
    output: Path
    real_source: str = ""


class OutputPlan:
    """Names each input's output: `<stem>_processed<ext>`, never an input, never the same twice.

    Outputs go to `out_dir`, or beside their source when it is None (as in the Livebook). An
    input found under one of `roots` (folders that were walked) keeps its sub-folder there:
    `roots/2024/trip/a.jpg` -> `out_dir/2024/trip/a_processed.jpg`.
    """

    def __init__(
        self,
        out_dir: Path | None,
        inputs: Iterable[Path | str] = (),
        roots: Iterable[Path | str] = (),
    ) -> None:
        self.out_dir = os.path.realpath(out_dir) if out_dir is not None else None
        # deepest first, so an input under nested roots keeps the shortest sub-folder
        self._roots = sorted((os.path.realpath(r) for r in roots), key=len, reverse=True)
        self._out_folders: dict[str, str] = {}
        self._real_folders: dict[str, str] = {}
        self._real_inputs: dict[str, str] = {}
        # every input known up front is reserved, so no output can be written over it; real
        # paths, so that a symlinked input is protected too
        self._taken: set[str] = {self._realpath(p) for p in inputs}

    def reserve(self, outputs: Iterable[Path | str]) -> None:
        """Keep `outputs` (kept from a previous run) from being given to any input."""
        self._taken.update(os.path.realpath(output) for output in outputs)

    def _realpath(self, path: Path | str) -> str:
        """`os.path.realpath(path)`, resolving each folder once (a run's inputs share a few)
        and each input once (inputs known up front are resolved again when their turn comes)."""
        given = os.fspath(path)
        real = self._real_inputs.get(given)
        if real is not None:
            return real
        folder, name = os.path.split(given)
        if name in ("", ".", ".."):
            real = os.path.realpath(given)
        else:
            real_folder = self._real_folders.get(folder)
            if real_folder is None:
                real_folder = self._real_folders[folder] = os.path.realpath(folder or ".")
            real = os.path.join(real_folder, name)
            if os.path.islink(real):
                real = os.path.realpath(real)
        self._real_inputs[given] = real
        return real

    def item(self, index: int, source: Path | str) -> Item:
        """The next input's Item."""
        source = source if isinstance(source, Path) else Path(source)
        real = self._realpath(source)
        self._taken.add(real)
        folder = self._out_folder(os.path.dirname(real)) if self.out_dir else os.path.dirname(real)
        stem, suffix = source.stem, source.suffix
        output = os.path.join(folder, output_name(stem, suffix))
        counter = 2
        while output in self._taken:
            output = os.path.join(folder, output_name(stem, suffix, counter))
            counter += 1
        self._taken.add(output)
        return Item(index, source, Path(output), real)

    def _out_folder(self, real_folder: str) -> str:
        """The output folder for inputs in `real_folder`, created the first time it is asked."""
        folder = self._out_folders.get(real_folder)
        if folder is None:
            folder = self.out_dir
            for root in self._roots:
                if real_folder == root or real_folder.startswith(root + os.sep):
                    sub = os.path.relpath(real_folder, root)
                    folder = os.path.normpath(os.path.join(self.out_dir, sub))
                    os.makedirs(folder, exist_ok=True)
                    break
            self._out_folders[real_folder] = folder
        return folder
