"""Test hosts on one machine: network namespaces joined by veth pairs to a bridge.

Each host is a namespace `<prefix>-<name>` with its own address on a private /24; the bridge
lives in its own namespace `<prefix>-sw`, so nothing is added to the machine's own network.
Processes run in a host with their own hostname (a UTS namespace) and can have folders hidden
from them (a mount namespace with tmpfs over the folder), so a worker host shares neither the
main's name nor its disk. Everything is removed on exit, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from pathlib import Path


def namespaces_usable() -> str:
    """'' when this process can make network namespaces, else the reason it cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs these tests as root)"
    probe = f"idgprobe{os.getpid()}"
    made = subprocess.run(
        ["ip", "netns", "add", probe], capture_output=True, text=True, check=False
    )
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return ""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


class TestNetwork:
    """Hosts `names` on 10.<a>.<b>.0/24; host i has address .(i+1)."""

    __test__ = False  # not a test class, for pytest

    def __init__(self, names: list[str]) -> None:
        pid = os.getpid()
        self.prefix = f"idg{pid % 100000}"
        self.subnet = f"10.{200 + pid % 50}.{pid % 250}"
        self.names = names
        self.switch = f"{self.prefix}-sw"
        self.processes: list[subprocess.Popen] = []

    def ns(self, host: str) -> str:
        """The namespace of `host`."""
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        """`host`'s IPv4 address."""
        return f"{self.subnet}.{self.names.index(host) + 1}"

    def switch_port(self, host: str) -> str:
        """The bridge-side end of `host`'s link (where tc shapes and `ip link down` cuts)."""
        return f"{self.prefix}{self.names.index(host)}s"

    def __enter__(self) -> TestNetwork:  # noqa: PYI034
        try:
            sh("ip", "netns", "add", self.switch)
            sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.switch, "link", "set", "br0", "up")
            for index, host in enumerate(self.names):
                ns, inside, port = self.ns(host), f"{self.prefix}{index}h", self.switch_port(host)
                sh("ip", "netns", "add", ns)
                sh("ip", "link", "add", inside, "type", "veth", "peer", "name", port)
                sh("ip", "link", "set", inside, "netns", ns)
                sh("ip", "link", "set", port, "netns", self.switch)
                sh("ip", "-n", ns, "link", "set", inside, "name", "eth0")
                sh("ip", "-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "-n", self.switch, "link", "set", port, "master", "br0")
                sh("ip", "-n", self.switch, "link", "set", port, "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def command(
        self, host: str, argv: list[str], *, hostname: str = "", hide: tuple[Path, ...] = ()
    ) -> list[str]:
        """`argv` as run in `host`: its network, its own hostname, `hide` folders covered."""
        steps = ["mount --make-rprivate /"]
        if hostname:
            steps.append(f"hostname {shlex.quote(hostname)}")
        steps += [f"mount -t tmpfs tmpfs {shlex.quote(str(folder))}" for folder in hide]
        steps.append("exec " + shlex.join(argv))
        return [
            "ip",
            "netns",
            "exec",
            self.ns(host),
            "unshare",
            "--uts",
            "--mount",
            "sh",
            "-c",
            " && ".join(steps),
        ]

    def popen(
        self,
        host: str,
        argv: list[str],
        *,
        hostname: str = "",
        hide: tuple[Path, ...] = (),
        **kwargs,
    ) -> subprocess.Popen:
        """Start `argv` in `host` (stopped when the network is torn down)."""
        process = subprocess.Popen(
            self.command(host, argv, hostname=hostname, hide=hide), start_new_session=True, **kwargs
        )
        self.processes.append(process)
        return process

    def run(
        self,
        host: str,
        argv: list[str],
        *,
        timeout: float,
        hostname: str = "",
        hide: tuple[Path, ...] = (),
    ) -> subprocess.CompletedProcess:
        """Run `argv` in `host` to completion (within `timeout`)."""
        return subprocess.run(
            self.command(host, argv, hostname=hostname, hide=hide),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def shape(self, host: str, *, rate: str = "100mbit", delay: str = "5ms") -> str:
        """Shape `host`'s link both ways: tc netem with `rate` and `delay`; where the kernel has
        no netem (this project's machines: "Specified qdisc kind is unknown"), tbf with `rate`
        only. Returns what was applied."""
        ends = [(self.switch, self.switch_port(host)), (self.ns(host), "eth0")]
        netem = ["netem", "rate", rate, "delay", delay]
        tbf = ["tbf", "rate", rate, "burst", "64kb", "latency", "50ms"]
        try:
            for ns, dev in ends:
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", *netem)
        except subprocess.CalledProcessError as exc:
            if "unknown" not in (exc.stderr or "").lower():
                raise
            for ns, dev in ends:
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", *tbf)
            return f"tbf rate {rate} (no netem in this kernel: no added delay)"
        return f"netem rate {rate} delay {delay}"

    def cut(self, host: str) -> None:
        """Cut `host`'s link at the bridge."""
        sh("ip", "-n", self.switch, "link", "set", self.switch_port(host), "down")

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        for name in [*(self.ns(h) for h in self.names), self.switch]:
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
            )
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        for name in [*(self.ns(h) for h in self.names), self.switch]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
