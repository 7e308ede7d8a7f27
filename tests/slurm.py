"""A real one-node Slurm cluster in a temporary folder, for tests (Debian's Slurm 22.05, as root).

`SingleNodeSlurm(folder)` writes its own slurm.conf, munge key, state, spool, log and pid files
under `folder`, starts its own munged (on its own socket, so a system munge is never used or
disturbed), `slurmctld -D` and `slurmd -D` on free loopback ports, and waits until the node is
idle. Clients reach it through `env` (or `conf_env` for ipyparallel's launcher `environment`).
On exit every job is cancelled, the queue is waited empty and the daemons are stopped, also after
a failure; anything a daemon left behind (slurmstepd and the job processes under it) is killed.
Needs root and `apt-get install slurmctld slurmd slurm-client munge`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

INSTALL_HINT = "apt-get install slurmctld slurmd slurm-client munge"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "scancel", "srun")
# set on the daemons only (slurmstepd inherits it): how leftovers are recognised on exit
MARKER = "SINGLE_NODE_SLURM_DIR"
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


class SlurmError(RuntimeError):
    """The test cluster could not be set up, or a Slurm command failed."""


def find_binary(name: str) -> str | None:
    """Where `name` is (also looking in /usr/sbin, where Debian puts the daemons)."""
    return shutil.which(name, path=_SEARCH_PATH)


def missing_binaries() -> list[str]:
    """The Slurm and munge programs this helper needs that are not installed."""
    return [name for name in (*DAEMONS, *CLIENTS) if find_binary(name) is None]


def slurm_usable() -> str:
    """'' when a test Slurm cluster can be started here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "the test Slurm cluster runs its daemons as root (CI runs these tests as root)"
    missing = missing_binaries()
    if missing:
        return f"Slurm is not installed (missing {', '.join(missing)}): {INSTALL_HINT}"
    return ""


