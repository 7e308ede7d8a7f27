"""Proof under load (slow; CI runs them): engines killed in the middle of long runs lose nothing,
and the main process's memory stays flat. The figures are printed and written to test-artifacts/."""

from __future__ import annotations

import json
import resource
import time

import cv2
import pytest

from imgdist.distribution import distribute
from imgdist.files import read_manifest
from imgdist.portrait import make_copies

from .conftest import REPO, kill_engine

pytestmark = [pytest.mark.slow, pytest.mark.integration]
ARTIFACTS = REPO / "test-artifacts"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(name: str, figures: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(figures, indent=1))
    print(name, figures)


def check_all_there(manifest, n_inputs: int) -> None:
    entries = read_manifest(manifest)
    assert len(entries) == n_inputs
    assert len({e.output for e in entries}) == n_inputs
    for entry in entries:
        assert cv2.imread(str(entry.output)) is not None, entry.output


def test_kill_one_of_four_mid_run_ten_times(local_cluster, tmp_path, portrait_path):
    """2,000 images, one of 4 engines SIGKILLed half-way, ten runs in a row: 0 lost, all decode."""
    inputs = make_copies(portrait_path, 2000, tmp_path / "in")
    figures = {"runs": [], "images_per_run": len(inputs)}
    for run in range(10):
        workers = local_cluster.workers()[:4]
        victim = workers[run % 4]
        fired = []

        def kill_half_way(progress, victim=victim, fired=fired):
            if not fired and progress.done >= len(inputs) // 2:
                fired.append(progress.done)
                kill_engine(victim.pid)

        out = tmp_path / f"out{run}"
        started = time.perf_counter()
        result = distribute(
            workers,
            inputs,
            out_dir=out,
            manifest=out / "manifest.json",
            transport="encoded" if run % 2 else "auto",
            on_progress=kill_half_way,
        )
        elapsed = time.perf_counter() - started
        assert fired
        assert result.ok, result.summary()
        assert result.lost_workers == [victim.name]
        check_all_there(out / "manifest.json", len(inputs))
        figures["runs"].append(
            {
                "transport": result.transport,
                "seconds": round(elapsed, 2),
                "redone": len(result.redone),
                "lost": 0,
            }
        )
        local_cluster.start_engines(1, labels=[victim.name.partition("@")[0]])
    report("kill-one-of-four", figures)


def test_soak_5000_images_engines_replaced(local_cluster, tmp_path, portrait_path):
    """5,000 images through 4 engines, one killed and a new one started every ~1,000 images:
    nothing lost, the new engines rejoin, and the main's peak RSS stays flat."""
    inputs = make_copies(portrait_path, 5000, tmp_path / "in")
    while len(local_cluster.engine_ids) < 4:
        local_cluster.start_engines(1)
    workers = local_cluster.workers()[:4]
    # warm up with a short run first, so the peak RSS below is what the long run adds
    distribute(workers, inputs[:200], out_dir=tmp_path / "warm", transport="encoded")
    rss_before = peak_rss_mb()
    kills = []

    def kill_and_replace(progress):
        if progress.done >= 1000 * (len(kills) + 1) and len(kills) < 4:
            live = local_cluster.workers()
            victim = live[len(kills) % len(live)]
            kill_engine(victim.pid)
            kills.append((progress.done, victim.name))
            local_cluster.start_engines(1, labels=[victim.name.partition("@")[0]])

    out = tmp_path / "out"
    started = time.perf_counter()
    result = distribute(
        workers,
        (p for p in inputs),
        out_dir=out,
        manifest=out / "manifest.json",
        transport="encoded",
        on_progress=kill_and_replace,
    )
    elapsed = time.perf_counter() - started
    assert result.ok, result.summary()
    assert len(kills) == 4
    check_all_there(out / "manifest.json", len(inputs))
    growth = peak_rss_mb() - rss_before
    report(
        "soak-5000",
        {
            "images": len(inputs),
            "seconds": round(elapsed, 1),
            "kills": kills,
            "lost_workers": result.lost_workers,
            "rejoined": result.rejoined,
            "redone": len(result.redone),
            "peak_rss_before_mb": round(rss_before, 1),
            "peak_rss_growth_mb": round(growth, 1),
        },
    )
    assert result.rejoined
    assert growth < 50
