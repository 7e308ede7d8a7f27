"""How engines are started: here, or by a batch system (Slurm, PBS, SGE, LSF) or mpiexec.

ipyparallel has a launcher for each; this module says how imgdist configures them (extra
arguments, where the job script goes, Open MPI's root override) and turns a launch that does
not come up into a sentence: a Slurm job still pending and why (`squeue`'s reason), a job or
an `mpiexec` that ended, with the last lines it wrote.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from imgdist.errors import ParameterError


@dataclass(frozen=True)
class Launcher:
    """One way to start engines: ipyparallel's name for it, the program it needs, its traits."""

    name: str
    what: str  # for sentences: "a Slurm job", "mpiexec", ...
    program: str  # the command that must exist on this machine ('' for local processes)
    config_class: str  # ipyparallel's launcher class, for its traits
    tested: bool
    package: str = ""  # the Debian package with `program`, for the error message


LAUNCHERS = {
    "local": Launcher("local", "local processes", "", "LocalEngineSetLauncher", True),
    "slurm": Launcher(
        "slurm", "a Slurm job", "sbatch", "SlurmEngineSetLauncher", True, "slurm-client"
    ),
    "mpi": Launcher("mpi", "mpiexec", "mpiexec", "MPIEngineSetLauncher", True, "openmpi-bin"),
    "pbs": Launcher("pbs", "a PBS job", "qsub", "PBSEngineSetLauncher", False),
    "sge": Launcher("sge", "an SGE job", "qsub", "SGEEngineSetLauncher", False),
    "lsf": Launcher("lsf", "an LSF job", "bsub", "LSFEngineSetLauncher", False),
}
BATCH = ("slurm", "pbs", "sge", "lsf")

# squeue reasons that no amount of waiting changes: fail at once instead of at the timeout
NEVER_STARTS = {
    "PartitionConfig": "it asks for more than the partition's nodes have (CPUs, memory, nodes)",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionTimeLimit": "its time limit is over the partition's",
    "BadConstraints": "its constraints cannot be met by any node",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
    "ReqNodeNotAvail": "a node it needs is not available",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
}
# squeue states of a job that has ended (or is ending) without its engines registering
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "COMPLETING", "DEADLINE", "FAILED", "NODE_FAIL"}
ENDED |= {"OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "STOPPED", "TIMEOUT"}


def check_launcher(name: str, n_engines: int, launcher_args: str = "") -> Launcher:
    """The launcher called `name`, checked usable here; a ParameterError saying what to install
    or give instead."""
    launcher = LAUNCHERS.get(name)
    if launcher is None:
        msg = f"launcher {name!r} is unknown; choose one of {', '.join(LAUNCHERS)}."
        raise ParameterError(msg)
    if name != "local" and n_engines < 1:
        msg = f"{n_engines} engines asked of {launcher.what}; ask for at least 1."
        raise ParameterError(msg)
    if launcher.program and shutil.which(launcher.program) is None:
        install = f" (Debian: apt-get install {launcher.package})" if launcher.package else ""
        msg = (
            f"the {name} launcher needs `{launcher.program}`, which is not on this machine's "
            f"PATH{install}; run imgdist where {launcher.program} works, e.g. a login node."
        )
        raise ParameterError(msg)
    if name == "mpi" and importlib.util.find_spec("mpi4py") is None:
        msg = (
            "MPI engines need mpi4py in this Python (ipyparallel's engines use it to learn their "
            "rank); install it with `pip install 'imgdist[mpi]'` or `pip install mpi4py`."
        )
        raise ParameterError(msg)
    if name == "lsf" and launcher_args.strip():
        msg = (
            "--launcher-args cannot be passed to bsub (ipyparallel pipes the job script into it); "
            "put #BSUB lines in an ipyparallel batch template instead."
        )
        raise ParameterError(msg)
    return launcher


def launcher_config(name: str, launcher_args: str, work_dir: Path) -> dict[str, object]:
    """Traits for ipyparallel's launcher class `LAUNCHERS[name].config_class`.

    Batch jobs get `launcher_args` on the submit command (options given there override the job
    script's), their script in the private `work_dir`, and the submit command's error output
    kept in `work_dir/submit.err` for the message when it refuses. mpiexec gets
    `launcher_args`, and Open MPI's root override when running as root (as in containers).
    """
    args = shlex.split(launcher_args)
    if name == "mpi":
        root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
        return {"mpi_args": [*root, *args]}
    if name not in BATCH:
        return {}
    launcher = LAUNCHERS[name]
    traits: dict[str, object] = {"batch_file_name": str(work_dir / f"{name}_engines.sh")}
    if name != "lsf":  # ipyparallel runs bsub through a shell pipe of its own
        errors = work_dir / "submit.err"
        # the submit command's stderr goes to a file (ipyparallel does not capture it)
        traits["submit_command"] = [
            "sh",
            "-c",
            f'exec "$@" 2>{shlex.quote(str(errors))}',
            "submit",
            launcher.program,
            *args,
        ]
    return traits


def submit_errors(work_dir: Path) -> str:
    """What the submit command wrote to its error output, on one line."""
    try:
        text = (Path(work_dir) / "submit.err").read_text(errors="replace")
    except OSError:
        return ""
    return one_line(text)


def one_line(text: str, limit: int = 400) -> str:
    """`text` without blank and rule lines, joined on one line, at most `limit` characters."""
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and set(line) - set("-=*")]
    joined = " ".join(kept)
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def slurm_job(job_id: str, *, timeout_s: float = 10.0) -> tuple[str, str]:
    """(state, reason) of a Slurm job from `squeue`, ('', '') once it has left the queue."""
    try:
        done = subprocess.run(
            ["squeue", "-h", "-j", str(job_id), "-o", "%T|%r"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN", "squeue did not answer"
    if done.returncode != 0 or "|" not in done.stdout:
        return "", ""
    state, _, reason = done.stdout.strip().splitlines()[0].partition("|")
    return state, reason


def pending_sentence(job_id: str, reason: str) -> str:
    """Why a pending Slurm job waits, as a person would say it."""
    why = NEVER_STARTS.get(reason)
    if why:
        return f"Slurm job {job_id} can never start ({reason}: {why})"
    known = {
        "Resources": "the nodes are busy",
        "Priority": "jobs of higher priority are ahead of it",
        "BeginTime": "it may not start yet (--begin)",
        "Dependency": "it waits on another job",
        "JobHeldUser": "it is held",
        "JobHeldAdmin": "an administrator holds it",
    }
    return f"Slurm job {job_id} is still pending ({reason}: {known.get(reason, 'see squeue')})"
