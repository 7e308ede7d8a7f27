"""Starting and stopping a cluster here: the controller, local engines, or engines that Slurm, MPI
(and PBS, SGE, LSF) start; bounded waits that say why engines did not come."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ipyparallel as ipp
from traitlets.config import Config

from imgdist.cluster.connection import PORTS_NEEDED, connection_ports, free_ports
from imgdist.cluster.lifetime import LAUNCH_POLL_S, Stopping, forget_unsubmitted
from imgdist.cluster.remote import DEFAULT_START_TIMEOUT_S
from imgdist.errors import NoEnginesError, ParameterError
from imgdist.launchers import (
    BATCH,
    ENDED,
    NEVER_STARTS,
    Launcher,
    check_launcher,
    launcher_config,
    one_line,
    pending_sentence,
    slurm_job,
    submit_errors,
)
from imgdist.names import WORKER_LABEL, numbered_label

if TYPE_CHECKING:
    from imgdist.cluster.client import Cluster


HEARTBEAT_ARGS = ("--HeartMonitor.period=1000", "--HeartMonitor.max_heartmonitor_misses=5")


# ipyparallel's spelling of logging levels on its command lines
_LEVEL_NAMES = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class Launching(Stopping):
    """The part of `Cluster` that starts and stops what it started (a mixin)."""

    # ----- starting and connecting -------------------------------------------------------
    @classmethod
    def start_local(
        cls,
        n_engines: int = 4,
        *,
        label_prefix: str = WORKER_LABEL,
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
        work_dir = Path(tempfile.mkdtemp(prefix="imgdist-launch-"))  # job scripts, submit errors
        local = _local_cluster(
            n_engines,
            profile_dir=profile_dir,
            controller_ip=controller_ip,
            controller_args=[
                *_controller_args(controller_ip, curve=curve, ports=ports, log_level=log_level),
                *(controller_args or []),
            ],
            spec=spec,
            launcher_args=launcher_args,
            log_level=log_level,
            work_dir=work_dir,
        )
        cluster = None
        try:
            _start(local, spec, launcher_args, work_dir)
            source = f"local cluster {local.cluster_id}"
            if launcher != "local":
                source = f"cluster {local.cluster_id} (engines: {spec.what})"
            cluster = cls(local.connect_client_sync(), local=local, source=source)
            cluster._note_started()
            cluster._settle(spec, work_dir, ports, n_engines, label_prefix, timeout_s)
        except BaseException:
            if cluster is not None:
                cluster.stop()
            else:
                _discard(local, work_dir)
            raise
        return cluster

    def _settle(
        self, spec: Launcher, work_dir: Path, ports, n_engines: int, label_prefix: str, timeout_s
    ) -> None:
        """Once the controller is up: its ports checked, the engines awaited and named."""
        self._launcher, self._work_dir = spec, work_dir
        if ports is not None:
            self._check_ports(ports)
            self.port_range = ports
        self._wait_for_launch(n_engines, timeout_s=timeout_s)
        for position, engine_id in enumerate(self.engine_ids[:n_engines], start=1):
            self._set_label(engine_id, numbered_label(position, label_prefix), only_if_unset=False)

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


def _controller_args(
    controller_ip: str, *, curve: bool, ports: tuple[int, int] | None, log_level: int
) -> list[str]:
    """ipcontroller's options: heartbeats every second, quiet logs, CurveZMQ, the ports."""
    args = [*HEARTBEAT_ARGS, f"--log-level={_LEVEL_NAMES.get(log_level, log_level)}"]
    if curve:
        args.append("--IPController.enable_curve=True")
    if ports is not None:
        free = free_ports(controller_ip, ports)
        args.append(f"--IPController.ports={','.join(map(str, free))}")
    return args


def _local_cluster(
    n_engines: int,
    *,
    profile_dir: Path | None,
    controller_ip: str,
    controller_args: list[str],
    spec: Launcher,
    launcher_args: str,
    log_level: int,
    work_dir: Path,
) -> ipp.Cluster:
    """ipyparallel's Cluster for these options (not started), logging to its own file."""
    if profile_dir is not None:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
    options = {"profile_dir": str(profile_dir)} if profile_dir is not None else {}
    config = Config()
    config.EngineLauncher.engine_args = [f"--log-level={_LEVEL_NAMES.get(log_level, log_level)}"]
    for trait, value in launcher_config(spec.name, launcher_args, work_dir).items():
        setattr(config[spec.config_class], trait, value)
    local = ipp.Cluster(
        n=n_engines,
        engines=spec.name,
        controller_ip=controller_ip,
        controller_args=controller_args,
        config=config,
        **options,
    )
    # what ipyparallel's launchers say (engine output on exit, stops) goes to a file too
    local.log = _file_logger(Path(local.profile_dir) / "log", local.cluster_id)
    return local


def _start(local: ipp.Cluster, spec: Launcher, launcher_args: str, work_dir: Path) -> None:
    """Start the controller and submit the engines; a batch system's refusal in its words."""
    try:
        local.start_cluster_sync()
    except subprocess.CalledProcessError as exc:
        refused = submit_errors(work_dir) or f"{exc.cmd[-2]} exited with {exc.returncode}"
        msg = (
            f"{spec.program} refused the engines' job: {refused}. Check --launcher-args "
            f"({launcher_args or 'none given'}): partition, account, time limit."
        )
        raise NoEnginesError(msg) from None


def _discard(local: ipp.Cluster, work_dir: Path) -> None:
    """A start that failed before there was a client: stop what ipyparallel started."""
    forget_unsubmitted(local)
    with contextlib.suppress(Exception):
        local.stop_cluster_sync()
    shutil.rmtree(work_dir, ignore_errors=True)
