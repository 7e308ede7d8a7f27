"""ipyparallel's MPI engine launcher (`engines="mpi"`) with Debian's Open MPI, as root: what it
takes to start (--allow-run-as-root or two variables, mpi4py, --oversubscribe past the cores)
and how a refusal shows."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import ipyparallel as ipp
import pytest
from ipyparallel import error as ipp_error
from ipyparallel.cluster.launcher import MPIEngineSetLauncher
from traitlets.config import Config

from .conftest import HOST, wait_until
from .slurm import find_binary, processes_with_env


def _mpi_usable() -> str:
    """'' when these tests can run here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "these tests are about mpiexec run as root (CI runs them as root)"
    mpiexec = find_binary("mpiexec")
    if mpiexec is None:
        return "Open MPI is not installed: apt-get install openmpi-bin"
    version = subprocess.run(
        [mpiexec, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    if "Open MPI" not in version.stdout + version.stderr and "OpenRTE" not in version.stdout:
        return f"mpiexec is not Open MPI's: {version.stdout.strip()[:80]}"
    return ""


REASON = _mpi_usable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,  # the fixture and ipyparallel's launchers themselves; imgdist's use: test_batch
    pytest.mark.skipif(bool(REASON), reason=REASON),
]
ENGINE_TIMEOUT_S = 60
ROOT_REFUSAL = "mpiexec has detected an attempt to run as root."
ALLOW_ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
HAS_MPI4PY = (
    subprocess.run(
        [sys.executable, "-c", "import mpi4py"], capture_output=True, check=False
    ).returncode
    == 0
)


@pytest.fixture(scope="module")
def mpi4py_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the engines' environment needs for `import mpi4py` (ipyparallel's `--mpi` engines
    import it): nothing when this Python has it, else PYTHONPATH to a private install."""
    if HAS_MPI4PY:
        return {}
    target = tmp_path_factory.mktemp("mpi4py")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), "mpi4py"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mpi4py could not be installed: {done.stderr.strip()[-300:]}")
    return {"PYTHONPATH": str(target)}


@contextlib.contextmanager
def mpi_cluster(work: Path, n: int, **traits) -> Iterator[ipp.Cluster]:
    """An ipyparallel cluster with a local controller and MPI engines (not started), the
    `MPIEngineSetLauncher` traits given; always stopped, and its processes gone at the end."""
    profile = work / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    config = Config()
    for name, value in traits.items():
        setattr(config.MPIEngineSetLauncher, name, value)
    cluster = ipp.Cluster(
        n=n,
        engines="mpi",
        profile_dir=str(profile),
        controller_ip="127.0.0.1",
        config=config,
        shutdown_atexit=False,
    )
    try:
        yield cluster
    finally:
        try:
            if cluster.controller is not None:
                # a controller stopped before its loop runs leaves its schedulers behind (see
                # test_slurm_harness.ipp_cluster): a client that connects means it is running
                with contextlib.suppress(Exception):
                    cluster.connect_client_sync(timeout=10).close()
            cluster.stop_cluster_sync()
        finally:
            # engine nannies linger up to 3 s after their engine (telling the gone controller)
            wait_until(
                lambda: not processes_with_env("IPP_PROFILE_DIR", str(profile)), timeout_s=20
            )
            left = processes_with_env("IPP_PROFILE_DIR", str(profile))
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        assert not left, f"processes of {profile} left after stop: {left}"


def engines_report(cluster: ipp.Cluster, n: int) -> list[tuple]:
    """Wait for `n` engines; each one's (engine id, host, Open MPI rank, mpi_rank, mpi_size)."""
    client = cluster.connect_client_sync()
    try:
        client.wait_for_engines(n, timeout=ENGINE_TIMEOUT_S)
        view = client[:]
        # functions of the standard library, which an engine can always unpickle
        hosts = view.apply_sync(socket.gethostname)
        ranks = view.apply_sync(os.getenv, "OMPI_COMM_WORLD_RANK")
        mpi_ranks = view.pull("mpi_rank", block=True)  # set by the engines' `init_mpi` code
        mpi_sizes = view.pull("mpi_size", block=True)
        return sorted(zip(view.targets, hosts, ranks, mpi_ranks, mpi_sizes, strict=True))
    finally:
        client.close()


