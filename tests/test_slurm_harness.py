"""The one-node Slurm test cluster (tests/slurm.py), and ipyparallel's Slurm engine launcher on it:
engines as a Slurm job, a partition that does not exist, jobs that stay pending, extra sbatch
arguments."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import ipyparallel as ipp
import pytest
from ipyparallel.cluster.launcher import SlurmEngineSetLauncher
from traitlets.config import Config

from . import slurm as slurm_module
from .conftest import HOST, wait_until
from .slurm import SingleNodeSlurm, SlurmError, processes_with_env, slurm_usable

REASON = slurm_usable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,  # the fixture and ipyparallel's launchers themselves; imgdist's use: test_batch
    pytest.mark.skipif(bool(REASON), reason=REASON),
]
ENGINE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleNodeSlurm]:
    """A real one-node Slurm cluster (4 CPUs, partition `debug`), always stopped."""
    with SingleNodeSlurm(tmp_path_factory.mktemp("slurm"), cpus=4) as cluster:
        yield cluster


@pytest.fixture
def empty_queue(slurm: SingleNodeSlurm) -> Iterator[SingleNodeSlurm]:
    """The Slurm cluster with nothing queued before and after the test."""
    slurm.cancel_all(timeout_s=30)
    yield slurm
    slurm.cancel_all(timeout_s=30)


@pytest.fixture
def slurm_env(
    empty_queue: SingleNodeSlurm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> SingleNodeSlurm:
    """The empty Slurm cluster, with its SLURM_CONF in this process's environment for the test
    (as a user's shell has it: ipyparallel's launcher runs scancel with this environment), and
    the test's folder as the current one (where sbatch's jobs run, not the repository)."""
    for name, value in empty_queue.conf_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return empty_queue


def slurm_config(slurm: SingleNodeSlurm, work: Path, **traits) -> Config:
    """ipyparallel config for Slurm engines on `slurm`: the batch script in `work` (the
    default is the current folder), the partition, and `traits`."""
    config = Config()
    launcher = config.SlurmEngineSetLauncher
    launcher.batch_file_name = str(work / "slurm_engine.sbatch")  # absolute: work_dir is '.'
    launcher.queue = slurm.partition
    for name, value in traits.items():
        setattr(launcher, name, value)
    return config


@contextlib.contextmanager
def ipp_cluster(slurm: SingleNodeSlurm, work: Path, n: int, **traits) -> Iterator[ipp.Cluster]:
    """An ipyparallel cluster with a local controller and Slurm engines (not started): always
    stopped, its job gone from the queue and its processes gone at the end."""
    profile = work / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    cluster = ipp.Cluster(
        n=n,
        engines="slurm",
        profile_dir=str(profile),
        controller_ip="127.0.0.1",
        config=slurm_config(slurm, work, **traits),
        shutdown_atexit=False,
    )
    try:
        yield cluster
    finally:
        try:
            # an engine set whose sbatch failed has job_id '' and its stop would run `scancel ''`
            for set_id, engine_set in list(cluster.engines.items()):
                if not engine_set.job_id:
                    cluster.engines.pop(set_id)
            if cluster.controller is not None:
                # a controller stopped before its loop runs (it writes its connection files,
                # which start_engines waits for, before it handles SIGTERM) dies and leaves its
                # scheduler processes behind: a client that connects means it is running
                with contextlib.suppress(Exception):
                    cluster.connect_client_sync(timeout=10).close()
            cluster.stop_cluster_sync()
        finally:
            jobs_gone = wait_until(lambda: not slurm.job_ids(), timeout_s=30, interval_s=0.2)
            left = _stop_leftovers(profile)
        assert jobs_gone, f"jobs left after stop: {slurm.job_ids()}"
        assert not left, f"processes of {profile} left after stop: {left}"


def _stop_leftovers(profile: Path) -> list[int]:
    """Wait (20 s at most) for the processes of the cluster in `profile` to end, then kill the
    rest; their pids. Engine nannies linger up to 3 s after their engine (telling the gone
    controller)."""
    wait_until(lambda: not processes_with_env("IPP_PROFILE_DIR", str(profile)), timeout_s=20)
    left = processes_with_env("IPP_PROFILE_DIR", str(profile))
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def test_node_becomes_idle(slurm):
    """The node registers and is idle, in the default partition, with the CPUs configured."""
    assert slurm.node_state() == "idle"
    partitions = slurm.check("sinfo", "-h", "-o", "%P %a %D %c %N").split()
    assert partitions == [f"{slurm.partition}*", "up", "1", "4", slurm.node]
    assert "slurmd version" in (slurm.log_dir / "slurmd.log").read_text()


def test_missing_binaries_are_named_with_the_install_command(tmp_path, monkeypatch):
    """Without the Slurm programs, starting says which are missing and what to install, and
    leaves nothing behind."""
    monkeypatch.setattr(slurm_module, "find_binary", lambda name: None)
    with pytest.raises(SlurmError, match="missing munged, slurmctld") as failed:
        SingleNodeSlurm(tmp_path / "none").start()
    assert "apt-get install slurmctld slurmd slurm-client munge" in str(failed.value)
    assert not (tmp_path / "none").exists()


def test_ipyparallel_engines_run_as_one_slurm_job(slurm_env, tmp_path):
    """Two engines start as one job (`srun` of 2 tasks), report the host and the job id, and
    stop_cluster_sync cancels the job."""
    slurm = slurm_env
    with ipp_cluster(slurm, tmp_path, 2) as cluster:
        started = time.monotonic()
        cluster.start_cluster_sync()
        (engine_set,) = cluster.engines.values()
        assert isinstance(engine_set, SlurmEngineSetLauncher)
        # the launcher parsed the job id from sbatch's "Submitted batch job N"
        job_id = engine_set.job_id
        assert job_id.isdigit()
        assert engine_set.start_data == job_id
        assert slurm.job_ids() == [job_id]
        script = Path(engine_set.batch_file).read_text()
        for line in (
            "#SBATCH --ntasks=2",
            f"#SBATCH --partition={slurm.partition}",
            f"#SBATCH --output={engine_set.output_file}",
            "#SBATCH --export=ALL",
        ):
            assert line in script
        client = cluster.connect_client_sync()
        try:
            client.wait_for_engines(2, timeout=ENGINE_TIMEOUT_S)
            took = time.monotonic() - started
            # functions of the standard library: the job runs in the test's folder, where a
            # function of this module (`tests....`) could not be unpickled
            view = client[:]
            hosts = view.apply_sync(socket.gethostname)
            job_ids = view.apply_sync(os.getenv, "SLURM_JOB_ID")
            task_ids = view.apply_sync(os.getenv, "SLURM_PROCID")
        finally:
            client.close()
        seen = sorted(zip(hosts, job_ids, task_ids, strict=True))
        assert seen == [(HOST, job_id, "0"), (HOST, job_id, "1")]
        assert took < ENGINE_TIMEOUT_S
        cluster.stop_cluster_sync()
        # stop = `scancel <job id>`, returning at once; the job is completing for a moment
        assert engine_set.state == "after"
        assert engine_set.stop_data == {"job_id": job_id, "output": ""}
        assert wait_until(lambda: not slurm.job_ids(), timeout_s=30, interval_s=0.2)


def test_sbatch_fails_at_once_on_an_unknown_partition(slurm_env, tmp_path, capfd):
    """sbatch refuses a partition that does not exist, with exit code 1 and two lines on
    stderr; through ipyparallel, start_engines raises CalledProcessError and the message is only
    on the process's stderr."""
    slurm = slurm_env
    done = slurm.run("sbatch", "--partition=nosuch", "--wrap", "true")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "sbatch: error: invalid partition specified: nosuch",
        "sbatch: error: Batch job submission failed: Invalid partition name specified",
    ]
    with ipp_cluster(slurm, tmp_path, 2, queue="nosuch") as cluster:
        cluster.start_controller_sync()
        cluster.connect_client_sync(timeout=10).close()  # the controller runs (see ipp_cluster)
        capfd.readouterr()
        with pytest.raises(subprocess.CalledProcessError) as failed:
            cluster.start_engines_sync(2)
        assert failed.value.returncode == 1
        assert failed.value.cmd[0] == "sbatch"
        assert failed.value.output == b""  # check_output captures stdout only
        assert "Invalid partition name specified" in capfd.readouterr().err
        (engine_set,) = cluster.engines.values()
        assert (engine_set.state, engine_set.job_id) == ("before", "")
    assert slurm.job_ids() == []


