"""`imgdist bench` on a tiny setting: every case runs, the JSON has the documented shape, and every
mode and peer writes the same pixels (up to the name each one draws)."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from imgdist.benchsuite import ALL_CASES, start_suite
from imgdist.errors import ParameterError
from imgdist.image import threshold_and_label

from .conftest import as_written

pytestmark = pytest.mark.integration


def test_every_case_writes_the_same_pixels(tmp_path):
    """Each case's outputs equal threshold + the name of the process that drew it, and nothing else."""
    suite = start_suite(ALL_CASES, n_images=6, size=(160, 120), scratch=tmp_path)
    try:
        for function in suite.cases(ALL_CASES).values():
            function()
        labels = [w.name for w in suite.workers] + [p.label for p in suite.peers.values()]
        sources = {s.stem: cv2.imread(str(s)) for s in suite.sources}
        expected = {
            (stem, label): threshold_and_label(pixels, label)
            for stem, pixels in sources.items()
            for label in labels
        }
        for name in ALL_CASES:
            outputs = sorted(
                (suite.scratch / "out" / name.replace("/", "-")).glob("*_processed.jpg")
            )
            assert len(outputs) == 6, name
            for output in outputs:
                stem = output.stem.removesuffix("_processed")
                written = cv2.imread(str(output))
                matches = [
                    label
                    for label in labels
                    if np.array_equal(written, as_written(expected[(stem, label)]))
                ]
                assert len(matches) == 1, (name, output.name, matches)
    finally:
        suite.close()
    assert not suite.scratch.exists()


def test_bench_command_writes_json_and_chart(tmp_path):
    """`imgdist bench` on 2 tiny images, 2 runs: the table, a JSON report and a PNG chart."""
    report, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    cases = "local,seed/1,seed/2,fast/1,fast/2,multiprocessing,process-pool,dask"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgdist",
            "bench",
            "--images",
            "2",
            "--size",
            "64x48",
            "--runs",
            "2",
            "--warmup",
            "0",
            "--cases",
            cases,
            "--json",
            str(report),
            "--plot",
            str(chart),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "speed-up" in done.stdout
    assert "Comparison:" in done.stdout
    data = json.loads(report.read_text())
    assert set(data) == {"cases", "machine", "params"}
    assert [c["name"] for c in data["cases"]] == cases.split(",")
    for case in data["cases"]:
        assert len(case["samples_s"]) == 2
        assert case["median_s"] > 0
    assert data["params"]["images"] == 2
    assert data["params"]["size"] == "64x48"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_case(tmp_path):
    """An unknown case name lists the known ones, before anything starts."""
    with pytest.raises(
        ParameterError, match=r"unknown bench cases \['fast/3'\]; choose from local, seed/1"
    ):
        start_suite(["fast/3"], n_images=1, scratch=tmp_path)


@pytest.mark.slow  # ~2 minutes: 5 transports x (64 + 1,024 images) x 4 runs
def test_main_cost_json_has_the_documented_shape(tmp_path):
    """`imgdist bench --main-cost --json`: per transport, CPU ms per image on the main's side
    and the workers', the ratio and the workers one main keeps busy."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgdist",
            "bench",
            "--main-cost",
            "--json",
            str(tmp_path / "c.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "workers fed" in done.stdout
    data = json.loads((tmp_path / "c.json").read_text())
    assert set(data) == {"main_cost", "machine", "params"}
    costs = {row["transport"]: row for row in data["main_cost"]}
    assert set(costs) == {"path", "direct", "encoded", "compact", "pixels", "floor"}
    for row in costs.values():
        assert set(row) == {
            "transport", "main_ms", "controller_ms", "worker_ms", "images",
            "main_side_ms", "ratio", "workers_kept_busy", "steps",
        }  # fmt: skip
        assert row["images"] == [64, 1024]
        assert row["worker_ms"] > 0
        assert row["ratio"] == pytest.approx(row["main_side_ms"] / row["worker_ms"])
        assert row["workers_kept_busy"] == pytest.approx(1 / row["ratio"])
    # direct says how its images came back over the timed runs (3 x 64 + 3 x 1024 of them)
    assert sum(costs["direct"]["steps"].values()) == 3 * (64 + 1024)
    assert costs["encoded"]["steps"] == {}
    assert costs["floor"]["steps"] == {"floor": 3 * (64 + 1024)}
    assert "floor: the main reads each input, moves the bytes, writes each output" in done.stdout