@pytest.mark.parametrize(
    ("extra_env", "code"),
    [
        ({}, 1),
        ({"OMPI_ALLOW_RUN_AS_ROOT": "1"}, 1),
        ({"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}, 1),
        (ALLOW_ROOT_ENV, 0),
    ],
)
def test_mpiexec_as_root_needs_both_variables_or_the_flag(extra_env, code):
    """As root, mpiexec refuses at once (exit 1, a box on stderr) unless given
    --allow-run-as-root or both OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMPI_ALLOW")}
    done = subprocess.run(
        ["mpiexec", "-n", "1", "true"],
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == code
    assert done.stdout == ""
    assert (ROOT_REFUSAL in done.stderr) == (code != 0)
    flagged = subprocess.run(
        ["mpiexec", "--allow-run-as-root", "-n", "1", "true"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert flagged.returncode == 0


def test_more_processes_than_cores_need_oversubscribe():
    """mpiexec starts at most one process per core unless told --oversubscribe."""
    n = str((os.cpu_count() or 1) + 1)
    plain = subprocess.run(
        ["mpiexec", "--allow-run-as-root", "-n", n, "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert plain.returncode != 0
    assert f"There are not enough slots available in the system to satisfy the {n}" in (
        plain.stdout + plain.stderr
    )
    over = subprocess.run(
        ["mpiexec", "--allow-run-as-root", "--oversubscribe", "-n", n, "true"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert over.returncode == 0


@pytest.mark.parametrize("how", ["mpi_args", "environment"])
def test_mpi_engines_start_as_root_when_allowed(tmp_path, mpi4py_env, how):
    """With `MPIEngineSetLauncher.mpi_args=['--allow-run-as-root']`, or the two OMPI variables
    in its `environment`, 2 engines register; engine ids are the MPI ranks, all on this host."""
    traits: dict = {"environment": dict(mpi4py_env)}
    if how == "mpi_args":
        traits["mpi_args"] = ["--allow-run-as-root"]
    else:
        traits["environment"].update(ALLOW_ROOT_ENV)
    with mpi_cluster(tmp_path, 2, **traits) as cluster:
        started = time.monotonic()
        cluster.start_cluster_sync()
        (engine_set,) = cluster.engines.values()
        assert isinstance(engine_set, MPIEngineSetLauncher)
        flag = ["--allow-run-as-root"] if how == "mpi_args" else []
        assert engine_set.args == [
            "mpiexec", "-n", "2", *flag, sys.executable, "-m", "ipyparallel.engine", "--mpi"
        ]  # fmt: skip
        assert engines_report(cluster, 2) == [(0, HOST, "0", 0, 2), (1, HOST, "1", 1, 2)]
        assert time.monotonic() - started < ENGINE_TIMEOUT_S
        assert engine_set.process.is_running()
        stopping = time.monotonic()
        cluster.stop_cluster_sync()
        assert time.monotonic() - stopping < 15
        assert wait_until(lambda: not engine_set.process.is_running(), timeout_s=10)


def test_refusal_is_silent_with_the_sync_api_until_polled(tmp_path, mpi4py_env):
    """Without the flag mpiexec exits 1 within a second, its message in the launcher's output
    file; when that happens after start_cluster_sync returned, the launcher still says 'running'
    and wait_for_engines just times out; engine_set.poll() notices the exit (and removes the
    output file). (An exit while start_cluster_sync still runs is noticed: CI saw it on a slow
    run; `mpiexec` starts 3 s late here so that the refusal always comes after it.)"""
    late_mpiexec = tmp_path / "late-mpiexec"
    late_mpiexec.write_text(f'#!/bin/sh\nsleep 3\nexec {find_binary("mpiexec")} "$@"\n')
    late_mpiexec.chmod(0o755)
    traits = {"environment": dict(mpi4py_env), "mpi_cmd": [str(late_mpiexec)]}
    with mpi_cluster(tmp_path, 2, **traits) as cluster:
        cluster.start_cluster_sync()
        (engine_set,) = cluster.engines.values()
        late = time.time() - engine_set.process.create_time()
        assert late < 3, f"start_cluster_sync returned {late:.1f} s after mpiexec's start"
        output_file = Path(engine_set.output_file)
        assert output_file.parent == tmp_path / "profile" / "log"
        assert wait_until(lambda: not engine_set.process.is_running(), timeout_s=15)
        assert ROOT_REFUSAL in output_file.read_text()
        # the exit callback went to the event loop of start_cluster_sync, closed since
        assert (engine_set.state, engine_set.running, engine_set.stop_data) == (
            "running",
            True,
            None,
        )
        client = cluster.connect_client_sync()
        try:
            with pytest.raises(TimeoutError, match="2 engines not ready in 3 seconds"):
                client.wait_for_engines(2, timeout=3)
        finally:
            client.close()
        assert engine_set.poll() == 1
        assert engine_set.state == "after"
        assert engine_set.stop_data == {
            "exit_code": 1,
            "pid": engine_set.pid,
            "identifier": engine_set.identifier,
        }
        assert not output_file.exists()  # logged (WARNING) and removed by notify_stop
        assert ROOT_REFUSAL in engine_set.get_output()  # kept in memory


def test_refusal_ends_start_and_connect_at_once(tmp_path, mpi4py_env):
    """In one start_and_connect_sync call the exit is noticed: EngineError within seconds,
    not after engine_timeout."""
    with mpi_cluster(tmp_path, 2, environment=dict(mpi4py_env)) as cluster:
        cluster.engine_timeout = ENGINE_TIMEOUT_S
        started = time.monotonic()
        with pytest.raises(ipp_error.EngineError, match=r"Engine set stopped: \{'exit_code': 1"):
            cluster.start_and_connect_sync()
        assert time.monotonic() - started < 15
        (engine_set,) = cluster.engines.values()
        assert engine_set.state == "after"
        assert ROOT_REFUSAL in engine_set.get_output()


@pytest.mark.skipif(HAS_MPI4PY, reason="this Python has mpi4py")
def test_mpi_engines_fail_without_mpi4py(tmp_path):
    """ipyparallel starts MPI engines with `--mpi`, which imports mpi4py: without it each
    engine dies (ModuleNotFoundError) and mpiexec exits non-zero; `--IPEngine.use_mpi=False`
    in engine_args cannot undo the flag."""
    with mpi_cluster(tmp_path, 2, mpi_args=["--allow-run-as-root"]) as cluster:
        cluster.start_cluster_sync()
        (engine_set,) = cluster.engines.values()
        assert wait_until(lambda: not engine_set.process.is_running(), timeout_s=30)
        assert engine_set.poll() not in (None, 0)
        assert "ModuleNotFoundError: No module named 'mpi4py'" in engine_set.get_output()
    probe = (
        "from ipyparallel.engine.app import IPEngine; e = IPEngine(); "
        "e.parse_command_line(['--mpi', '--IPEngine.use_mpi=False']); print(e.use_mpi)"
    )
    parsed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert parsed.stdout.strip() == "True"  # traitlets applies flags after --Class.trait=value
