"""A client of one ipyparallel controller: connecting, submitting work, reading outcomes."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import socket
import time
from pathlib import Path
from typing import Self

import ipyparallel as ipp
from ipyparallel import error as ipp_error

from imgdist.cluster.connection import check_connection_file
from imgdist.cluster.identity import Naming, Software, Worker
from imgdist.cluster.launch import DEFAULT_START_TIMEOUT_S, Launching
from imgdist.cluster.remote import MoreEngines
from imgdist.dataroute import DataServer
from imgdist.engine import EngineTask
from imgdist.errors import ConnectionFileError, NoEnginesError, WorkerLostError
from imgdist.launchers import LAUNCHERS

DEFAULT_CONNECT_TIMEOUT_S = 10.0


class Cluster(Naming, Launching, MoreEngines):
    """A client of one ipyparallel controller, and the local cluster behind it if started here."""

    def __init__(
        self, client: ipp.Client, *, local: ipp.Cluster | None = None, source: str = ""
    ) -> None:
        self._client = client
        self._local = local
        self._views: dict[int, ipp.DirectView] = {}
        # the shared-disk check's answers, per (engine id, folders): '' or what is wrong
        self.shared_answers: dict[tuple[int, str], str] = {}
        self._software_of: dict[int, Software] = {}
        self._stopped = False
        self.port_range: tuple[int, int] | None = None  # for the data route, when given
        self._launcher = LAUNCHERS["local"]
        self._work_dir: Path | None = None
        self._remote_dirs: list[tuple[str, list[str], str]] = []  # (host, ssh args, folder)
        self._controller_tree: list = []  # the controller's processes as started (psutil)
        self.source = source

    @classmethod
    def connect(
        cls, connection: str | Path, *, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ) -> Cluster:
        """Connect to a running controller.

        `connection` is a client connection file (`ipcontroller-*-client.json`), or
        `PROFILE` / `PROFILE:CLUSTER_ID` for a cluster that ipyparallel knows by profile.
        """
        text = str(connection).strip()
        if text.endswith(".json") or "/" in text or Path(text).is_file():
            path = check_connection_file(text)
            kwargs: dict = {"url_file": str(path)}
        else:
            profile, _, cluster_id = text.partition(":")
            kwargs = {"profile": profile or "default", "cluster_id": cluster_id or ""}
            path = None
        try:
            if path is not None:
                # ipp.Client(url_file=...) is ignored in 9.x: the file must be passed first.
                client = ipp.Client(str(path), timeout=timeout_s)
            else:
                client = ipp.Client(timeout=timeout_s, **kwargs)
        # TimeoutError is an OSError: it must be caught first.
        except (TimeoutError, ipp_error.TimeoutError):
            msg = (
                f"The controller named in {text!r} did not answer within {timeout_s:g} s: the "
                "cluster is gone (a stale connection file), a firewall blocks its ports, or the "
                "file's key is wrong; start the cluster again and use its new connection file."
            )
            raise ConnectionFileError(msg) from None
        except OSError as exc:
            msg = (
                f"No connection file for {text!r} ({exc}); start the cluster first "
                "(`ipcluster start` or `imgdist run --local 4`) or give the path of its "
                "ipcontroller-*-client.json."
            )
            raise ConnectionFileError(msg) from None
        return cls(client, source=text)

    def wait_for_engines(
        self, n_engines: int, *, timeout_s: float = DEFAULT_START_TIMEOUT_S
    ) -> None:
        """Wait until at least `n_engines` engines are registered, or raise NoEnginesError."""
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    remaining = max(0.0, deadline - time.monotonic())
                    self._client.wait_for_engines(
                        n_engines, timeout=remaining, block=True, interactive=False
                    )
                    return
                except ipp_error.EngineError:
                    continue  # an engine unregistered while we waited: keep waiting for the count
        except (TimeoutError, ipp_error.TimeoutError):
            have = len(self._client.ids)
            msg = (
                f"{have} of {n_engines} engines registered with {self.source} within {timeout_s:g} s; "
                "start more workers (`imgdist worker --connection ENGINE_JSON --name LABEL`) "
                "or ask for fewer, and check the worker logs for errors."
            )
            raise NoEnginesError(msg) from None

    # ----- work --------------------------------------------------------------------------
    def submit(self, worker: Worker, function: str, *args, **kwargs) -> cf.Future:
        """Run `imgdist.engine.<function>(*args, **kwargs)` on `worker`; a Future of its result.

        An engine that is already gone gives a Future failed with WorkerLostError, so callers
        handle every loss in one place.
        """
        if worker.engine_id in self._client.ids:
            try:
                return self._view(worker.engine_id).apply_async(
                    EngineTask(function), *args, **kwargs
                )
            except (IndexError, ipp_error.NoEnginesRegistered):
                pass  # unregistered between the check and the send
        lost: cf.Future = cf.Future()
        lost.set_exception(
            WorkerLostError(f"worker {worker.name} (engine {worker.engine_id}) is gone")
        )
        return lost

    def outcome(self, future: cf.Future, worker: Worker):
        """The value of a finished future; WorkerLostError if its engine died, or if the task
        failed as a whole (per-image errors are answers, so this is the worker's own trouble:
        its shared disk went away, it ran out of memory outside an image, ...).

        The client's caches of the result are cleared, so a long run does not grow the main's memory.
        """
        try:
            # the Future API: AsyncResult.get() can still say "not ready" just after done()
            return future.result(timeout=0)
        except ipp_error.RemoteError as exc:
            if exc.ename == "EngineError" or "died" in str(exc.evalue):
                msg = f"worker {worker.name} (engine {worker.engine_id}, pid {worker.pid}) died while holding work"
            else:
                msg = f"worker {worker.name} failed its task: {exc.ename}: {exc.evalue}"
            raise WorkerLostError(msg) from None
        finally:
            with contextlib.suppress(Exception):
                self._client.purge_local_results(jobs=[future])

    def abandon(self, worker: Worker, futures: list[cf.Future]) -> None:
        """Give up on `worker`'s `futures`: the queued ones are aborted, the running one is
        interrupted (SIGINT through the engine's nanny). Best effort: a worker that does not
        answer at all is beyond reach."""
        with contextlib.suppress(Exception):
            self._client.abort(jobs=futures, targets=[worker.engine_id], block=False)
        with contextlib.suppress(Exception):
            self._client.send_signal("SIGINT", targets=[worker.engine_id], block=False)
        for future in futures:
            with contextlib.suppress(Exception):
                self._client.purge_local_results(jobs=[future])

    def data_server(self, run_id: bytes) -> DataServer:
        """A data route for one run: bound where workers reach the controller (inside the
        controller's port range when one was given), CurveZMQ when the cluster uses it."""
        host, _ = self.controller_address()
        if host in ("*", "0.0.0.0", ""):
            host = socket.gethostbyname(socket.gethostname())
        return DataServer(
            self._client.session.key,
            run_id,
            host,
            ports=self.port_range,
            curve=bool(self._client.curve_serverkey),
        )

    def published(self, future: cf.Future) -> dict:
        """What the task behind `future` has published so far (keys add up), while it runs."""
        try:
            return dict(future.metadata["data"])  # one C-level copy: the IO thread adds to it
        except (AttributeError, KeyError, TypeError):
            return {}

    def controller_address(self) -> tuple[str, int]:
        """(host, port) of the controller's registration socket."""
        # ipyparallel has no public accessor for the connection info a Client was made from
        # (a Client made from a profile has no file path we could read instead)
        config = self._client._config
        registration = str(config["registration"])  # a port, or by now the URL 'tcp://host:port'
        if registration.isdigit():
            return str(config.get("interface", "tcp://127.0.0.1")).removeprefix("tcp://"), int(
                registration
            )
        host, _, port = registration.removeprefix("tcp://").rpartition(":")
        return host.strip("[]"), int(port)

    def controller_reachable(self, timeout_s: float = 2.0) -> bool:
        """Whether the controller still accepts connections (a TCP connect, nothing sent)."""
        host, port = self.controller_address()
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True
        except OSError:
            return False

    def busy_engine_ids(self) -> set[int]:
        """Engines that still hold work this client sent (known here, no question to the hub)."""
        # private: the public `queue_status()` asks the controller (a round trip per call) and
        # counts every client's work; this is what this client itself still waits for
        outstanding = self._client._outstanding_dict
        return {eid for eid, ident in self._client._engines.items() if outstanding.get(ident)}

    def _view(self, engine_id: int) -> ipp.DirectView:
        if engine_id not in self._views:
            self._views[engine_id] = self._client.direct_view(engine_id)
        return self._views[engine_id]

    # ----- connection files and lifetime -------------------------------------------------
    @property
    def is_local(self) -> bool:
        """Whether this object started the cluster (and will stop it)."""
        return self._local is not None

    @property
    def controller_pid(self) -> int | None:
        """The controller's process id, when this object started it."""
        return (
            self._local.controller.pid
            if self._local is not None and self._local.controller
            else None
        )

    @property
    def engine_connection_file(self) -> Path | None:
        """The file workers need to join (`ipcontroller-*-engine.json`), when known here."""
        if self._local is not None:
            return self._security_file("engine")
        if self.source.endswith("-client.json"):
            candidate = Path(self.source[: -len("-client.json")] + "-engine.json")
            return candidate if candidate.is_file() else None
        return None

    def _security_file(self, kind: str) -> Path:
        """The `kind` ('engine' or 'client') connection file of the cluster started here."""
        security = Path(self._local.profile_dir) / "security"
        return security / f"ipcontroller-{self._local.cluster_id}-{kind}.json"

    @property
    def client_connection_file(self) -> Path | None:
        """The file other clients need to connect (`ipcontroller-*-client.json`), when known."""
        if self._local is not None:
            return self._security_file("client")
        return Path(self.source) if self.source.endswith(".json") else None

    @property
    def is_open(self) -> bool:
        """Whether `stop` has not been called yet."""
        return not self._stopped

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
