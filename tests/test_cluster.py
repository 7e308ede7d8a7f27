"""Connecting to real controllers: workers started here, plain ipengine, timeouts, stale files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from imgdist.cluster import Cluster
from imgdist.cluster.connection import join_instructions
from imgdist.connections import resolve
from imgdist.distribution import distribute
from imgdist.errors import ConnectionFileError, NoEnginesError
from imgdist.local_worker import WorkerEngine
from imgdist.runner import open_cluster

from .conftest import HOST, read_line, start_plain_engine, stop_then_left, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def engines_started():
    """Engines a test starts; all stopped at the end, even on failure."""
    started: list = []
    yield started
    for engine in started:
        if isinstance(engine, WorkerEngine):
            engine.stop()
        else:
            engine.terminate()
            try:
                engine.wait(10)
            except subprocess.TimeoutExpired:
                engine.kill()


def test_worker_registers_under_its_label(
    bare_controller, engines_started, tmp_path, portrait_path
):
    """A worker started with label 'alice' is found as alice@host, and draws that name."""
    before = len(bare_controller.engine_ids)
    engine = WorkerEngine.start(
        bare_controller.engine_connection_file, "alice", work_dir=tmp_path / "alice"
    )
    engines_started.append(engine)
    status = engine.wait_registered(30)
    assert status.state == "registered"
    assert str(status).startswith(f"alice@{HOST}: registered as engine")
    bare_controller.wait_for_engines(before + 1, timeout_s=10)
    (alice,) = resolve(bare_controller, [f"alice@{HOST}"])
    result = distribute([alice], [portrait_path], out_dir=tmp_path / "out")
    assert [e.worker for e in result.processed] == [f"alice@{HOST}"]


def test_worker_stop_leaves_no_nanny_even_a_stuck_one(bare_controller, tmp_path):
    """When a worker's stop returns, its engine and the engine's nanny (a session of its own,
    which the stop's signal does not reach) have ended, even a nanny that cannot exit by itself
    (stopped with SIGSTOP)."""
    engine = WorkerEngine.start(
        bare_controller.engine_connection_file, "stuck", work_dir=tmp_path / "stuck"
    )
    started: list[psutil.Process] = []
    try:
        engine.wait_registered(30)
        top = psutil.Process(engine.process.pid)
        started = [top, *top.children(recursive=True)]
        (nanny,) = [p for p in started if "ipyparallel.engine.nanny" in p.cmdline()]
        assert nanny.ppid() == top.pid
        assert os.getsid(nanny.pid) == nanny.pid  # a session of its own
        nanny.suspend()
    finally:
        left = stop_then_left(engine.stop, started)
    assert left == []


def test_plain_ipengine_gets_a_default_name(bare_controller, engines_started, tmp_path):
    """An engine started by plain `ipengine --file` is named engine<id>@host."""
    before = set(bare_controller.engine_ids)
    env = {k: v for k, v in os.environ.items() if k != "IMGDIST_WORKER_LABEL"}
    process = start_plain_engine(
        sys.executable, bare_controller.engine_connection_file, tmp_path / "plain-profile", env
    )
    engines_started.append(process)
    # a new id, not a count: an engine of an earlier test may unregister meanwhile
    if not wait_until(lambda: set(bare_controller.engine_ids) - before, timeout_s=30):
        log = (tmp_path / "plain-profile" / "engine.log").read_text(errors="replace")
        pytest.fail(
            f"no new engine in 30 s\nengine exit code: {process.poll()}\nengine log:\n{log[-3000:]}"
        )
    (new_id,) = set(bare_controller.engine_ids) - before
    assert f"engine{new_id}@{HOST}" in [w.name for w in bare_controller.workers()]


def test_connect_with_a_client_file(bare_controller):
    """A second client connects through the controller's client connection file, passed as a path."""
    with Cluster.connect(bare_controller.client_connection_file) as other:
        assert not other.is_local
        assert other.engine_ids == bare_controller.engine_ids


def test_no_engines_within_the_timeout(bare_controller):
    """Waiting for more engines than exist ends in a message with the counts and what to do."""
    have = len(bare_controller.engine_ids)
    with pytest.raises(
        NoEnginesError,
        match=rf"{have} of {have + 5} engines registered .* within 1 s; start more workers",
    ):
        bare_controller.wait_for_engines(have + 5, timeout_s=1)


def test_stale_connection_file(tmp_path):
    """The client file of a cluster that was stopped gives 'the cluster is gone', within the timeout."""
    gone = Cluster.start_local(0, profile_dir=tmp_path / "profile", timeout_s=30)
    stale = tmp_path / "ipcontroller-gone-client.json"
    stale.write_bytes(gone.client_connection_file.read_bytes())
    gone.stop()
    with pytest.raises(
        ConnectionFileError, match=r"did not answer within 1 s: the cluster is gone"
    ):
        Cluster.connect(stale, timeout_s=1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"does not exist; copy it from the controller machine"),
        ("not json", r"is not readable JSON"),
        ('{"hello": 1}', r"is not an ipyparallel connection file \(no 'key'\)"),
    ],
)
def test_bad_connection_files(tmp_path, content, message):
    """Missing, malformed and foreign files each get their own message."""
    path = tmp_path / "ipcontroller-x-client.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConnectionFileError, match=message):
        Cluster.connect(path)


