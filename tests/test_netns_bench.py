"""The multi-host benchmark itself (`make bench-netns`), small: it runs across real test hosts
and its JSON carries the main-cost figures, the capacity model and where outputs were written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .netns import namespaces_usable

REASON = namespaces_usable()
ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.netns,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(bool(REASON), reason=REASON),
]


def test_netns_bench_json(tmp_path):
    """2 worker hosts, 8 portraits, 1 run; main cost over 16 and 64 portraits."""
    report = tmp_path / "netns.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.netns_bench", "--runs", "1", "--images", "8",
            "--small", "16", "--large", "64", "--json", str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the capacity model says" in done.stdout
    data = json.loads(report.read_text())
    assert {case["name"] for case in data["cases"]} == {
        "seed/2",
        "encoded/2",
        "compact/2",
        "fast/2",
    }
    params = data["params"]
    assert params["transports"]["fast/2"] == "direct"  # the workers cannot see the main's files
    assert sum(params["fast_steps"].values()) == 8
    assert params["outputs_on"] in {"ext4", "tmpfs", "xfs", "btrfs", "overlay"}
    costs = {row["transport"]: row for row in params["main_cost"]}
    assert set(costs) == {"direct", "encoded", "compact", "floor"}
    for row in costs.values():
        assert row["images"] == [16, 64]
        assert row["worker_ms"] > 0
        assert row["ratio"] == pytest.approx(row["main_side_ms"] / row["worker_ms"])
    assert sum(costs["direct"]["steps"].values()) == 3 * (16 + 64)
    assert costs["floor"]["steps"] == {"floor": 3 * (16 + 64)}
    assert "floor: the main reads each input, moves the bytes, writes each output" in done.stdout
    model = params["model"]
    assert [route["name"] for route in model["routes"]] == ["JPEG back", "bits back"]
    jpeg = model["routes"][0]
    assert jpeg["main_ms"] == pytest.approx(costs["direct"]["main_side_ms"])
    assert jpeg["bytes_per_image"] > 100_000  # a portrait in, its output JPEG back
    assert model["worker_link_bps"] == 100e6
    assert model["images_per_s"] > 0
