"""`imgdist run` and its messages, against real clusters."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from imgdist.cli import main

from .conftest import HOST, check_results, wait_until

pytestmark = pytest.mark.integration


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
            "--timeout",
            "2",  # how long it waits for the named workers to join
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


def test_progress_is_plain_lines_when_not_on_a_terminal(local_cluster, tmp_path):
    """Headless (stderr a pipe), `imgdist run` writes a progress line every tenth of the run."""
    done = run_cli(
        "run",
        "--connection",
        str(local_cluster.client_connection_file),
        "--images",
        "20",
        "--out",
        str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "images done" in line]
    assert lines[-1] == "20/20 images done (0 failed)"
    counts = [int(line.split("/")[0]) for line in lines]
    assert counts == sorted(set(counts))
    assert all(count % 2 == 0 for count in counts)  # a line per 2 images at most, not per image
    assert "\r" not in done.stderr  # no bar drawn into a log


def nested_library(root, portrait_path):
    """DCIM-like folders: the same file name in two sub-folders, hidden folders and files."""
    for sub in ("100CANON", "101CANON", "2024/trip", ".thumbnails"):
        (root / sub).mkdir(parents=True)
    data = portrait_path.read_bytes()
    for path in ("100CANON/IMG_1.jpg", "101CANON/IMG_1.jpg", "2024/trip/b.jpg", "top.jpg"):
        (root / path).write_bytes(data)
    (root / ".thumbnails" / "IMG_1.jpg").write_bytes(data)
    (root / ".hidden.jpg").write_bytes(data)


@pytest.mark.parametrize("transport", ["path", "compact", "direct"])
def test_nested_folders_keep_their_layout(local_cluster, tmp_path, portrait_path, transport):
    """Folders are walked recursively; outputs keep the sub-folders under --out/images; hidden
    folders and files, and the output folder inside the inputs, are skipped."""
    library = tmp_path / "DCIM"
    nested_library(library, portrait_path)
    out = library / "processed"  # inside the walked folder: must not be read as input
    for run in range(2):  # the second run would pick up the first run's outputs if not skipped
        done = run_cli(
            "run",
            "--connection",
            str(local_cluster.client_connection_file),
            "--inputs",
            str(library),
            "--out",
            str(out),
            "--transport",
            transport,
        )
        assert done.returncode == 0, (run, done.stderr)
        manifest = json.loads((out / "manifest.json").read_text())
        assert sorted(row["output"] for row in manifest) == [
            "images/100CANON/IMG_1_processed.jpg",
            "images/101CANON/IMG_1_processed.jpg",
            "images/2024/trip/b_processed.jpg",
            "images/top_processed.jpg",
        ]
    assert all(cv2.imread(str(out / row["output"])) is not None for row in manifest)
    check_results(out, "--exact", "--expect-images", "4")


def test_ports_keep_the_controller_inside_the_range(tmp_path):
    """`--ports LO-HI`: the join instructions list the controller's ports, all inside the range."""
    done = run_cli(
        "run", "--local", "1", "--images", "2", "--ports", "50500-50549", "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if "TCP ports" in x)
    ports = [int(p) for p in line.split("TCP ports ")[1].split(" (")[0].split(", ")]
    assert len(ports) >= 8
    assert all(50500 <= port <= 50549 for port in ports), ports


def test_too_few_ports_is_one_sentence(tmp_path, capsys):
    """A range narrower than the controller needs exits 2 before anything starts."""
    assert main(["run", "--ports", "50000-50009", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ports '50000-50009' holds 10 ports, but imgdist needs 19" in err


def test_resume_never_gives_a_kept_output_to_another_input(local_cluster, tmp_path, portrait_path):
    """Run 1 `--inputs a/`; run 2 `--inputs b/ a/ --resume` into the same folder: a's kept output
    is untouched, b's image gets a name of its own, and the manifest names each file once."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    (tmp_path / "a" / "IMG_1.jpg").write_bytes(portrait_path.read_bytes())
    flipped = cv2.flip(cv2.imread(str(portrait_path)), 1)
    cv2.imwrite(str(tmp_path / "b" / "IMG_1.jpg"), flipped)
    out = tmp_path / "out"
    common = ["run", "--connection", str(local_cluster.client_connection_file), "--out", str(out)]
    assert main([*common, "--inputs", str(tmp_path / "a")]) == 0
    kept = (out / "images" / "IMG_1_processed.jpg").read_bytes()
    assert main([*common, "--inputs", str(tmp_path / "b"), str(tmp_path / "a"), "--resume"]) == 0
    assert (out / "images" / "IMG_1_processed.jpg").read_bytes() == kept
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted((row["source"], row["output"]) for row in manifest) == [
        (str(tmp_path / "a" / "IMG_1.jpg"), "images/IMG_1_processed.jpg"),
        (str(tmp_path / "b" / "IMG_1.jpg"), "images/IMG_1_2_processed.jpg"),
    ]
    check_results(out, "--exact", "--expect-images", "2")


def test_resume_keeps_entries_of_inputs_not_in_this_run(local_cluster, tmp_path, portrait_path):
    """`--resume` with fewer inputs than before: the earlier outputs stay listed in the manifest."""
    for name in ("x.jpg", "y.jpg"):
        (tmp_path / name).write_bytes(portrait_path.read_bytes())
    out = tmp_path / "out"
    common = ["run", "--connection", str(local_cluster.client_connection_file), "--out", str(out)]
    assert main([*common, "--inputs", str(tmp_path / "x.jpg"), str(tmp_path / "y.jpg")]) == 0
    assert main([*common, "--inputs", str(tmp_path / "y.jpg"), "--resume"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(row["output"] for row in manifest) == [
        "images/x_processed.jpg",
        "images/y_processed.jpg",
    ]


@pytest.mark.parametrize("transport", ["compact", "path", "pixels", "direct"])
def test_jpeg_files_named_jfif_or_jpe_are_processed(
    local_cluster, tmp_path, portrait_path, transport
):
    """.jfif and .jpe files are found in folders and processed under every transport; their
    outputs keep the name and are JPEGs."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jfif", "b.jpe", "c.JFIF"):
        (photos / name).write_bytes(portrait_path.read_bytes())
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--connection",
            str(local_cluster.client_connection_file),
            "--inputs",
            str(photos),
            "--out",
            str(out),
            "--transport",
            transport,
        ]
    )
    assert code == 0
    outputs = sorted(p.name for p in (out / "images").iterdir())
    assert outputs == ["a_processed.jfif", "b_processed.jpe", "c_processed.JFIF"]
    assert all((out / "images" / name).read_bytes()[:2] == b"\xff\xd8" for name in outputs)