@pytest.mark.parametrize(
    ("sbatch_args", "reason"),
    [
        (["--cpus-per-task=8"], "PartitionConfig"),  # more CPUs than the node has
        (["--begin=now+1hour"], "BeginTime"),
    ],
)
def test_job_that_cannot_start_is_pending_with_a_reason(empty_queue, sbatch_args, reason):
    """sbatch accepts a job that cannot start now; squeue tells why; scancel removes it."""
    slurm = empty_queue
    job_id = slurm.submit(*sbatch_args)
    assert wait_until(lambda: slurm.pending_reason(job_id) == reason, timeout_s=10)
    assert slurm.job_state(job_id) == "PENDING"
    assert slurm.job_ids() == [job_id]
    slurm.check("scancel", job_id)
    assert wait_until(lambda: slurm.job_ids() == [], timeout_s=10)
    assert slurm.pending_reason(job_id) == ""


def test_enforce_part_limits_makes_sbatch_refuse_at_once(slurm, tmp_path):
    """With `EnforcePartLimits=ALL` (a second cluster, beside the module's: own ports, own
    munge) sbatch refuses a job larger than the node at once instead of leaving it pending."""
    with SingleNodeSlurm(tmp_path / "strict", extra_conf=("EnforcePartLimits=ALL",)) as strict:
        assert {strict.ctld_port, strict.slurmd_port}.isdisjoint(
            {slurm.ctld_port, slurm.slurmd_port}
        )
        for too_big in (["--cpus-per-task=8"], ["--ntasks=8"]):
            done = strict.run("sbatch", *too_big, "--wrap", "true")
            assert (done.returncode, done.stdout) == (1, "")
            assert done.stderr == (
                "sbatch: error: Batch job submission failed: "
                "More processors requested than permitted\n"
            )
        assert strict.job_ids() == []
    assert slurm.node_state() == "idle"


