"""Real machines, simulated with network namespaces: a controller on one test host, workers on
others (own address, own hostname, no view of the main's disk), shaped and cut links, CurveZMQ.
Root only; CI runs these as root."""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO
from .netns import TestNetwork, namespaces_usable

REASON = namespaces_usable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.integration,
    pytest.mark.skipif(bool(REASON), reason=REASON),
]
IMGDIST = [sys.executable, "-m", "imgdist"]
CHECKER = REPO.parent / "shared" / "tools" / "check_results.py"
HOSTS = ["main", "h1", "h2", "h3", "h4", "h5"]


@pytest.fixture(scope="module")
def net():
    with TestNetwork(HOSTS) as network:
        yield network


def read_until(process: subprocess.Popen, marker: str, timeout_s: float) -> tuple[str, list[str]]:
    """The first stdout line containing `marker`, and every line read so far."""
    seen: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return line, seen
    pytest.fail(f"no line with {marker!r} within {timeout_s} s; got:\n{''.join(seen)}")
    return "", seen


def start_main(net: TestNetwork, out: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """`imgdist run` in the main host with a controller on its address; the engine file."""
    main = net.popen(
        "main",
        [
            *IMGDIST,
            "run",
            "--local",
            "0",
            "--ip",
            net.address("main"),
            "--out",
            str(out),
            "--timeout",
            "60",
            *extra,
        ],
        hostname="mainhost",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line, _ = read_until(main, "Engine connection file:", 60)
    return main, Path(line.split("Engine connection file:", 1)[1].strip())


def start_worker(
    net: TestNetwork, host: str, engine_file: Path, label: str, out: Path
) -> subprocess.Popen:
    """`imgdist worker` on `host`, named `label@<host>host`, that cannot see `out`."""
    return net.popen(
        host,
        [*IMGDIST, "worker", "--connection", str(engine_file), "--name", label, "--timeout", "60"],
        hostname=f"{host}host",
        hide=(out,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def finish(main: subprocess.Popen, timeout_s: float = 180) -> str:
    output, _ = main.communicate(timeout=timeout_s)
    assert main.returncode == 0, output
    return output


def manifest_workers(out: Path) -> list[str]:
    return [row["worker"] for row in json.loads((out / "manifest.json").read_text())]


def check_results(out: Path, workers: int) -> None:
    if CHECKER.is_file():
        check = subprocess.run(
            [sys.executable, str(CHECKER), str(out), "--expect-workers", str(workers)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert check.returncode == 0, check.stdout


def test_four_workers_on_four_hosts(net, tmp_path):
    """The 32-image job from the main host, with the four workers typed by name, each on its own host."""
    out = tmp_path / "out"
    out.mkdir()
    names = [f"worker{i}@h{i}host" for i in range(1, 5)]
    main, engine_file = start_main(net, out, "--workers", ",".join(names))
    assert engine_file.stat().st_mode & 0o777 == 0o600
    for i in range(1, 5):
        start_worker(net, f"h{i}", engine_file, f"worker{i}", out)
    output = finish(main)
    assert "32 images processed, 0 failed" in output
    assert "(encoded transport" in output  # the workers do not see the main's disk
    assert set(manifest_workers(out)) == set(names)
    check_results(out, 4)


def test_a_plain_ipengine_worker(net, tmp_path):
    """An engine started with plain `ipengine --file` on another host works, as engine0@<host>."""
    out = tmp_path / "out"
    out.mkdir()
    main, engine_file = start_main(net, out, "--workers", "engine0@h5host", "--images", "8")
    profile = tmp_path / "plain-profile"
    profile.mkdir()
    net.popen(
        "h5",
        [
            sys.executable,
            "-m",
            "ipyparallel.engine",
            f"--file={engine_file}",
            f"--profile-dir={profile}",
        ],
        hostname="h5host",
        hide=(out,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    output = finish(main)
    assert "8 images processed, 0 failed" in output
    assert set(manifest_workers(out)) == {"engine0@h5host"}


def test_shaped_link_still_correct(net, tmp_path):
    """One worker's link shaped to 100 Mbit/s and 5 ms delay: the job is still correct; the time is reported."""
    out = tmp_path / "out"
    out.mkdir()
    names = ["worker1@h1host", "worker2@h2host"]
    shaping = net.shape("h2", rate="100mbit", delay="5ms")
    main, engine_file = start_main(net, out, "--workers", ",".join(names))
    for i in (1, 2):
        start_worker(net, f"h{i}", engine_file, f"worker{i}", out)
    started = time.monotonic()
    output = finish(main)
    elapsed = time.monotonic() - started
    assert "32 images processed, 0 failed" in output
    assert set(manifest_workers(out)) == set(names)
    check_results(out, 2)
    print(
        f"shaped link (h2: {shaping}): job incl. worker start {elapsed:.1f} s; {output.splitlines()[-4]}"
    )
