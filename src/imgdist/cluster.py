"""Talking to the cluster: the only module that imports ipyparallel.

A `Cluster` is a client connection to one ipyparallel controller, either to a local cluster it
started itself or to one that was already running; it names engines, finds them by name and
submits batches to them.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib.metadata
import json
import logging
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import ipyparallel as ipp
from ipyparallel import error as ipp_error
from traitlets.config import Config

from imgdist.dataroute import DataServer
from imgdist.engine import LABEL_ENV, EngineTask, Identity
from imgdist.errors import ConnectionFileError, NoEnginesError, ParameterError, WorkerLostError
from imgdist.launchers import (
    BATCH,
    ENDED,
    LAUNCHERS,
    NEVER_STARTS,
    check_launcher,
    launcher_config,
    one_line,
    pending_sentence,
    slurm_job,
    submit_errors,
)

DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_ANSWER_TIMEOUT_S = 10.0
HEARTBEAT_ARGS = ("--HeartMonitor.period=1000", "--HeartMonitor.max_heartmonitor_misses=5")
STOP_TIMEOUT_S = 5.0
LAUNCH_POLL_S = 0.25
# Ports a controller listens on (ipyparallel 9: registration, 2 x control, mux, task, iopub and
# broadcast, hb_ping, hb_pong, notification, and its schedulers' internal ones): "Used 18 random
# ports" in its log.
CONTROLLER_PORTS = 18
DATA_ROUTE_PORTS = 1  # the direct transport's own connection, bound per run
PORTS_NEEDED = CONTROLLER_PORTS + DATA_ROUTE_PORTS
# ipyparallel's spelling of logging levels on its command lines
_LEVEL_NAMES = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


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


class Cluster:
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
        self.source = source

    # ----- starting and connecting -------------------------------------------------------
    @classmethod
    def start_local(
        cls,
        n_engines: int = 4,
        *,
        label_prefix: str = "worker",
        profile_dir: Path | None = None,
        controller_ip: str = "127.0.0.1",
        controller_args: list[str] | None = None,
        curve: bool = False,
        ports: tuple[int, int] | None = None,
        launcher: str = "local",
        launcher_args: str = "",
        log_level: int = logging.WARNING,
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> Cluster:
        """Start a controller here and `n_engines` engines, named `<label_prefix>1@<their host>` ...

        The engines are processes on this machine, or started by `launcher` (`slurm`, `mpi`,
        `pbs`, `sge`, `lsf`) with `launcher_args` given to its submit command or mpiexec. The
        controller listens on `controller_ip` (loopback unless told otherwise: engines on other
        nodes must reach it), checks engines' heartbeats every second (a worker that stops
        answering is given up after 5 s, not ipyparallel's default 35 s), and with `curve`
        encrypts with CurveZMQ. With `ports` (LO, HI) every port it listens on is in that range
        (for firewalls). The controller and engines log at `log_level` to `log_file`, never to
        the notebook. Engines that do not come up end the wait early with the cause when it is
        known (a job that can never start or has ended, mpiexec or an engine that exited).
        """
        spec = check_launcher(launcher, n_engines, launcher_args)
        if profile_dir is not None:
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
        options = {"profile_dir": str(profile_dir)} if profile_dir is not None else {}
        quiet = [f"--log-level={_LEVEL_NAMES.get(log_level, log_level)}"]
        args = [*HEARTBEAT_ARGS, *quiet, *(["--IPController.enable_curve=True"] if curve else [])]
        if ports is not None:
            free = free_ports(controller_ip, ports)
            args.append(f"--IPController.ports={','.join(map(str, free))}")
        work_dir = Path(tempfile.mkdtemp(prefix="imgdist-launch-"))  # job scripts, submit errors
        config = Config()
        config.EngineLauncher.engine_args = quiet
        for trait, value in launcher_config(launcher, launcher_args, work_dir).items():
            setattr(config[spec.config_class], trait, value)
        local = ipp.Cluster(
            n=n_engines,
            engines=launcher,
            controller_ip=controller_ip,
            controller_args=[*args, *(controller_args or [])],
            config=config,
            **options,
        )
        # what ipyparallel's launchers say (engine output on exit, stops) goes to a file too
        local.log = _file_logger(Path(local.profile_dir) / "log", local.cluster_id)
        cluster = None
        try:
            try:
                local.start_cluster_sync()
            except subprocess.CalledProcessError as exc:
                refused = submit_errors(work_dir) or f"{exc.cmd[-2]} exited with {exc.returncode}"
                msg = (
                    f"{spec.program} refused the engines' job: {refused}. Check --launcher-args "
                    f"({launcher_args or 'none given'}): partition, account, time limit."
                )
                raise NoEnginesError(msg) from None
            client = local.connect_client_sync()
            source = f"local cluster {local.cluster_id}"
            if launcher != "local":
                source = f"cluster {local.cluster_id} (engines: {spec.what})"
            cluster = cls(client, local=local, source=source)
            cluster._launcher, cluster._work_dir = spec, work_dir
            if ports is not None:
                cluster._check_ports(ports)
                cluster.port_range = ports
            cluster._wait_for_launch(n_engines, timeout_s=timeout_s)
            for position, engine_id in enumerate(sorted(client.ids)[:n_engines], start=1):
                cluster._set_label(engine_id, f"{label_prefix}{position}", only_if_unset=False)
        except BaseException:
            if cluster is not None:
                cluster.stop()
            else:
                _forget_unsubmitted(local)
                with contextlib.suppress(Exception):
                    local.stop_cluster_sync()
                shutil.rmtree(work_dir, ignore_errors=True)
            raise
        return cluster

    def _wait_for_launch(self, n_engines: int, *, timeout_s: float) -> None:
        """Wait until `n_engines` engines registered; NoEnginesError with the cause as soon as
        one is known, or after `timeout_s` with what is known then (a pending job's reason)."""
        deadline = time.monotonic() + timeout_s
        waiting_on = ""
        while len(self._client.ids) < n_engines:
            problem, waiting_on = self._launch_problem()
            if problem or time.monotonic() > deadline:
                have = len(self._client.ids)
                msg = problem or (
                    f"{have} of {n_engines} engines registered with {self.source} within "
                    f"{timeout_s:g} s" + (f": {waiting_on}" if waiting_on else "")
                )
                msg = f"{msg}; {self._launch_advice()}"
                raise NoEnginesError(msg)
            time.sleep(LAUNCH_POLL_S)

    def _launch_problem(self) -> tuple[str, str]:
        """(why the engines will never come, what they are waiting on), '' for either unknown."""
        for engine_set in list(self._local.engines.values()):
            if self._launcher.name == "slurm":
                job = str(getattr(engine_set, "job_id", "") or "")
                state, reason = slurm_job(job) if job else ("", "")
                if state == "PENDING":
                    if reason in NEVER_STARTS:
                        return pending_sentence(job, reason), ""
                    return "", pending_sentence(job, reason)
                if state in ENDED or (job and not state):
                    output = one_line(engine_set.get_output(remove=False) or "")
                    ended = state or "no longer in the queue"
                    return f"Slurm job {job} ended ({ended}) before its engines registered" + (
                        f"; its output ends: {output[-300:]}" if output else ""
                    ), ""
                continue
            children = getattr(engine_set, "launchers", None) or {"": engine_set}
            for launcher in children.values():
                code = (
                    launcher.poll() if hasattr(launcher, "process") and launcher.process else None
                )
                if code is not None:
                    output = one_line(launcher.get_output(remove=False) or "")
                    what = "mpiexec" if self._launcher.name == "mpi" else "an engine"
                    return f"{what} exited with code {code} before the engines registered" + (
                        f": {output}" if output else ""
                    ), ""
        return "", ""

    def _launch_advice(self) -> str:
        name = self._launcher.name
        if name == "slurm":
            advice = "the job was cancelled. Check the partition and limits (--launcher-args) and `sinfo`."
        elif name == "mpi":
            advice = (
                "check mpiexec's options (--launcher-args), e.g. --oversubscribe or a hostfile."
            )
        elif name in BATCH:
            advice = "the job was cancelled; check the queue and --launcher-args."
        else:
            return f"check the engine logs in {self.log_file}."
        host, _ = self.controller_address()
        if host.startswith("127.") or host in ("localhost", "::1"):
            advice += (
                f" The controller listens on {host} only: engines on other nodes need --ip with "
                "an address of this machine that they reach."
            )
        return advice

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
                EngineTask("set_label"), f"engine{eid}", only_if_unset=True
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
        name = f"{software.label or f'engine{engine_id}'}@{software.host}"
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
            f"{ident.label}@{ident.host}", engine_id, ident.host, ident.pid, ident.python, self
        )

    @property
    def engine_ids(self) -> list[int]:
        """Ids of the engines the controller currently counts as registered."""
        return sorted(self._client.ids)

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
            security = Path(self._local.profile_dir) / "security"
            return security / f"ipcontroller-{self._local.cluster_id}-engine.json"
        if self.source.endswith("-client.json"):
            candidate = Path(self.source[: -len("-client.json")] + "-engine.json")
            return candidate if candidate.is_file() else None
        return None

    @property
    def client_connection_file(self) -> Path | None:
        """The file other clients need to connect (`ipcontroller-*-client.json`), when known."""
        if self._local is not None:
            security = Path(self._local.profile_dir) / "security"
            return security / f"ipcontroller-{self._local.cluster_id}-client.json"
        return Path(self.source) if self.source.endswith(".json") else None

    def start_ssh_engines(
        self,
        hosts: list[str],
        labels: list[str],
        *,
        ssh_args: list[str] | None = None,
        remote_python: str = "",
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> list[Worker]:
        """Start one engine on each of `hosts` (`[user@]host[:port]`) over SSH, through
        ipyparallel's SSH engine launcher, named `labels[i]@<that host>`.

        `remote_python` is the interpreter on the hosts that has imgdist (default: this one's
        path); the hosts must reach this controller's address.
        """
        if self._local is None:
            msg = (
                f"engines over SSH start from a controller started here, but this one ({self.source}) "
                "was only connected to; start it here (imgdist run without --connection, or the "
                "notebook with no connection), or start workers on those machines with "
                "`imgdist worker`."
            )
            raise ParameterError(msg)
        python = remote_python or sys.executable
        engines = {
            host: {
                "n": 1,
                "engine_cmd": ["env", f"{LABEL_ENV}={label}", python, "-m", "ipyparallel.engine"],
            }
            for host, label in zip(hosts, labels, strict=True)
        }
        ssh = list(ssh_args or [])
        before = set(self._client.ids)
        launcher_class = self._local.engine_launcher_class
        self._local.engine_launcher_class = "ssh"
        # The connection file (with the key) goes to a folder of its own on each host: a name
        # nobody can guess, made here with mode 0700 (`mkdir` fails if it exists, so it cannot
        # have been made beforehand by someone else), removed when the cluster stops. Not the
        # local profile's path: on a shared disk scp would copy the file onto itself.
        # One engine set per host, so each host has a folder of its own (hosts may share /tmp).
        try:
            for host, engine in engines.items():
                remote_dir = f"/tmp/imgdist-ssh-{secrets.token_hex(12)}"
                _ssh(host, ssh, f"umask 077 && mkdir -m 700 {remote_dir}")
                self._remote_dirs.append((host, ssh, remote_dir))
                self._local.start_engines_sync(
                    n=1,
                    engines={host: engine},
                    ssh_args=ssh,
                    scp_args=_scp_args(ssh),
                    remote_python=python,
                    remote_profile_dir=remote_dir,
                )
        except subprocess.CalledProcessError as exc:
            msg = (
                f"could not start an engine over SSH on {', '.join(hosts)} ({exc.cmd[0]} exited with "
                f"{exc.returncode}); check that `ssh HOST` works without a password and that {python} "
                "with imgdist exists there."
            )
            raise NoEnginesError(msg) from None
        finally:
            self._local.engine_launcher_class = launcher_class
        new_ids = self._wait_for_new(before, len(hosts), timeout_s=timeout_s)
        return self.identify(new_ids)

    def _wait_for_new(self, before: set[int], n_engines: int, *, timeout_s: float) -> list[int]:
        # new ids rather than a count: an engine that just died may still be counted
        deadline = time.monotonic() + timeout_s
        while len(set(self._client.ids) - before) < n_engines:
            if time.monotonic() > deadline:
                msg = (
                    f"{len(set(self._client.ids) - before)} of {n_engines} new engines registered "
                    f"within {timeout_s:g} s; check the engine logs in {self._local.profile_dir}."
                )
                raise NoEnginesError(msg)
            time.sleep(0.05)
        return sorted(set(self._client.ids) - before)

    def start_engines(
        self,
        n_engines: int,
        *,
        label_prefix: str = "worker",
        labels: list[str] | None = None,
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> list[Worker]:
        """Start `n_engines` more local engines (local clusters only) and name them.

        They are named `labels` (e.g. to bring back a worker that was lost), or
        `<label_prefix><engine id + 1>`.
        """
        if self._local is None:
            msg = (
                f"more engines can be started only on a cluster started here, not on {self.source}; "
                "start workers on their machines with `imgdist worker`."
            )
            raise ParameterError(msg)
        before = set(self._client.ids)
        self._local.start_engines_sync(n=n_engines)
        new_ids = self._wait_for_new(before, n_engines, timeout_s=timeout_s)
        names = list(labels or []) + [
            f"{label_prefix}{eid + 1}" for eid in new_ids[len(labels or []) :]
        ]
        return [
            self._set_label(eid, label, only_if_unset=False)
            for eid, label in zip(new_ids, names, strict=False)
        ]

    def _check_ports(self, ports: tuple[int, int]) -> None:
        outside = sorted(
            port
            for path in (self.client_connection_file, self.engine_connection_file)
            for port in connection_ports(path)
            if not ports[0] <= port <= ports[1]
        )
        if outside:
            msg = (
                f"the controller listens on ports {outside} outside {ports[0]}-{ports[1]}; "
                f"give a range of at least {PORTS_NEEDED} free ports."
            )
            raise ParameterError(msg)

    @property
    def is_open(self) -> bool:
        """Whether `stop` has not been called yet."""
        return not self._stopped

    @property
    def log_file(self) -> Path | None:
        """The file that keeps what the controller and engines started here wrote."""
        if self._local is None:
            return None
        return (
            Path(self._local.profile_dir) / "log" / f"imgdist-cluster-{self._local.cluster_id}.log"
        )

    def stop(self) -> str:
        """Close the client, and stop the cluster if this object started it; one line saying what
        happened.

        Engines are asked to shut down first, so they exit cleanly instead of dying on a signal
        (ipyparallel's engines print a traceback when terminated); stragglers are then stopped.
        """
        self._stopped = True
        if self._local is None:
            with contextlib.suppress(Exception):
                self._client.close()
            return f"Disconnected from {self.source}; that cluster keeps running."
        engines = len(self._client.ids)
        with contextlib.suppress(Exception):
            self._shut_down_engines()
        with contextlib.suppress(Exception):
            self._client.close()
        log_file = self.log_file
        with contextlib.suppress(Exception):
            self._keep_output()
        _forget_unsubmitted(self._local)
        jobs = [
            str(engine_set.job_id)
            for engine_set in self._local.engines.values()
            if getattr(engine_set, "job_id", "")
        ]
        with contextlib.suppress(Exception):
            self._local.stop_cluster_sync()
        if self._launcher.name == "slurm":
            _wait_until_dequeued(jobs)
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
        for host, ssh_args, folder in self._remote_dirs:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                _ssh(host, ssh_args, f"rm -rf {folder}")
        self._remote_dirs = []
        for handler in self._local.log.handlers:
            handler.close()
        self._local = None
        noun = "engine" if engines == 1 else "engines"
        return f"Stopped the local cluster (controller and {engines} {noun}); its log: {log_file}"

    def _keep_output(self) -> None:
        """Copy what the controller and engines wrote into the cluster's log file: ipyparallel
        removes their output files when it stops them."""
        launchers = [self._local.controller] if self._local.controller else []
        for engine_set in self._local.engines.values():
            launchers.extend(getattr(engine_set, "launchers", {}).values())
        for launcher in launchers:
            path = Path(getattr(launcher, "output_file", "") or "")
            if path.is_file() and path.stat().st_size:
                text = path.read_text(errors="replace")
                self._local.log.info("Output of %s:\n%s", path.stem, text.rstrip())

    def _shut_down_engines(self) -> None:
        ids = list(self._client.ids)
        if not ids:
            return
        self._client.shutdown(targets=ids, hub=False, block=False)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._client.ids and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_until_dequeued(jobs: list[str], timeout_s: float = 30.0) -> None:
    """Wait until cancelled Slurm jobs have left the queue (they stay COMPLETING for a moment),
    so nothing of a run is queued once it ends."""
    deadline = time.monotonic() + timeout_s
    while jobs and time.monotonic() < deadline:
        jobs = [job for job in jobs if slurm_job(job, timeout_s=5)[0]]
        if jobs:
            time.sleep(LAUNCH_POLL_S)


def _forget_unsubmitted(local: ipp.Cluster) -> None:
    """Drop engine sets whose job was never submitted: stopping them would run `scancel ''`."""
    for set_id, engine_set in list(local.engines.items()):
        if hasattr(engine_set, "job_id") and not engine_set.job_id:
            local.engines.pop(set_id)


def _file_logger(log_dir: Path, cluster_id: str) -> logging.Logger:
    """A logger that writes to `log_dir/imgdist-cluster-<id>.log` and nowhere else."""
    log_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"imgdist.cluster.{cluster_id}")
    logger.setLevel(logging.INFO)  # DEBUG would make ipyparallel stream engine output to stderr
    logger.propagate = False
    handler = logging.FileHandler(log_dir / f"imgdist-cluster-{cluster_id}.log", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.handlers = [handler]
    return logger


def _ssh(host: str, ssh_args: list[str], command: str, timeout_s: float = 30.0) -> None:
    """Run `command` on `host` over ssh (with the launcher's options); CalledProcessError if it fails."""
    subprocess.run(
        ["ssh", *ssh_args, host, command],
        check=True,
        capture_output=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def _scp_args(ssh_args: list[str]) -> list[str]:
    # scp spells ssh's port option -P; everything else (-i, -o ...) is the same
    return ["-P" if arg == "-p" else arg for arg in ssh_args]


def free_ports(address: str, ports: tuple[int, int]) -> list[int]:
    """The first CONTROLLER_PORTS ports of the range (LO, HI) that nothing listens on here (at
    least PORTS_NEEDED must be free: the data route takes one more, from the top), or a
    ParameterError naming the busy ones."""
    free, busy = [], []
    for port in range(ports[0], ports[1] + 1):
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
            try:
                probe.bind((address if address not in ("*", "") else "0.0.0.0", port))
            except OSError:
                busy.append(port)
                continue
        free.append(port)
        if len(free) == PORTS_NEEDED:
            return free[:CONTROLLER_PORTS]
    msg = (
        f"ports {ports[0]}-{ports[1]} have {len(free)} free ports on {address}, but imgdist needs "
        f"{PORTS_NEEDED} ({CONTROLLER_PORTS} for the controller, {DATA_ROUTE_PORTS} for the data route; in use: {', '.join(map(str, busy[:10]))}"
        f"{' ...' if len(busy) > 10 else ''}); give a wider or another range."
    )
    raise ParameterError(msg)


PORT_KEYS = ("registration", "control", "mux", "task", "iopub", "hb_ping", "hb_pong", "broadcast")


def connection_ports(path: Path | None) -> list[int]:
    """The TCP ports named in an ipyparallel connection file."""
    if path is None:
        return []
    info = json.loads(Path(path).read_text())
    values = [info.get(key) for key in (*PORT_KEYS, "notification")]
    flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return sorted({int(v) for v in flat if v})


def check_connection_file(path: str | Path) -> Path:
    """`path` as an existing, readable ipyparallel connection file, or a clear error."""
    path = Path(path).expanduser()
    if not path.is_file():
        msg = f"Connection file {path} does not exist; copy it from the controller machine (see the README)."
        raise ConnectionFileError(msg)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        msg = f"Connection file {path} is not readable JSON ({exc}); copy it again from the controller machine."
        raise ConnectionFileError(msg) from None
    if not isinstance(info, dict) or "key" not in info:
        msg = f"{path} is not an ipyparallel connection file (no 'key'); use ipcontroller-*-client.json or -engine.json."
        raise ConnectionFileError(msg)
    return path