def test_job_waits_for_resources_while_the_node_is_full(empty_queue):
    """A 1-CPU job waits with reason Resources while a 4-CPU job holds the node, and runs once
    that one is cancelled."""
    slurm = empty_queue
    big = slurm.submit("--cpus-per-task=4")
    assert wait_until(lambda: slurm.job_state(big) == "RUNNING", timeout_s=10)
    small = slurm.submit("--cpus-per-task=1")
    assert wait_until(lambda: slurm.pending_reason(small) == "Resources", timeout_s=10)
    assert slurm.pending_reason(big) == "None"
    assert sorted(slurm.job_ids()) == sorted([big, small])
    slurm.check("scancel", big)
    assert wait_until(lambda: slurm.job_state(small) == "RUNNING", timeout_s=20)


def test_ipyparallel_job_that_cannot_start_leaves_the_engines_waiting(slurm_env, tmp_path):
    """8 engines on a 4-CPU node: the job is PENDING (PartitionConfig) for good, ipyparallel
    only times out waiting for engines (the launcher still says 'running'); stopping cancels
    the job."""
    slurm = slurm_env
    with ipp_cluster(slurm, tmp_path, 8) as cluster:
        cluster.start_cluster_sync()
        (engine_set,) = cluster.engines.values()
        job_id = engine_set.job_id
        assert wait_until(lambda: slurm.pending_reason(job_id) == "PartitionConfig", timeout_s=10)
        client = cluster.connect_client_sync()
        try:
            with pytest.raises(TimeoutError, match="8 engines not ready in 3 seconds"):
                client.wait_for_engines(8, timeout=3)
        finally:
            client.close()
        assert engine_set.state == "running"
        assert engine_set.poll() is None  # batch launchers never notice a job's end
        cluster.stop_cluster_sync()
        assert wait_until(lambda: not slurm.job_ids(), timeout_s=10)


