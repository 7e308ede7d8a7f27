"""Both notebooks run top to bottom with nobody present: under nbval, and headless as `make run` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from imgdist.errors import ImgdistError
from imgdist.notebook import execute

from .conftest import HOST, REPO, check_results, wait_until

pytestmark = pytest.mark.integration


def nbval(notebook: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval-lax",
            "--nbval-current-env",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-q",
            str(REPO / "notebooks" / notebook),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
        cwd=REPO,
    )


def widget_values(nb, model: str) -> dict:
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return {
        m["state"].get("description"): m["state"].get("value")
        for m in state.values()
        if m["model_name"] == model
    }


def errors_in(nb) -> list:
    return [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


def test_main_notebook_under_nbval(tmp_path):
    """nbval runs every cell of main.ipynb without an error (4 local engines, bundled portrait)."""
    done = nbval("main.ipynb", {"IMGDIST_OUT_DIR": str(tmp_path), "IMGDIST_BENCH_RUNS": "2"})
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout
    assert (tmp_path / "manifest.json").is_file()


def output_texts(cell, kind: str = "text/plain") -> list[str]:
    """What a person reads in a cell's outputs: streams, and results as `kind`."""
    texts = []
    for output in cell.get("outputs", []):
        text = output.get("text") or output.get("data", {}).get(kind, "")
        texts.append("".join(text) if isinstance(text, list) else str(text))
    return texts


def test_main_notebook_headless_writes_the_results_layout(tmp_path):
    """Executed as `make run` does: boxes hold the engine names, the speed section has the
    own-process reference, the timeline is drawn, the stop cell says one line, and the outputs
    pass the results check."""
    executed = execute(
        REPO / "notebooks" / "main.ipynb",
        tmp_path / "main.ipynb",
        parameters={"out_dir": tmp_path, "bench_runs": 2},
    )
    nb = nbformat.read(executed, as_version=4)
    assert errors_in(nb) == []
    assert widget_values(nb, "TextModel") == {
        f"Worker {i}": f"worker{i}@{HOST}" for i in range(1, 5)
    }
    for name in ("main.ipynb", "manifest.json", "bench.json", "bench.png", "timeline.png"):
        assert (tmp_path / name).is_file()
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert [c["name"] for c in bench["cases"]] == [
        "own process",
        "1 worker",
        "2 workers",
        "4 workers",
        "seed: 1 worker",
        "seed: 2 workers",
        "seed: 4 workers",
    ]
    assert bench["params"]["transport"] == "auto"  # the package's default, not the notebook's own
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    texts = [text for cell in code_cells for text in output_texts(cell)]
    html = [text for cell in code_cells for text in output_texts(cell, "text/html")]
    assert any("speed-up vs own process" in t for t in html)
    assert any("32 images processed, 0 failed" in t for t in texts)
    assert all("Traceback" not in t and len(t) < 20_000 for t in texts)
    stop = output_texts(code_cells[-1])
    assert len(stop) == 1
    assert stop[0].startswith("Stopped the local cluster (controller and 4 engines); its log: ")
    assert stop[0].count("\n") == 1
    check_results(tmp_path, "--notebook", "--expect-workers", "4")


def test_worker_notebook_under_nbval(bare_controller):
    """nbval runs worker.ipynb against a local controller: its engine starts and registers."""
    before = len(bare_controller.engine_ids)
    done = nbval(
        "worker.ipynb",
        {
            "IMGDIST_ENGINE_FILE": str(bare_controller.engine_connection_file),
            "IMGDIST_LABEL": "nbval-worker",
        },
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout
    # the kernel has shut down, and the engine it started went with it
    assert wait_until(lambda: len(bare_controller.engine_ids) == before, timeout_s=30)


def test_worker_notebook_shows_the_name_and_status(bare_controller, tmp_path):
    """Executed headless, the worker notebook shows `label@host`, registered, and never the key."""
    engine_file = bare_controller.engine_connection_file
    key = json.loads(engine_file.read_text())["key"]
    executed = execute(
        REPO / "notebooks" / "worker.ipynb",
        tmp_path / "worker.ipynb",
        parameters={"engine_file": engine_file, "label": "nbworker"},
    )
    nb = nbformat.read(executed, as_version=4)
    assert errors_in(nb) == []
    text = executed.read_text()
    assert f"Started nbworker@{HOST}." in text
    assert f"nbworker@{HOST}: registered as engine" in text
    assert key not in text


def test_worker_notebook_without_connection_says_what_to_do(tmp_path):
    """With no connection file, the worker notebook runs through and says to fill in the form."""
    executed = execute(
        REPO / "notebooks" / "worker.ipynb",
        tmp_path / "worker.ipynb",
        parameters={"engine_file": ""},
    )
    nb = nbformat.read(executed, as_version=4)
    assert errors_in(nb) == []
    assert (
        "No connection file given: fill in the form above and press Start." in executed.read_text()
    )


def test_notebook_errors_are_one_sentence(tmp_path):
    """A bad parameter stops the notebook with a one-line message in the cell, not a traceback."""
    with pytest.raises(ImgdistError):
        execute(
            REPO / "notebooks" / "worker.ipynb",
            tmp_path / "worker.ipynb",
            parameters={"engine_file": str(tmp_path / "missing-engine.json")},
        )
    nb = nbformat.read(tmp_path / "worker.ipynb", as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "ConnectionFileError: connection file" in text
    assert "does not exist; copy ipcontroller-*-engine.json from the main machine." in text
    assert "Traceback" not in text
    assert errors_in(nb) == []
