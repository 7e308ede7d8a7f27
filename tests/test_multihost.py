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

from .conftest import check_results
from .netns import TestNetwork, namespaces_usable

REASON = namespaces_usable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.integration,
    pytest.mark.skipif(bool(REASON), reason=REASON),
]
IMGDIST = [sys.executable, "-m", "imgdist"]
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


def check_outputs(out: Path, workers: int, images: int = 32) -> None:
    """The results checker: every image once, pixels and names right, `workers` distinct names."""
    check_results(out, "--expect-workers", workers, "--expect-images", images, "--exact")


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
    assert "(direct transport" in output  # the workers do not see the main's disk
    assert set(manifest_workers(out)) == set(names)
    check_outputs(out, 4)


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
    check_outputs(out, 2)
    print(
        f"shaped link (h2: {shaping}): job incl. worker start {elapsed:.1f} s; {output.splitlines()[-4]}"
    )


def test_curve_encryption(net, tmp_path):
    """With --curve the connection file carries the server key, and a two-host job still passes."""
    out = tmp_path / "out"
    out.mkdir()
    main, engine_file = start_main(
        net, out, "--workers", "worker1@h1host", "--images", "8", "--curve"
    )
    assert json.loads(engine_file.read_text())["curve_serverkey"]
    start_worker(net, "h1", engine_file, "worker1", out)
    output = finish(main)
    assert "8 images processed, 0 failed" in output
    assert set(manifest_workers(out)) == {"worker1@h1host"}


def count_outputs(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*_processed.jpg")) if folder.is_dir() else 0


def test_a_link_cut_mid_run(net, tmp_path):
    """A worker's link cut mid-run (`ip link set ... down`): the job completes on the other worker
    within a bounded time, and says which worker it lost."""
    out = tmp_path / "out"
    out.mkdir()
    for host in ("h3", "h4"):
        net.shape(host, rate="100mbit")  # slow enough that the cut lands mid-run
    names = ["worker3@h3host", "worker4@h4host"]
    main, engine_file = start_main(net, out, "--workers", ",".join(names), "--images", "600")
    for host, label in (("h3", "worker3"), ("h4", "worker4")):
        start_worker(net, host, engine_file, label, out)
    deadline = time.monotonic() + 120
    while count_outputs(out / "images") < 60:
        assert time.monotonic() < deadline, "the run did not get going"
        assert main.poll() is None, main.stdout.read()
        time.sleep(0.05)
    net.cut("h4")
    cut_at, outputs_at_cut = time.monotonic(), count_outputs(out / "images")
    output = finish(main, timeout_s=120)
    after_cut = time.monotonic() - cut_at
    print(
        f"link cut when {outputs_at_cut} of 600 outputs existed; the job finished {after_cut:.1f} s later"
    )
    assert after_cut < 60
    assert "(direct transport" in output  # the data route, not the controller, carried them
    assert "600 images processed, 0 failed" in output
    assert "Workers lost during the run: worker4@h4host" in output
    assert len(manifest_workers(out)) == 600
    check_outputs(out, 1, images=600)


@pytest.fixture(scope="module")
def sshd(net, tmp_path_factory):
    """Debian's sshd in hosts h1 and h2 (own hostnames), with a throwaway host key and client key."""
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("openssh-server is not installed (.ci/run installs it)")
    folder = tmp_path_factory.mktemp("ssh")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "client")], check=True
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "hostkey")], check=True
    )
    (folder / "authorized_keys").write_text((folder / "client.pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    for host in ("h1", "h2"):
        config = folder / f"sshd-{host}.conf"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {net.address(host)}",
                    "Port 22",
                    f"HostKey {folder / 'hostkey'}",
                    f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "StrictModes no",
                    "UsePAM no",
                    f"PidFile {folder / f'sshd-{host}.pid'}",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",
                    "",
                ]
            )
        )
        net.popen(
            host,
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            hostname=f"{host}host",
            stdout=subprocess.DEVNULL,
            stderr=(folder / f"sshd-{host}.log").open("w"),
        )
    ssh_args = (
        f"-i {folder / 'client'} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        "-o BatchMode=yes -o ConnectTimeout=10"
    )
    for host in ("h1", "h2"):  # wait (bounded) until each sshd answers
        deadline = time.monotonic() + 30
        while net.run(
            "main", ["ssh", *ssh_args.split(), f"root@{net.address(host)}", "true"], timeout=30
        ).returncode:
            assert time.monotonic() < deadline, (folder / f"sshd-{host}.log").read_text()
            time.sleep(0.2)
    return ssh_args


def test_engines_launched_over_ssh(net, sshd, tmp_path):
    """`imgdist run --ssh root@h1,root@h2`: engines start on both hosts over SSH and do the job."""
    out = tmp_path / "out"
    out.mkdir()
    hosts = f"root@{net.address('h1')},root@{net.address('h2')}"
    before = set(Path("/tmp").glob("imgdist-ssh-*"))  # the hosts share this machine's /tmp
    main, _ = start_main(net, out, "--ssh", hosts, "--ssh-args", sshd, "--images", "16")
    output = finish(main)
    assert "Started over SSH: worker1@h1host, worker2@h2host" in output
    assert "16 images processed, 0 failed" in output
    assert set(manifest_workers(out)) == {"worker1@h1host", "worker2@h2host"}
    # the folders holding the copied connection file (the key) are gone with the cluster
    assert set(Path("/tmp").glob("imgdist-ssh-*")) == before


def test_start_button_launches_over_ssh(net, sshd, tmp_path):
    """The notebook's Start flow: `root@<h2>` typed into a box, Start pressed, the box then holds the
    new worker's name, and a job runs on it."""
    done = net.run(
        "main",
        [
            sys.executable,
            str(Path(__file__).parent / "ssh_form_flow.py"),
            net.address("main"),
            f"root@{net.address('h2')}",
            sshd,
            str(tmp_path),
        ],
        hostname="mainhost",
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["box"] == "worker1@h2host", outcome
    assert outcome["connected"] == ["worker1@h2host"]
    assert outcome["processed"] == 8
    assert outcome["workers"] == ["worker1@h2host"]