def test_extra_sbatch_arguments_go_through_submit_command(slurm_env, tmp_path):
    """Extra sbatch arguments given in `submit_command` apply to the engines' job (here a start
    an hour from now and a comment), and override the script's #SBATCH lines."""
    slurm = slurm_env
    extra = ["sbatch", "--begin=now+1hour", "--comment=imgdist-test", f"--chdir={tmp_path}"]
    with ipp_cluster(slurm, tmp_path, 2, submit_command=extra) as cluster:
        cluster.start_cluster_sync()
        (engine_set,) = cluster.engines.values()
        assert engine_set.args == [*extra, engine_set.batch_file]
        job_id = engine_set.job_id
        assert wait_until(lambda: slurm.pending_reason(job_id) == "BeginTime", timeout_s=10)
        fields = slurm.check("squeue", "-h", "-j", job_id, "-o", "%k|%Z|%P").strip()
        assert fields == f"imgdist-test|{tmp_path}|{slurm.partition}"


def test_slurm_options_trait_is_only_used_by_a_custom_template(tmp_path):
    """`SlurmEngineSetLauncher.options` is not written into the default batch script; a custom
    `batch_template` must use `{options}` (and then also give --ntasks itself)."""
    common = {"profile_dir": str(tmp_path), "cluster_id": "c1"}
    default = SlurmEngineSetLauncher(
        options="#SBATCH --comment=hello",
        timelimit="10",
        queue="debug",
        batch_file_name=str(tmp_path / "default.sbatch"),
        **common,
    )
    default.write_batch_script(2)
    script = Path(default.batch_file).read_text()
    assert "--comment=hello" not in script
    assert "#SBATCH --time=10" in script
    assert "#SBATCH --partition=debug" in script
    custom = SlurmEngineSetLauncher(
        options="#SBATCH --comment=hello",
        batch_template="#!/bin/sh\n#SBATCH --ntasks={n}\n{options}\nsrun {program_and_args}\n",
        batch_file_name=str(tmp_path / "custom.sbatch"),
        **common,
    )
    custom.write_batch_script(3)
    lines = Path(custom.batch_file).read_text().splitlines()
    assert lines[:3] == ["#!/bin/sh", "#SBATCH --ntasks=3", "#SBATCH --comment=hello"]
    assert not any("--output" in line or "--partition" in line for line in lines)
    unset = SlurmEngineSetLauncher(
        batch_template="#!/bin/sh\n{options}\nsrun {program_and_args}\n",
        batch_file_name=str(tmp_path / "unset.sbatch"),
        **common,
    )
    with pytest.raises(NameError, match="'options' is not defined"):
        unset.write_batch_script(1)


def test_launcher_environment_reaches_sbatch_but_not_scancel(
    empty_queue, tmp_path, monkeypatch, capfd
):
    """SLURM_CONF given only in the launcher's `environment` is used by sbatch (and the job),
    but stop() runs scancel with this process's environment: without SLURM_CONF there it fails
    (CalledProcessError, "Could not establish a configuration source")."""
    slurm = empty_queue
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.chdir(tmp_path)
    launcher = SlurmEngineSetLauncher(
        environment=dict(slurm.conf_env),
        engine_cmd=["sleep", "600"],
        batch_file_name=str(tmp_path / "sleep.sbatch"),
        profile_dir=str(tmp_path),
        cluster_id="env",
    )
    job_id = launcher.start(1)
    assert slurm.job_ids() == [job_id]
    capfd.readouterr()
    with pytest.raises(subprocess.CalledProcessError) as failed:
        launcher.stop()
    assert failed.value.cmd == ["scancel", job_id]
    assert "scancel: fatal: Could not establish a configuration source" in capfd.readouterr().err
    assert slurm.job_ids() == [job_id]
    with_conf = SlurmEngineSetLauncher(
        delete_command=["env", f"SLURM_CONF={slurm.conf_path}", "scancel"],
        job_id=job_id,
        profile_dir=str(tmp_path),
        cluster_id="env",
    )
    with_conf.stop()
    assert wait_until(lambda: not slurm.job_ids(), timeout_s=10)
