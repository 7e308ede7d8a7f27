"""The shared-disk check that decides each worker's route: the same bytes at the same paths, and
an output folder that takes an atomic rename (run where the engine would run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from imgdist.engine import check_shared, file_digest
from imgdist.routes import input_samples


def test_the_same_file_passes(tmp_path):
    """A sampled input read back with the same size and digest, and a writable output folder
    holding the main's probe: nothing is wrong."""
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x" * 1000)
    (tmp_path / ".imgdist-probe-t1").write_text("t1")
    assert check_shared(input_samples([photo]), str(tmp_path), "t1") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".imgdist-probe-t1",
        "a.jpg",
    ]  # no leftovers


def test_another_file_at_the_same_path_is_named(tmp_path):
    """Lab PCs set up alike can hold a different file under the same name: not just existence."""
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"the main's photo")
    samples = input_samples([photo])
    photo.write_bytes(b"another machine's photo, same name")
    (tmp_path / ".imgdist-probe-t2").write_text("t2")
    assert check_shared(samples, str(tmp_path), "t2") == [f"{photo} is another file here"]


def test_an_output_folder_that_is_not_the_mains(tmp_path):
    """No probe file from the main: the same path is another folder on this machine."""
    (tmp_path / "a.jpg").write_bytes(b"x")
    problems = check_shared(input_samples([tmp_path / "a.jpg"]), str(tmp_path), "t3")
    assert problems == [f"{tmp_path} is not the main's output folder here"]


@pytest.mark.integration
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="a private read-only mount needs root"
)
def test_a_read_only_share_fails_the_check(tmp_path):
    """A share mounted read-only (here: a bind mount in a private mount namespace) passes for
    reading, and fails the check for writing, before any image is sent."""
    (tmp_path / "a.jpg").write_bytes(b"y" * 300)
    (tmp_path / ".imgdist-probe-t4").write_text("t4")
    samples = input_samples([tmp_path / "a.jpg"])
    code = (
        "import json, sys\nfrom imgdist.engine import check_shared\n"
        f"print(json.dumps(check_shared({samples!r}, {str(tmp_path)!r}, 't4')))"
    )
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c",
         (f"mount --make-rprivate / && mount --bind -o ro {tmp_path} {tmp_path} && "
          f"exec {sys.executable} -c \"$0\""), code],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [f"{tmp_path} cannot be written here (Read-only file system)"]


def test_one_sample_per_input_folder(tmp_path):
    """The check reads one input of each folder the inputs come from (not every input)."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("1.jpg", "2.jpg"):
            (tmp_path / folder / name).write_bytes(folder.encode() * 10)
    inputs = [tmp_path / f / n for f in ("a", "b") for n in ("1.jpg", "2.jpg")]
    samples = input_samples(inputs)
    assert [path for path, _, _ in samples] == [
        str(tmp_path / "a" / "1.jpg"),
        str(tmp_path / "b" / "1.jpg"),
    ]
    assert samples[0][1:] == (10, file_digest(str(tmp_path / "a" / "1.jpg")))
