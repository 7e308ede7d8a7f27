"""The capacity model: min(N x worker rate, main rate, link rate), per route and mixed; and how
the marginal cost per image is counted."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from imgdist.maincost import (
    Route,
    cpu_seconds,
    marginal_costs,
    mixed_capacity,
    modelled_capacity,
)

from .conftest import read_line

GBIT = 1e9
JPEG = Route("JPEG back", main_ms=0.5, worker_ms=2.0, bytes_per_image=200_000)
BITS = Route("bits back", main_ms=2.0, worker_ms=2.0, bytes_per_image=80_000)


def test_few_workers_are_the_limit():
    capacity = modelled_capacity(JPEG, 2, main_link_bps=10 * GBIT, worker_link_bps=10 * GBIT)
    assert capacity.images_per_s == pytest.approx(1000.0)  # 2 workers x 500 images/s
    assert capacity.limited_by == "workers"


def test_the_mains_cpu_caps_many_workers():
    capacity = modelled_capacity(JPEG, 64, main_link_bps=100 * GBIT, worker_link_bps=10 * GBIT)
    assert capacity.images_per_s == pytest.approx(2000.0)  # 1 / 0.5 ms
    assert capacity.limited_by == "the main's CPU"


def test_the_mains_link_caps_before_its_cpu():
    capacity = modelled_capacity(JPEG, 64, main_link_bps=GBIT, worker_link_bps=GBIT)
    assert capacity.images_per_s == pytest.approx(625.0)  # 125 MB/s over 200 KB
    assert capacity.limited_by == "the main's link"


def test_slow_worker_links_and_shared_cores():
    slow = modelled_capacity(BITS, 2, main_link_bps=100 * GBIT, worker_link_bps=100e6)
    assert slow.images_per_s == pytest.approx(2 * 12.5e6 / 80_000)
    assert slow.limited_by == "the workers' links"
    shared = modelled_capacity(
        JPEG, 4, main_link_bps=100 * GBIT, worker_link_bps=10 * GBIT, shared_cores=2
    )
    assert shared.images_per_s == pytest.approx(2 * 1000 / 2.5)
    assert shared.limited_by == "cores"


def test_a_mix_beats_either_route_when_link_and_cpu_both_bind():
    links = {"main_link_bps": GBIT, "worker_link_bps": GBIT}
    jpeg = modelled_capacity(JPEG, 8, **links).images_per_s  # link-bound: 625
    bits = modelled_capacity(BITS, 8, **links).images_per_s  # main-bound: 500
    mixed = mixed_capacity(JPEG, BITS, 8, **links)
    assert mixed.images_per_s > max(jpeg, bits)
    assert mixed.route.endswith("% bits back")
    # the mix is where link and CPU meet: 125e6 / bytes == 1000 / main_ms
    share = int(mixed.route.split("%")[0]) / 100
    main_ms = 0.5 + share * 1.5
    assert mixed.images_per_s == pytest.approx(1000 / main_ms, rel=0.05)


def test_transports_take_turns_in_each_repeat():
    """Main-cost runs of several transports alternate within each repeat (after one warm-up
    run each), so that they are compared side by side; each transport's steps add up."""
    events = []

    def runner(name: str):
        def run(n: int) -> dict:
            events.append(f"{name} {n}")
            return {name: n}

        return run

    costs = marginal_costs(
        {"direct": runner("direct"), "floor": runner("floor")},
        controller_pid=os.getpid(),
        worker_pids=[os.getpid()],
        small=2,
        large=5,
        repeats=2,
    )
    assert events == ["direct 2", "floor 2", *["direct 2", "direct 5", "floor 2", "floor 5"] * 2]
    assert [(c.transport, c.steps, c.images) for c in costs] == [
        ("direct", {"direct": 14}, (2, 5)),
        ("floor", {"floor": 14}, (2, 5)),
    ]


BURNER = """
import sys, threading
t = threading.Thread(target=lambda: sum(range(3_000_000)))
t.start(); t.join(); sum(range(3_000_000))
print("done", flush=True); sys.stdin.read()
"""


def test_cpu_seconds_agree_with_proc_to_the_tick():
    """The CPU clock read for a process (to the nanosecond) counts what /proc counts in 10 ms
    ticks, its ended threads included."""
    burner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            BURNER,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(burner, timeout_s=60) == "done\n"
        times = psutil.Process(burner.pid).cpu_times()
        counted = cpu_seconds([burner.pid])
        assert abs(counted - (times.user + times.system)) < 0.03
        assert counted > 0.05
    finally:
        burner.kill()
        burner.wait(timeout=10)
