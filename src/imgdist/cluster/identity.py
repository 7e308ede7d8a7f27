"""Engines by name: each engine's label and host, and whether its software matches the main's."""

from __future__ import annotations

import concurrent.futures as cf
import importlib.metadata
import platform
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ipyparallel as ipp
from ipyparallel import error as ipp_error

from imgdist.engine import LABEL_ENV, EngineTask, Identity
from imgdist.names import engine_label, name_of

if TYPE_CHECKING:
    from imgdist.cluster.client import Cluster

DEFAULT_ANSWER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Worker:
    """An engine known by its name, `label@host`."""

    name: str
    engine_id: int
    host: str
    pid: int
    python: str = ""
    cluster: Cluster | None = field(default=None, compare=False, repr=False)
    problem: str = ""  # why this engine cannot work for imgdist (versions, imgdist missing)


@dataclass(frozen=True)
class Software:
    """What an engine (or this main) runs: found with stdlib calls, so any engine can answer."""

    host: str
    python: str
    ipyparallel: str
    label: str
    imgdist: str | None

    @classmethod
    def here(cls) -> Software:
        """This process's."""
        return cls(
            socket.gethostname(), platform.python_version(), ipp.__version__, "", _imgdist_version()
        )

    def mismatch(self, main: Software, engine_id: int) -> str:
        """Why an engine with this software cannot work with `main`, or ''."""
        differences = []
        if _minor(self.python) != _minor(main.python):
            differences.append(f"Python {self.python} (main: {main.python})")
        if _minor(self.ipyparallel) != _minor(main.ipyparallel):
            differences.append(f"ipyparallel {self.ipyparallel} (main: {main.ipyparallel})")
        if self.imgdist is None:
            differences.append("no imgdist installed")
        elif self.imgdist != main.imgdist:
            differences.append(f"imgdist {self.imgdist} (main: {main.imgdist})")
        if not differences:
            return ""
        return (
            f"engine {engine_id} on {self.host} has {', '.join(differences)}; install Python "
            f"{_minor(main.python)}, ipyparallel {_minor(main.ipyparallel)} and imgdist {main.imgdist} "
            "there, as on the main, and start the worker again."
        )


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _imgdist_version() -> str | None:
    try:
        return importlib.metadata.version("imgdist")
    except importlib.metadata.PackageNotFoundError:
        return None


# Asked of engines as constant expressions for the builtin `eval`, so that even an engine without
# imgdist, or on another Python, can answer: ipyparallel sends Python functions (and partials of
# them) as code objects, which another Python cannot load (its engine dies).
SOFTWARE_PROBES = (
    "__import__('socket').gethostname()",
    "__import__('platform').python_version()",
    "__import__('importlib.metadata', fromlist=['version']).version('ipyparallel')",
    f"__import__('os').environ.get('{LABEL_ENV}', '')",
    "__import__('importlib.metadata', fromlist=['version']).version('imgdist')",
)


class Naming:
    """The part of `Cluster` that names engines and finds them (a mixin: `Cluster` has the client)."""

    # ----- engines by name ---------------------------------------------------------------
    def workers(self, *, timeout_s: float = DEFAULT_ANSWER_TIMEOUT_S) -> list[Worker]:
        """Every engine that answers within `timeout_s`, named; unnamed engines become `engine<id>`."""
        return self.identify(self._client.ids, timeout_s=timeout_s)

    def identify(self, ids, *, timeout_s: float = DEFAULT_ANSWER_TIMEOUT_S) -> list[Worker]:
        """The engines `ids` that answer within `timeout_s`, as named workers, in id order.

        An engine whose Python, ipyparallel or imgdist does not match this main's is listed as
        `engine<id>@host` with its `problem` said, and is never given work.
        """
        ids = sorted(set(ids) & set(self._client.ids))
        software = self._software(ids, timeout_s=timeout_s)
        main = Software.here()
        problems = {eid: software[eid].mismatch(main, eid) for eid in software}
        futures = {
            eid: self._view(eid).apply_async(
                EngineTask("set_label"), engine_label(eid), only_if_unset=True
            )
            for eid in ids
            if eid in problems and not problems[eid]
        }
        cf.wait(list(futures.values()), timeout=timeout_s)
        found = []
        for eid in ids:
            if problems.get(eid):
                found.append(self._unusable(eid, software[eid], problems[eid]))
                continue
            future = futures.get(eid)
            if future is None or not future.done():
                continue
            try:
                ident: Identity = future.result(timeout=0)
            except ipp_error.KernelError:
                continue
            found.append(self._worker(eid, ident))
        return found

    def _unusable(self, engine_id: int, software: Software, problem: str) -> Worker:
        name = name_of(software.label or engine_label(engine_id), software.host)
        return Worker(name, engine_id, software.host, 0, software.python, self, problem)

    def _software(self, ids: list[int], *, timeout_s: float) -> dict[int, Software]:
        """What each engine runs, asked once per engine (remembered)."""
        unknown = [eid for eid in ids if eid not in self._software_of]
        futures = {
            eid: [self._view(eid).apply_async(eval, probe) for probe in SOFTWARE_PROBES]
            for eid in unknown
        }
        cf.wait([f for answers in futures.values() for f in answers], timeout=timeout_s)
        for eid, answers in futures.items():
            if not all(f.done() for f in answers[:4]):
                continue
            try:
                host, python, ipyparallel, label = (f.result(timeout=0) for f in answers[:4])
            except ipp_error.KernelError:
                continue
            last = answers[4]
            imgdist = last.result(timeout=0) if last.done() and not last.exception() else None
            self._software_of[eid] = Software(host, python, ipyparallel, label, imgdist)
        return {eid: self._software_of[eid] for eid in ids if eid in self._software_of}

    def _set_label(self, engine_id: int, label: str, *, only_if_unset: bool) -> Worker:
        future = self._view(engine_id).apply_async(
            EngineTask("set_label"), label, only_if_unset=only_if_unset
        )
        return self._worker(engine_id, future.get(timeout=DEFAULT_ANSWER_TIMEOUT_S))

    def _worker(self, engine_id: int, ident: Identity) -> Worker:
        return Worker(
            name_of(ident.label, ident.host), engine_id, ident.host, ident.pid, ident.python, self
        )

    @property
    def engine_ids(self) -> list[int]:
        """Ids of the engines the controller currently counts as registered."""
        return sorted(self._client.ids)
