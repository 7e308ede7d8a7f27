"""Names, in one place: a worker's (`label@host`, as typed and as drawn) and an output's
(`<stem>_processed<ext>`, as the Livebook names them)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import PurePath

from imgdist.errors import WorkerNameError

DEFAULT_LABEL = "engine"  # what an engine nobody named calls itself
WORKER_LABEL = "worker"  # the prefix of engines imgdist starts: worker1, worker2, ...


def check_label(label: str) -> str:
    """A worker label: non-empty, no spaces, no '@' (the host is added after it)."""
    text = str(label).strip()
    if not text or any(ch.isspace() for ch in text) or "@" in text:
        msg = f"label {label!r} cannot name a worker; give a short word with no spaces or '@', e.g. 'worker1'."
        raise WorkerNameError(msg)
    return text


def name_of(label: str, host: str) -> str:
    """`label@host`: how a worker is named everywhere (drawn, typed, in manifests)."""
    return f"{label}@{host}"


def worker_name(label: str, host: str | None = None) -> str:
    """The name a worker with `label` has on `host` (default: this machine), label checked."""
    return name_of(check_label(label), host or socket.gethostname())


def engine_label(engine_id: int) -> str:
    """The label of an engine nobody named: `engine<id>`."""
    return f"{DEFAULT_LABEL}{engine_id}"


def numbered_label(number: int, prefix: str = WORKER_LABEL) -> str:
    """`worker<number>`: the labels of engines imgdist starts."""
    return f"{prefix}{number}"


def own_name() -> str:
    """This notebook's own name, as the Livebook's `Node.self()`: `main@host`."""
    return name_of("main", socket.gethostname())


def check_names(typed: Sequence[str]) -> list[str]:
    """Typed worker names, stripped, in order; clear errors for empty, malformed and repeated ones."""
    names: list[str] = []
    for position, raw in enumerate(typed, start=1):
        name = str(raw).strip()
        if not name:
            msg = f"worker {position} is empty; type a worker name such as 'worker{position}@host'."
            raise WorkerNameError(msg)
        if (
            any(ch.isspace() for ch in name)
            or name.count("@") != 1
            or name.startswith("@")
            or name.endswith("@")
        ):
            msg = f"worker {position} is {name!r}; a worker name is 'label@host' with no spaces, e.g. 'worker1@lab-pc'."
            raise WorkerNameError(msg)
        if name in names:
            msg = f"worker {position} repeats {name!r} (also worker {names.index(name) + 1}); give each box a different worker."
            raise WorkerNameError(msg)
        names.append(name)
    return names


def drawable_label(label: str) -> str:
    """What Hershey fonts will draw for `label`: every non-ASCII character becomes '?'."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in label)


def non_ascii_note(name: str) -> str:
    """A note when `name` has characters Hershey fonts cannot draw, saying what will be drawn."""
    drawn = drawable_label(name)
    if drawn == name:
        return ""
    return f"{name!r} has non-ASCII characters; OpenCV's Hershey font will draw it as {drawn!r}."


def output_name(stem: str, suffix: str, counter: int = 1) -> str:
    """`<stem>_processed<suffix>`, or `<stem>_<counter>_processed<suffix>` for counter > 1 (a
    second input with the same name in the same output folder)."""
    return f"{stem}_processed{suffix}" if counter <= 1 else f"{stem}_{counter}_processed{suffix}"


def processed_name(source_name: str) -> str:
    """`<base>_d_3.jpg` -> `<base>_d_3_processed.jpg`, as the Livebook names outputs."""
    path = PurePath(source_name)
    return output_name(path.stem, path.suffix)


def copy_name(base: str, index: int, ext: str) -> str:
    """The Livebook's name for copy `index` of a portrait: `<base>_d_<index><ext>`."""
    return f"{base}_d_{index}{ext}"
