"""Security defaults: loopback unless told otherwise, private connection files, and a wrong key
gets nothing executed."""

from __future__ import annotations

import json
import socket

import psutil
import pytest

from imgdist.cluster import Cluster
from imgdist.errors import ConnectionFileError, NoEnginesError
from imgdist.local_worker import WorkerEngine

pytestmark = pytest.mark.integration


def listening_addresses(pid: int) -> set[str]:
    process = psutil.Process(pid)
    addresses = set()
    for member in [process, *process.children(recursive=True)]:
        for conn in member.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                addresses.add(conn.laddr.ip)
    return addresses


def test_controller_listens_on_loopback_by_default(bare_controller):
    """A controller imgdist starts listens on 127.0.0.1 only, and its files are mode 0600."""
    assert listening_addresses(bare_controller.controller_pid) == {"127.0.0.1"}
    for path in (bare_controller.engine_connection_file, bare_controller.client_connection_file):
        assert path.stat().st_mode & 0o777 == 0o600
        assert json.loads(path.read_text())["interface"] == "tcp://127.0.0.1"


def tampered(path, tmp_path, name):
    info = json.loads(path.read_text())
    info["key"] = "0" * len(info["key"])
    copy = tmp_path / name
    copy.write_text(json.dumps(info))
    return copy


def test_a_client_with_a_wrong_key_gets_nothing_executed(bare_controller, tmp_path):
    """A client holding a wrong key cannot connect: it times out with a message, and runs nothing."""
    wrong = tampered(
        bare_controller.client_connection_file, tmp_path, "ipcontroller-wrong-client.json"
    )
    with pytest.raises(ConnectionFileError, match=r"did not answer within 2 s"):
        Cluster.connect(wrong, timeout_s=2)


def test_a_client_whose_key_changes_gets_nothing_executed(local_cluster, tmp_path, portrait_path):
    """Requests signed with a wrong key are dropped: a task that writes a file never runs, while
    the same task signed with the cluster's key does write it."""
    worker = local_cluster.workers()[0]
    with Cluster.connect(local_cluster.client_connection_file) as other:
        signed = tmp_path / "signed.jpg"
        other.submit(worker, "process_file", str(portrait_path), str(signed), "x").result(
            timeout=30
        )
        assert signed.is_file()  # the check below can fail: this call writes when it runs
        other._client.session.key = b"not-the-cluster-key"
        forged = tmp_path / "forged.jpg"
        future = other.submit(worker, "process_file", str(portrait_path), str(forged), "x")
        with pytest.raises(TimeoutError):
            future.result(timeout=3)
    assert not forged.exists()
    # the cluster itself is unharmed
    assert local_cluster.submit(worker, "identity").result(timeout=10).pid == worker.pid


def test_an_engine_with_a_wrong_key_never_registers(bare_controller, tmp_path):
    """A worker holding a wrong key is not let in; it says so within its timeout."""
    before = len(bare_controller.engine_ids)
    wrong = tampered(
        bare_controller.engine_connection_file, tmp_path, "ipcontroller-wrong-engine.json"
    )
    engine = WorkerEngine.start(wrong, "intruder", work_dir=tmp_path / "intruder")
    try:
        with pytest.raises(
            NoEnginesError,
            match=r"did not register within 5 s; .* the key in the connection file is wrong",
        ):
            engine.wait_registered(5)
    finally:
        engine.stop()
    assert len(bare_controller.engine_ids) == before
    assert "intruder@" + socket.gethostname() not in [w.name for w in bare_controller.workers()]
