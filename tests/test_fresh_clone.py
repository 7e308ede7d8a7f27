"""The README's `make run` works from a fresh clone (CI runs `make test` from one itself)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import REPO, check_results


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make"
)
def test_make_run_from_a_fresh_clone(tmp_path):
    """git clone, then `make run`: a new .venv, the notebook executed, results/ complete and correct."""
    clone = tmp_path / "imgdist"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "IMGDIST_"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    done = subprocess.run(
        ["make", "run"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Comparison:" in done.stdout
    assert f"Manifest: {clone / 'results' / 'manifest.json'}" in done.stdout
    results = clone / "results"
    for name in ("main.ipynb", "manifest.json", "bench.json", "bench.png"):
        assert (results / name).is_file(), name
    assert len(list((results / "images").glob("*_processed.jpg"))) == 32
    check_results(
        results,
        "--notebook",
        "--expect-workers",
        "4",
        python=str(clone / ".venv" / "bin" / "python"),
    )
