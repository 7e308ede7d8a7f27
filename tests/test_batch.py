"""`imgdist run --slurm N` and `--mpi N` against a real one-node Slurm and Debian's Open MPI:
the job done on engines they start, named worker<i>@<node>; launches that cannot come up end
within the timeout with the cause; nothing is left queued or running afterwards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgdist.cli import main

from .conftest import HOST, REPO, check_results, wait_until
from .slurm import SingleNodeSlurm, processes_with_env, slurm_usable

pytestmark = pytest.mark.integration
SLURM = slurm_usable()
MPI = "" if shutil.which("mpiexec") else "mpiexec is not installed (openmpi-bin)"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleNodeSlurm]:
    """A real one-node Slurm cluster (4 CPUs, partition `debug`), stopped even on failure."""
    if SLURM:
        pytest.skip(SLURM)
    with SingleNodeSlurm(tmp_path_factory.mktemp("slurm"), cpus=4) as cluster:
        yield cluster


@pytest.fixture
def queue(slurm: SingleNodeSlurm) -> Iterator[SingleNodeSlurm]:
    """The Slurm cluster, empty before the test; the test checks it is empty after."""
    slurm.cancel_all(timeout_s=30)
    yield slurm
    slurm.cancel_all(timeout_s=30)


def run(args: list[str], env: dict, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """`imgdist run ARGS` as a user runs it, in `cwd` with the cluster's environment."""
    return subprocess.run(
        [sys.executable, "-m", "imgdist", "run", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def left_behind(ipython_dir: Path) -> list[int]:
    """Processes of the run's cluster still alive (controller, engines, mpiexec, nannies)."""
    return [
        pid
        for pid in processes_with_env("IPYTHONDIR", str(ipython_dir))
        if Path(f"/proc/{pid}/stat").is_file()
        and Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    ]


def test_slurm_run_processes_the_job(queue, tmp_path):
    """--slurm 2: 16 portraits on 2 engines of one Slurm job, named worker1/2@<node>; the
    outputs pass the results check, and no job or process is left."""
    env = {**queue.env, "IPYTHONDIR": str(tmp_path / "ipython")}
    done = run(["--slurm", "2", "--images", "16", "--out", str(tmp_path / "out")], env, tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {row["worker"] for row in manifest} == {f"worker1@{queue.node}", f"worker2@{queue.node}"}
    check_results(tmp_path / "out", "--exact", "--expect-images", 16)
    assert queue.job_ids() == []
    assert wait_until(lambda: not left_behind(tmp_path / "ipython"), timeout_s=15)
    assert not list(tmp_path.glob("slurm-*.out"))  # nothing written into the user's folder


def test_slurm_partition_that_does_not_exist(queue, tmp_path):
    """sbatch refusing the job (no such partition) ends at once with sbatch's own reason."""
    env = {**queue.env, "IPYTHONDIR": str(tmp_path / "ipython")}
    started = time.monotonic()
    done = run(
        ["--slurm", "2", "--launcher-args=--partition=nosuch", "--out", str(tmp_path / "out")],
        env,
        tmp_path,
    )
    assert done.returncode == 2
    assert "imgdist: error: sbatch refused the engines' job: " in done.stderr
    assert "Invalid partition name specified" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
    assert queue.job_ids() == []
    assert wait_until(lambda: not left_behind(tmp_path / "ipython"), timeout_s=15)


def test_slurm_job_that_can_never_start(queue, tmp_path):
    """A job asking for more CPUs than the node has ends early with squeue's reason, cancelled."""
    env = {**queue.env, "IPYTHONDIR": str(tmp_path / "ipython")}
    started = time.monotonic()
    done = run(["--slurm", "8", "--timeout", "60", "--out", str(tmp_path / "out")], env, tmp_path)
    assert done.returncode == 2
    assert "can never start (PartitionConfig: it asks for more than the partition's" in done.stderr
    assert "the job was cancelled" in done.stderr
    assert time.monotonic() - started < 30  # well before the 60 s timeout
    assert queue.job_ids() == []


def test_slurm_job_still_pending_at_the_timeout(queue, tmp_path):
    """A job that could start later (--begin) ends at the timeout, saying why it waited."""
    env = {**queue.env, "IPYTHONDIR": str(tmp_path / "ipython")}
    done = run(
        [
            "--slurm",
            "2",
            "--launcher-args=--begin=now+1hour",
            "--timeout",
            "5",
            "--out",
            str(tmp_path / "out"),
        ],
        env,
        tmp_path,
    )
    assert done.returncode == 2
    assert "0 of 2 engines registered with cluster" in done.stderr
    assert "is still pending (BeginTime: it may not start yet (--begin))" in done.stderr
    assert queue.job_ids() == []


def test_ctrl_c_cancels_the_slurm_job(queue, tmp_path):
    """Ctrl-C while the engines' job is pending: exit 130, and the job is cancelled."""
    env = {**queue.env, "IPYTHONDIR": str(tmp_path / "ipython")}
    command = [sys.executable, "-m", "imgdist", "run", "--slurm", "2"]
    command += ["--launcher-args=--begin=now+1hour", "--out", str(tmp_path / "out")]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: queue.job_ids() != [], timeout_s=60)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "imgdist: interrupted" in err
    assert queue.job_ids() == []


@pytest.mark.skipif(bool(MPI), reason=MPI or "-")
def test_mpi_run_as_root_processes_the_job(tmp_path):
    """--mpi 2 (as root here, as in containers: the root override is passed for us) processes
    16 portraits on the 2 ranks; nothing is left running."""
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")}
    done = run(["--mpi", "2", "--images", "16", "--out", str(tmp_path / "out")], env, tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {row["worker"] for row in manifest} == {f"worker1@{HOST}", f"worker2@{HOST}"}
    check_results(tmp_path / "out", "--exact", "--expect-images", 16)
    assert wait_until(lambda: not left_behind(tmp_path / "ipython"), timeout_s=15)


@pytest.mark.skipif(bool(MPI), reason=MPI or "-")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mpi", "4"], "There are not enough slots available in the system"),
        (
            ["--mpi", "2", "--launcher-args=--no-such-option"],
            'mpiexec: Error: unknown option "--no-such-option"',
        ),
    ],
)
def test_mpiexec_failing_says_why(tmp_path, args, message):
    """mpiexec failing (too few slots on 2 cores, a bad option) ends early with its own words."""
    if args[1] == "4" and (os.cpu_count() or 1) >= 4:
        pytest.skip("this machine has slots for 4 ranks")
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")}
    started = time.monotonic()
    done = run([*args, "--timeout", "60", "--out", str(tmp_path / "out")], env, tmp_path)
    assert done.returncode == 2
    assert (
        "imgdist: error: mpiexec exited with code 1 before the engines registered: " in done.stderr
    )
    assert message in done.stderr
    assert "check mpiexec's options (--launcher-args)" in done.stderr
    assert time.monotonic() - started < 30
    assert wait_until(lambda: not left_behind(tmp_path / "ipython"), timeout_s=15)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slurm", "0"], "--slurm 0: give how many engines to start, at least 1."),
        (
            ["--local", "2", "--launcher-args=-p short"],
            "--launcher-args '-p short' is for engines started by --slurm, --mpi",
        ),
    ],
)
def test_launch_option_errors(tmp_path, capsys, args, message):
    """Launch options that cannot work are one sentence, exit 2, before anything starts."""
    assert main(["run", *args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_the_notebook_on_slurm_engines(queue, tmp_path, monkeypatch):
    """The main notebook with `launcher = "slurm"`: its 4 engines are one Slurm job, the job is
    done and checked, and the stop cell leaves nothing queued."""
    import nbformat

    from imgdist.notebook import execute

    for name, value in queue.conf_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    executed = execute(
        REPO / "notebooks" / "main.ipynb",
        tmp_path / "out" / "main.ipynb",
        parameters={"out_dir": tmp_path / "out", "launcher": "slurm", "bench_runs": 1},
    )
    nb = nbformat.read(executed, as_version=4)
    assert [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"] == []
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {row["worker"] for row in manifest} == {f"worker{i}@{queue.node}" for i in range(1, 5)}
    check_results(tmp_path / "out", "--exact", "--expect-images", 32)
    assert queue.job_ids() == []