def test_a_second_run_into_the_same_folder_is_refused(local_cluster, tmp_path):
    """While one `imgdist run` writes into a folder, a second one into it exits 2 with a
    sentence, and the first finishes with every image processed once."""
    out = tmp_path / "out"
    common = ["run", "--connection", str(local_cluster.client_connection_file), "--out", str(out)]
    first = subprocess.Popen(
        [sys.executable, "-m", "imgdist", *common, "--images", "2000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: (out / ".imgdist-run.lock").exists(), timeout_s=60)
        second = run_cli(*common, "--images", "4")
        _, stderr = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2
    assert "is being written by another imgdist run (pid " in second.stderr
    assert first.returncode == 0, stderr
    assert not (out / ".imgdist-run.lock").exists()
    manifest = json.loads((out / "manifest.json").read_text())  # each image once (no pixel check
    assert len({row["source"] for row in manifest}) == len(manifest) == 2000  # of 2,000 here)
    assert len({row["output"] for row in manifest}) == 2000


def test_ssh_with_a_connection_is_one_sentence(local_cluster, tmp_path, capsys):
    """--ssh needs a controller started here: with --connection it is refused in one sentence."""
    code = main(
        [
            "run",
            "--connection",
            str(local_cluster.client_connection_file),
            "--ssh",
            "me@lab-pc2",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--ssh me@lab-pc2 starts engines from a controller started here, but --connection" in err
    assert "Traceback" not in err


def test_a_system_error_is_one_sentence(local_cluster, tmp_path):
    """The system refusing a write (here: manifest.json is a folder) ends in a sentence naming
    the file, exit 1, not a traceback; the outputs are there."""
    out = tmp_path / "out"
    (out / "manifest.json").mkdir(parents=True)
    done = run_cli(
        "run",
        "--connection",
        str(local_cluster.client_connection_file),
        "--images",
        "2",
        "--out",
        str(out),
    )
    assert done.returncode == 1
    assert f"imgdist: error: Is a directory ({out / 'manifest.json'})." in done.stderr
    assert "Traceback" not in done.stderr
    assert len(list((out / "images").glob("*_processed.jpg"))) == 2