def free_port() -> int:
    """A TCP port nothing listens on right now (on any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of the processes (other than this one) whose environment has `name=value`."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def wait_for(condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


class SingleNodeSlurm:
    """A one-node Slurm cluster living in `folder`: node `hostname` with `cpus` CPUs (may be more
    than the machine has: `SlurmdParameters=config_overrides`) in partition `partition`
    (the default one); `extra_conf` lines are added to slurm.conf (e.g.
    `EnforcePartLimits=ALL`, which makes sbatch refuse a job larger than the partition)."""

    def __init__(
        self,
        folder: Path,
        *,
        cpus: int = 4,
        partition: str = "debug",
        extra_conf: tuple[str, ...] = (),
        start_timeout_s: float = 30,
        stop_timeout_s: float = 30,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.cpus = cpus
        self.partition = partition
        self.extra_conf = extra_conf
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        # slurmctld only runs where SlurmctldHost names this host: the short hostname
        self.node = socket.gethostname().split(".")[0]
        self.conf_path = self.folder / "slurm.conf"
        self.munge_dir = self.folder / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.log_dir = self.folder / "log"
        self.ctld_port = 0
        self.slurmd_port = 0
        self.processes: dict[str, subprocess.Popen] = {}

    # -- what clients use ------------------------------------------------------------------

    @property
    def conf_env(self) -> dict[str, str]:
        """The variables a Slurm client needs to reach this cluster (for a launcher's
        `environment`)."""
        return {"SLURM_CONF": str(self.conf_path)}

    @property
    def env(self) -> dict[str, str]:
        """The environment for a subprocess that uses this cluster: this process's, plus
        `conf_env`."""
        return {**os.environ, **self.conf_env}

    def run(self, *argv: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client command (`sinfo`, `sbatch` ...) against this cluster, in `folder`
        (a job runs in the folder it was submitted from, and writes its `slurm-<id>.out` there)."""
        return subprocess.run(
            argv,
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def check(self, *argv: str, timeout_s: float = 30) -> str:
        """`run`, raising `SlurmError` with its stderr when the command fails; its stdout."""
        done = self.run(*argv, timeout_s=timeout_s)
        if done.returncode != 0:
            msg = f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}"
            raise SlurmError(msg)
        return done.stdout

    def submit(self, *sbatch_args: str, wrap: str = "sleep 600") -> str:
        """Submit a batch job running `wrap`; its job id."""
        out = self.check("sbatch", "--parsable", *sbatch_args, "--wrap", wrap)
        return out.strip().split(";")[0]

    def node_state(self) -> str:
        """The node's state as sinfo prints it (`idle`, `mix`, `alloc`, `down*` ...), or '' when
        the controller does not answer."""
        done = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%t", timeout_s=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    def job_ids(self) -> list[str]:
        """The ids of the jobs in the queue (pending, running or completing)."""
        return self.check("squeue", "-h", "-o", "%i").split()

    def job_state(self, job_id: str) -> str:
        """The job's state (`PENDING`, `RUNNING`, `COMPLETING` ...), '' if it is not queued."""
        done = self.run("squeue", "-h", "-j", str(job_id), "-o", "%T")
        return done.stdout.strip() if done.returncode == 0 else ""

    def pending_reason(self, job_id: str) -> str:
        """Why the job waits (`squeue -o %r`: `Resources`, `BeginTime`, `PartitionConfig` ...;
        `None` once it runs), '' if it is not queued."""
        done = self.run("squeue", "-h", "-j", str(job_id), "-o", "%r")
        return done.stdout.strip() if done.returncode == 0 else ""

    def cancel_all(self, *, timeout_s: float = 30) -> None:
        """Cancel every job and wait until the queue is empty (completing jobs included)."""
        ids = self.job_ids()
        if ids:
            self.check("scancel", *ids)
        if not wait_for(lambda: not self.job_ids(), timeout_s=timeout_s, interval_s=0.2):
            msg = f"jobs still queued {timeout_s} s after scancel: {self.job_ids()}"
            raise SlurmError(msg)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of each daemon's log, for error messages."""
        parts = []
        for path in sorted(self.log_dir.glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # -- setting up and tearing down -------------------------------------------------------

    def __enter__(self) -> SingleNodeSlurm:  # noqa: PYI034
        self.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.stop()
        else:  # the body's error is the one to see; the cluster is stopped all the same
            with contextlib.suppress(SlurmError):
                self.stop()

    def start(self) -> None:
        """Write the configuration, start munged, slurmctld and slurmd, wait for an idle node."""
        missing = missing_binaries()
        if missing:
            msg = f"Slurm is not installed (missing {', '.join(missing)}): {INSTALL_HINT}"
            raise SlurmError(msg)
        try:
            self._write_files()
            self._start_munged()
            self._spawn("slurmctld", [find_binary("slurmctld"), "-D"])
            self._spawn("slurmd", [find_binary("slurmd"), "-D", "-N", self.node])
            idle = wait_for(
                lambda: not self._alive() or self.node_state() == "idle",
                timeout_s=self.start_timeout_s,
                interval_s=0.2,
            )
            if not (idle and self._alive()):
                state = self.node_state() or "no answer from slurmctld"
                msg = (
                    f"node {self.node} not idle after {self.start_timeout_s} s (state: {state}; "
                    f"daemons exited: {self._exited()})\n{self.log_tail()}"
                )
                raise SlurmError(msg)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise

    def stop(self) -> None:
        """Cancel all jobs, stop the daemons (TERM, then KILL), kill whatever they left."""
        errors = []
        if self._alive():
            try:
                self.cancel_all(timeout_s=self.stop_timeout_s)
            except (SlurmError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
        for name in ("slurmd", "slurmctld", "munged"):  # the reverse of the start order
            process = self.processes.pop(name, None)
            if process is not None:
                _terminate(process, timeout_s=10)
        leftovers = processes_with_env(MARKER, str(self.folder))
        for pid in leftovers:  # slurmstepd of a job that was not cancelled, and its session
            _kill_session(pid)
        if errors:
            raise SlurmError("; ".join(errors))

    def _alive(self) -> bool:
        return bool(self.processes) and not self._exited()

    def _exited(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}

    def _write_files(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        # munged wants its socket folder executable by all and not writable by others
        self.munge_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.munge_dir.chmod(0o755)
        key = self.munge_dir / "munge.key"
        key.touch(mode=0o600)
        key.chmod(0o600)
        key.write_bytes(os.urandom(128))  # what `mungekey --create` makes: 1024 random bits
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = free_port()
        plugstack = self.folder / "plugstack.conf"  # not /etc/slurm/plugstack.conf
        plugstack.write_text("")
        f = self.folder
        self.conf_path.write_text(
            "\n".join(
                [
                    f"ClusterName=test{os.getpid()}",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={self.ctld_port}",
                    f"SlurmdPort={self.slurmd_port}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    f"StateSaveLocation={f / 'state'}",
                    f"SlurmdSpoolDir={f / 'spool'}",
                    f"SlurmctldPidFile={f / 'slurmctld.pid'}",
                    f"SlurmdPidFile={f / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
                    f"PlugStackConfig={plugstack}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "SchedulerType=sched/backfill",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "SlurmdParameters=config_overrides",
                    "MailProg=/bin/true",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
                    (
                        f"PartitionName={self.partition} Nodes={self.node} Default=YES "
                        "MaxTime=INFINITE State=UP"
                    ),
                    *self.extra_conf,
                    "",
                ]
            )
        )

    def _start_munged(self) -> None:
        m = self.munge_dir
        self._spawn(
            "munged",
            [
                find_binary("munged"),
                "--foreground",  # logs to stderr then, not to --log-file
                # a socket under a folder not executable by all (pytest's /tmp/pytest-of-root
                # is 0700) is refused without --force; with it, only a warning
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={m / 'munge.key'}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={self.log_dir / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
            ],
        )
        if not wait_for(lambda: self.munge_socket.exists() or not self._alive(), timeout_s=10):
            msg = f"munged made no socket in 10 s\n{self.log_tail()}"
            raise SlurmError(msg)
        if not self._alive():
            msg = f"munged exited: {self._exited()}\n{self.log_tail()}"
            raise SlurmError(msg)

    def _spawn(self, name: str, argv: list[str | None]) -> None:
        env = {**self.env, MARKER: str(self.folder)}
        with (self.log_dir / f"{name}.out").open("ab") as out:
            self.processes[name] = subprocess.Popen(
                [str(a) for a in argv],
                env=env,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def _terminate(process: subprocess.Popen, *, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)


def _kill_session(pid: int) -> None:
    """SIGKILL every process in `pid`'s session (never this process's own session)."""
    with contextlib.suppress(ProcessLookupError):
        sid = os.getsid(pid)
        if sid == os.getsid(0):
            os.kill(pid, signal.SIGKILL)
            return
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getsid(int(entry.name)) == sid:
                        os.kill(int(entry.name), signal.SIGKILL)
