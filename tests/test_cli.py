"""`imgdist run` and its messages, against real clusters."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import cv2
import pytest

from imgdist.cli import main

pytestmark = pytest.mark.integration
HOST = socket.gethostname()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imgdist", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_help_documents_both_commands():
    """`imgdist --help` names run and worker; each has its own help."""
    top = run_cli("--help")
    assert top.returncode == 0
    assert "run" in top.stdout
    assert "worker" in top.stdout
    run_help = run_cli("run", "--help").stdout
    for option in (
        "--local",
        "--connection",
        "--workers",
        "--images",
        "--inputs",
        "--url",
        "--out",
        "--transport",
        "--schedule",
    ):
        assert option in run_help
    assert "--name" in run_cli("worker", "--help").stdout


def test_run_on_local_engines(tmp_path):
    """`imgdist run --local 2 --images 8` starts 2 engines, processes 8 copies, exits 0."""
    out = tmp_path / "out"
    done = run_cli("run", "--local", "2", "--images", "8", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "8 images processed, 0 failed" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest) == 8
    assert {row["worker"] for row in manifest} == {f"worker1@{HOST}", f"worker2@{HOST}"}
    assert all((out / row["output"]).is_file() for row in manifest)


def test_run_on_a_running_cluster_with_named_workers(
    local_cluster, tmp_path, portrait_path, capsys
):
    """--connection, --workers and --inputs: your files on the workers you name, in order."""
    inputs = tmp_path / "mine"
    inputs.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (inputs / name).write_bytes(portrait_path.read_bytes())
    (inputs / "notes.txt").write_text("not an image, and not picked up from a folder")
    code = main(
        [
            "run",
            "--connection",
            str(local_cluster.client_connection_file),
            "--workers",
            f"worker3@{HOST},worker4@{HOST}",
            "--inputs",
            str(inputs),
            "--out",
            str(tmp_path / "out"),
            "--schedule",
            "round-robin",
        ]
    )
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [row["worker"] for row in manifest] == [
        f"worker3@{HOST}",
        f"worker4@{HOST}",
        f"worker3@{HOST}",
    ]
    assert [row["output"] for row in manifest] == [
        "images/a_processed.jpg",
        "images/b_processed.jpg",
        "images/c_processed.jpg",
    ]
    assert "3 images processed" in capsys.readouterr().out


def test_unknown_worker_exit_status_and_message(local_cluster, tmp_path, capsys):
    """An unknown --workers name exits 2 with the list of names that exist."""
    code = main(
        [
            "run",
            "--connection",
            str(local_cluster.client_connection_file),
            "--workers",
            "ghost@nowhere",
            "--images",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "imgdist: error: no engine is named 'ghost@nowhere'; the engines are:" in err
    assert f"worker1@{HOST}" in err


def test_a_bad_input_fails_only_itself(local_cluster, tmp_path, portrait_path, capsys):
    """One undecodable file is reported with its reason; the others are processed; exit 1."""
    good = tmp_path / "good.jpg"
    good.write_bytes(portrait_path.read_bytes())
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    code = main(
        [
            "run",
            "--connection",
            str(local_cluster.client_connection_file),
            "--inputs",
            str(good),
            str(bad),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "1 images processed, 1 failed" in out
    assert "FAILED" in out
    assert "bad.jpg: 5 bytes that OpenCV cannot decode" in out
    assert len(json.loads((tmp_path / "out" / "manifest.json").read_text())) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "0"], "copies = 0 is out of range"),
        (["--inputs", "/no/such/file.jpg"], "input /no/such/file.jpg does not exist"),
        (
            ["--connection", "/no/such/ipcontroller-client.json"],
            "does not exist; copy it from the controller",
        ),
    ],
)
def test_parameter_errors_exit_2(tmp_path, capsys, args, message):
    """Bad parameters exit 2 with one sentence on stderr and no traceback."""
    code = main(["run", "--out", str(tmp_path / "out"), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_output_folder_that_is_a_file(tmp_path, capsys):
    """--out naming a file is refused before anything starts."""
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert main(["run", "--out", str(target)]) == 2
    assert f"output folder {target} is a file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_resume_processes_only_what_is_missing(local_cluster, tmp_path, capsys):
    """`--resume` keeps the outputs that the manifest lists and that decode; the rest is redone."""
    out = tmp_path / "out"
    common = [
        "run",
        "--connection",
        str(local_cluster.client_connection_file),
        "--images",
        "8",
        "--out",
        str(out),
    ]
    assert main(common) == 0
    outputs = sorted((out / "images").glob("*_processed.jpg"))
    outputs[0].unlink()
    outputs[1].write_bytes(b"garbage")
    capsys.readouterr()
    assert main([*common, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "8 images processed, 0 failed" in printed
    assert "(6 of them kept from the previous run: resumed)" in printed
    assert all(cv2.imread(str(p)) is not None for p in outputs)


def test_output_folder_that_cannot_be_written(tmp_path, capsys):
    """An output folder inside a file cannot be created: one sentence, exit 2."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "--out", str(blocker / "sub")]) == 2
    assert f"output folder {blocker / 'sub'} cannot be written" in capsys.readouterr().err