def test_no_such_profile(tmp_path, monkeypatch):
    """A profile with no running cluster names the profile and how to start one."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    with pytest.raises(ConnectionFileError, match=r"No connection file for 'nosuchprofile'"):
        open_cluster(connection="nosuchprofile")


def test_worker_cli_runs_until_terminated(bare_controller, tmp_path):
    """`imgdist worker` registers, prints the name to type, and stops cleanly on SIGTERM."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgdist",
            "worker",
            "--connection",
            str(bare_controller.engine_connection_file),
            "--name",
            "bob",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    folders = set(Path(tempfile.gettempdir()).glob("imgdist-bob-*"))
    try:
        before = len(bare_controller.engine_ids)
        first = read_line(process, timeout_s=60)
        assert f"Worker bob@{HOST} is running" in first
        bare_controller.wait_for_engines(before + 1, timeout_s=10)
        assert f"bob@{HOST}" in [w.name for w in bare_controller.workers()]
        (work,) = set(Path(tempfile.gettempdir()).glob("imgdist-bob-*")) - folders
        assert work.stat().st_mode & 0o777 == 0o700  # private, and made with an unguessable name
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    assert process.returncode == 0, out
    assert "stopped" in out
    assert not work.exists()  # its folder (engine log, profile) is removed on exit


def test_worker_launcher_with_pasted_contents(bare_controller, tmp_path):
    """The worker form takes the file's contents pasted, keeps them out of the form, and registers."""
    from imgdist.widgets import WorkerLauncher

    launcher = WorkerLauncher(label="pasted")
    launcher.paste_box.value = bare_controller.engine_connection_file.read_text()
    try:
        assert launcher.start(wait_s=30) == f"pasted@{HOST}"
        assert launcher.paste_box.value == ""
        assert "registered as engine" in launcher.status()
        saved = launcher.engine.work_dir / "ipcontroller-engine.json"
        assert saved.stat().st_mode & 0o777 == 0o600
        assert f"pasted@{HOST}" in launcher.name.value
    finally:
        launcher.stop()
    assert launcher.engine.process.poll() is not None


def test_worker_launcher_errors_are_one_sentence(tmp_path):
    """Start with nothing filled in, or a missing file, shows a sentence in the form."""
    from imgdist.widgets import WorkerLauncher

    launcher = WorkerLauncher(label="x")
    launcher.start_button.click()
    assert (
        "no connection info: give the path of ipcontroller-*-engine.json"
        in launcher.status_line.value
    )
    launcher.path_box.value = str(tmp_path / "nope.json")
    launcher.start_button.click()
    assert (
        "does not exist; copy ipcontroller-*-engine.json from the main machine"
        in launcher.status_line.value
    )


def test_worker_engine_dies_with_its_starter(bare_controller, tmp_path):
    """An engine started by a process that is SIGKILLed (a crashed kernel) stops too: no orphans."""
    before = len(bare_controller.engine_ids)
    script = (
        "import sys, time\n"
        "from imgdist.local_worker import WorkerEngine\n"
        "engine = WorkerEngine.start(sys.argv[1], 'orphan', work_dir=__import__('pathlib').Path(sys.argv[2]))\n"
        "engine.wait_registered(30)\n"
        "print(engine.process.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            str(bare_controller.engine_connection_file),
            str(tmp_path / "orphan"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        engine_pid = int(read_line(starter, timeout_s=30))
        assert wait_until(lambda: len(bare_controller.engine_ids) == before + 1, timeout_s=20)
    finally:
        starter.kill()
        starter.wait(10)
    assert wait_until(
        lambda: (
            not psutil.pid_exists(engine_pid) or psutil.Process(engine_pid).status() == "zombie"
        ),
        timeout_s=20,
    )
    assert wait_until(lambda: len(bare_controller.engine_ids) == before, timeout_s=20)


def test_connect_by_profile_and_cluster_id(tmp_path, monkeypatch):
    """`PROFILE:CLUSTER_ID` finds a running cluster the way ipyparallel does, in $IPYTHONDIR."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    started = Cluster.start_local(0, profile_dir=tmp_path / "profile_lab", timeout_s=60)
    try:
        cluster_id = started.client_connection_file.name.removeprefix("ipcontroller-").removesuffix(
            "-client.json"
        )
        with open_cluster(connection=f"lab:{cluster_id}") as other:
            assert other.engine_ids == started.engine_ids
            assert other.controller_reachable()
    finally:
        started.stop()


def test_join_instructions_never_show_the_key(bare_controller):
    """The join hint names the file, the copy command, the address and ports, but not the key."""
    text = join_instructions(bare_controller.engine_connection_file)
    info = json.loads(bare_controller.engine_connection_file.read_text())
    assert str(bare_controller.engine_connection_file) in text
    assert "scp " in text
    assert "imgdist worker --connection" in text
    assert str(info["registration"]) in text
    assert "loopback only" in text
    assert info["key"] not in text


def test_worker_for_a_controller_that_is_gone(tmp_path):
    """A worker given the file of a stopped controller says so within its timeout."""
    gone = Cluster.start_local(0, profile_dir=tmp_path / "profile", timeout_s=60)
    stale = tmp_path / "ipcontroller-gone-engine.json"
    stale.write_bytes(gone.engine_connection_file.read_bytes())
    gone.stop()
    engine = WorkerEngine.start(stale, "late", work_dir=tmp_path / "late")
    try:
        with pytest.raises(
            NoEnginesError, match=r"did not register within 5 s; the controller is not reachable"
        ):
            engine.wait_registered(5)
    finally:
        engine.stop()
