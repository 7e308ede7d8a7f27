"""A local cluster's life: quiet start and stop with logs in a file, ports kept in a range, and
a notebook cell run twice reusing its cluster."""

from __future__ import annotations

import contextlib
import socket

import psutil
import pytest

from imgdist.cluster import CONTROLLER_PORTS, PORTS_NEEDED, Cluster, connection_ports
from imgdist.distribution import distribute
from imgdist.errors import ParameterError
from imgdist.portrait import make_copies, sample_portrait
from imgdist.runner import open_cluster

from .conftest import stop_then_left, wait_until

pytestmark = pytest.mark.integration


def engine_pids(cluster: Cluster) -> list[int]:
    return [w.pid for w in cluster.workers()]


def test_stop_is_one_line_and_keeps_the_logs(tmp_path, capfd):
    """Stopping says one line, prints nothing else, leaves no engine running, and the engines'
    output (at WARNING: no per-task lines) is kept in the log file it names."""
    cluster = Cluster.start_local(2, profile_dir=tmp_path / "profile", timeout_s=60)
    try:
        pids = engine_pids(cluster)
        workers = cluster.workers()
        for worker in workers:
            cluster.submit(worker, "identity").result(timeout=30)
        log_file = cluster.log_file
    finally:
        said = cluster.stop()
    printed = capfd.readouterr()
    assert said == f"Stopped the local cluster (controller and 2 engines); its log: {log_file}"
    assert "\n" not in said
    assert printed.out == ""
    assert "Traceback" not in printed.err
    assert "Output for" not in printed.err
    assert wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), timeout_s=10)
    log = log_file.read_text()
    assert "Output of ipengine-" in log  # each engine's output is kept...
    assert "Handling apply_request" not in log  # ...at WARNING, so no line per task
    assert "Traceback" not in log  # engines shut down cleanly, not killed mid-loop


def test_stop_ends_every_process_of_the_cluster_even_a_stuck_nanny(tmp_path):
    """When stop returns, nothing it started is running: the controller's schedulers, even with
    the controller killed (they used to stay, orphaned), the engines and each engine's nanny
    (which used to linger up to 3 s, telling the stopped controller, and in CI once stayed for
    good), even a nanny that cannot exit by itself (stopped with SIGSTOP)."""
    cluster = Cluster.start_local(2, profile_dir=tmp_path / "profile", timeout_s=60)
    started: list[psutil.Process] = []
    try:
        for pid in [cluster.controller_pid, *engine_pids(cluster)]:
            process = psutil.Process(pid)
            started.extend([process, *process.children(recursive=True)])
        nannies = [p for p in started if "ipyparallel.engine.nanny" in p.cmdline()]
        assert len(nannies) == 2
        nannies[0].suspend()
        schedulers = psutil.Process(cluster.controller_pid).children(recursive=True)
        assert schedulers  # ipyparallel's controller runs its schedulers as child processes
        psutil.Process(cluster.controller_pid).kill()
    finally:
        left = stop_then_left(cluster.stop, started)
    assert left == []


def test_stopping_a_connected_cluster_leaves_it_running(local_cluster):
    """A cluster only connected to keeps running; stop says so in one line."""
    other = Cluster.connect(local_cluster.client_connection_file)
    said = other.stop()
    assert (
        said
        == f"Disconnected from {local_cluster.client_connection_file}; that cluster keeps running."
    )
    assert len(local_cluster.workers()) == 4


def test_ports_keep_every_controller_port_in_the_range(tmp_path):
    """With ports=(LO, HI) and the fewest ports allowed, every port in the client and engine
    connection files is in range, and the data route finds its port there too (a direct run)."""
    # below the kernel's ephemeral ports (32768-60999 here): a range inside them was taken now
    # and then by another connection's local port, and the data route found none free
    low = 20_400
    high = low + PORTS_NEEDED - 1
    cluster = Cluster.start_local(
        1, profile_dir=tmp_path / "profile", ports=(low, high), timeout_s=60
    )
    try:
        ports = connection_ports(cluster.client_connection_file) + connection_ports(
            cluster.engine_connection_file
        )
        inputs = make_copies(sample_portrait(), 4, tmp_path / "in")
        result = distribute(cluster.workers(), inputs, out_dir=tmp_path / "out", transport="direct")
    finally:
        cluster.stop()
    assert ports
    assert all(low <= port <= high for port in ports), ports
    assert result.ok, result.failed
    assert result.steps == {"encoded": 4}


def test_busy_ports_in_the_range_are_named():
    """A range without enough free ports is refused before anything starts, naming a busy one."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        first = max(1024, port - CONTROLLER_PORTS + 1)
        with pytest.raises(ParameterError, match=rf"in use: .*{port}.*give a wider or another"):
            Cluster.start_local(1, ports=(first, first + CONTROLLER_PORTS - 1), timeout_s=10)


def test_running_the_cluster_cell_again_reuses_the_cluster(tmp_path):
    """open_cluster with the same arguments returns the cluster already open; other arguments
    stop it and start anew, so a notebook never holds two clusters."""
    first = open_cluster(local=1, timeout_s=60)
    second = third = None
    try:
        pids = engine_pids(first)
        second = open_cluster(local=1, timeout_s=60)
        assert second is first
        third = open_cluster(local=2, timeout_s=60)
        assert third is not first
        assert not first.is_open
        assert wait_until(lambda: not any(psutil.pid_exists(p) for p in pids), timeout_s=10)
        assert len(third.workers()) == 2
    finally:
        for cluster in (first, third):
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.stop()
