"""A shared-disk lab: worker hosts that mount the main's folder over sshfs at the same path.

The main's files live on this machine's disk in `<base>/share`. An sshd runs in the "main" host
(its own network namespace, see tests/netns.py) and exports them over SFTP at the main's address.
A command run in a worker host gets its own mount namespace in which `<base>/share` is an sshfs
mount of `root@<main>:<base>/share`, so `<base>/share/photos/p0.jpg` names the same file on the
main and on every worker, and the traffic crosses the test network (veth, bridge), not loopback.
The mount lives exactly as long as the command: it is made in the command's mount namespace
(never visible on this machine or to another command), and a watcher unmounts it when the
command exits. Folders of the main that a worker must not see (`<base>/private` by default) are
covered with tmpfs there. Everything (processes, mounts, namespaces, the lab's folder) is removed
on exit, also after a failure.

Findings behind the defaults (Debian 12: sshfs 3.7.3, libfuse 3.14, OpenSSH 9.2p1; measured
by tests/test_sshfs_lab.py and by hand):

- Caches. sshfs caches directory listings, names and attributes itself (`dir_cache=yes`,
  20 s) and the kernel caches names and attributes (`entry_timeout=1`, `attr_timeout=1`). With
  those defaults a worker's listing missed a file that the main had created for ~20 s, and a
  read right after another host replaced a file could return the new bytes cut at the old
  size (the kernel still had the old size). `FRESH`
  (`dir_cache=no,entry_timeout=0,attr_timeout=0,negative_timeout=0`) sends every lookup, stat
  and listing to the server; sshfs opens files without `kernel_cache`, so each open also starts
  with an empty page cache: other hosts' changes showed within a few ms. (`cache=no` is still
  accepted as the old name of `dir_cache=no`.)
- Mounting. sshfs 3.x mounts first and connects after, so a mount point that shows in
  /proc/self/mountinfo may not answer yet: a worker command starts once a listing through the
  mount answers (~0.15 s per mount here).
- Rename. OpenSSH's SFTP server offers `posix-rename@openssh.com`, which sshfs uses by itself
  for rename(2): a rename over an existing file is atomic and needs no `-o workaround=rename`
  (that workaround, for servers without the extension, moves the target away first, so for a
  moment there is no file at all).
- O_CREAT|O_EXCL is done by the server's open(2) (SFTP's SSH_FXF_EXCL), so it is atomic across
  mounts; the loser gets EEXIST, or EPERM when it had not seen the file yet (SFTP v3 has no
  "exists" status).
- flock/fcntl locks are not sent over SFTP: sshfs has no lock operation, so the kernel keeps
  them per mount, and two workers both get an exclusive lock on the same file.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .netns import TestNetwork, sh

SSHFS = "/usr/bin/sshfs"
SSHD = "/usr/sbin/sshd"
# the project's Python: workers see it, since only the share and the hidden folders differ there
PYTHON = sys.executable

# sshfs options that make every worker see the server's current names, sizes and bytes.
FRESH = ("dir_cache=no", "entry_timeout=0", "attr_timeout=0", "negative_timeout=0")
# sshfs's own defaults (sshfs name/attribute cache 20 s, kernel name/attribute cache 1 s).
DEFAULT_CACHE: tuple[str, ...] = ()

MOUNT_TIMEOUT_S = 20  # how long a worker command waits for its sshfs mount before giving up
MOUNT_FAILED = 97  # the exit status of a worker command whose sshfs mount failed


def binaries_missing() -> str:
    """'' when sshfs, sshd, ssh and ssh-keygen are installed, else what is missing."""
    missing = [b for b in (SSHFS, SSHD) if not Path(b).exists()]
    missing += [b for b in ("ssh", "ssh-keygen", "mountpoint") if not shutil.which(b)]
    if not Path("/dev/fuse").exists():
        missing.append("/dev/fuse")
    return ", ".join(missing)


class _LabNetwork(TestNetwork):
    """TestNetwork with names and addresses of its own, so that a lab never clashes with a
    TestNetwork of the same process (tests/test_multihost.py's, say) or with another lab."""

    made = 0  # labs made by this process, so that two of them never share a name

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        pid, serial = os.getpid(), _LabNetwork.made % 26
        _LabNetwork.made += 1
        # interface names stay within 15 characters: sfl + 5 digits + letter + index + h/s
        self.prefix = f"sfl{pid % 100000}{chr(ord('a') + serial)}"
        self.subnet = f"10.{150 + serial}.{pid % 250}"
        self.switch = f"{self.prefix}-sw"


class SharedDiskLab:
    """Host `main` (with sshd) and `workers` that see `<base>/share` over sshfs at the same path.

    `cache` is a tuple of sshfs options (FRESH or DEFAULT_CACHE or your own); `hide` are the
    folders covered in every worker command (default: `<base>/private`, the main's own files).
    `parent` is where the lab makes its folder (a fresh temporary one, removed on exit).
    """

    __test__ = False  # not a test class, for pytest

    def __init__(
        self,
        workers: list[str],
        *,
        main: str = "main",
        cache: tuple[str, ...] = FRESH,
        hide: tuple[Path, ...] | None = None,
        parent: Path | None = None,
    ) -> None:
        self.main = main
        self.workers = list(workers)
        self.cache = tuple(cache)
        self.net = _LabNetwork([main, *self.workers])
        self.base = Path(tempfile.mkdtemp(prefix="sshfs-lab-", dir=parent)).resolve()
        self.share = self.base / "share"  # the main's files that the workers mount
        self.private = self.base / "private"  # the main's files that the workers must not see
        self.ssh_dir = self.base / "ssh"  # keys, configs, pid file (0700)
        self.logs = self.base / "logs"  # sshd's log and one sshfs log per worker command
        self.hide = (self.private,) if hide is None else tuple(hide)
        self._entered = False

    # --- setting up ------------------------------------------------------------------------

    def __enter__(self) -> SharedDiskLab:  # noqa: PYI034
        try:
            for folder in (self.share, self.private, self.logs):
                folder.mkdir()
            self.ssh_dir.mkdir(mode=0o700)
            self.net.__enter__()
            self._entered = True
            self._start_sshd()
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def address(self) -> str:
        """The main's address on the test network (where sshd listens)."""
        return self.net.address(self.main)

    def _start_sshd(self) -> None:
        keys = self.ssh_dir
        for name in ("client", "hostkey"):
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"sshfs-lab-{name}",
               "-f", str(keys / name))  # fmt: skip
        (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
        # the workers check the main's host key against this file instead of trusting any key
        (keys / "known_hosts").write_text(
            f"{self.address} {(keys / 'hostkey.pub').read_text().split(' sshfs-lab')[0]}\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        config = keys / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.address}",
                    "Port 22",
                    f"HostKey {keys / 'hostkey'}",
                    f"AuthorizedKeysFile {keys / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "StrictModes no",
                    "UsePAM no",
                    "UseDNS no",
                    "PrintMotd no",
                    "X11Forwarding no",
                    "MaxStartups 100:30:200",  # many workers may connect at once
                    f"PidFile {keys / 'sshd.pid'}",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        with (self.logs / "sshd.log").open("wb") as log:
            self.sshd = self.net.popen(
                self.main,
                [SSHD, "-D", "-e", "-f", str(config)],
                hostname=f"{self.main}host",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        probe = ["ssh", *self.ssh_options(), f"root@{self.address}", "true"]
        deadline = time.monotonic() + 30
        while True:  # bounded: until sshd answers a worker over the test network
            assert self.sshd.poll() is None, f"sshd exited:\n{self.read_logs()}"
            done = self.net.run(self.workers[0], probe, timeout=30)
            if done.returncode == 0:
                return
            assert time.monotonic() < deadline, f"sshd did not answer:\n{done.stderr}"
            time.sleep(0.2)

    def ssh_options(self) -> list[str]:
        """ssh's options to reach the main as root with the lab's key and known host key."""
        options = [
            f"IdentityFile={self.ssh_dir / 'client'}",
            "IdentitiesOnly=yes",
            f"UserKnownHostsFile={self.ssh_dir / 'known_hosts'}",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            # not OpenSSH 9's default post-quantum exchange: ~100 ms less per mount here
            "KexAlgorithms=curve25519-sha256",
            "ConnectTimeout=10",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=3",
            "LogLevel=ERROR",
        ]
        return [arg for option in options for arg in ("-o", option)]

    def sshfs_argv(self) -> list[str]:
        """The sshfs command that mounts the main's share at the same path (in the foreground:
        it stays in the command's process group, so killing that group kills it too)."""
        options = ",".join([*self.cache, "idmap=none", "max_conns=1"])
        argv = [SSHFS, "-f", "-o", options]
        argv += self.ssh_options()
        return [*argv, f"root@{self.address}:{self.share}", str(self.share)]

    # --- running in worker hosts -----------------------------------------------------------

    def command(
        self,
        host: str,
        argv: list[str],
        *,
        hostname: str = "",
        hide: tuple[Path, ...] = (),
        mount: bool = True,
    ) -> list[str]:
        """`argv` as run in worker `host`: its network, hostname `hostname` (default
        `<host>host`), the lab's and `hide` folders covered, and (unless `mount` is False) the
        main's share mounted over sshfs at the same path for as long as `argv` runs.

        A failed mount makes the command exit with MOUNT_FAILED, sshfs's log on stderr."""
        q = shlex.quote
        share = q(str(self.share))
        lines = ["set -e", "mount --make-rprivate /", f"hostname {q(hostname or host + 'host')}"]
        lines += [f"mount -t tmpfs tmpfs {q(str(folder))}" for folder in (*self.hide, *hide)]
        if mount:
            limit = int(MOUNT_TIMEOUT_S / 0.05)
            lines += [
                f"mkdir -p {share}",  # the mount point, also when it sits under a hidden folder
                f"log={q(str(self.logs))}/sshfs-{q(host)}-$$.log",
                f'{shlex.join(self.sshfs_argv())} </dev/null >"$log" 2>&1 &',
                "fs=$!",
                "n=0",
                # sshfs 3.x mounts first and connects after (sshfs.c: fuse_mount, then
                # ssh_connect), so the mount point alone says too little: wait until a listing
                # through the mount answers (it blocks until sshfs has connected)
                f"until mountpoint -q {share} && ls -a {share} >/dev/null 2>&1; do",
                # sshfs gone (or a zombie) or too slow: the mount failed
                (
                    '  state=$(sed -n "s/^State:[[:space:]]*\\(.\\).*/\\1/p" /proc/$fs/status'
                    " 2>/dev/null || true)"
                ),
                f'  if [ -z "$state" ] || [ "$state" = Z ] || [ $n -ge {limit} ]; then',
                f'    echo "sshfs could not mount {share} in host {q(host)}:" >&2',
                '    cat "$log" >&2; kill $fs 2>/dev/null || true; exit ' + str(MOUNT_FAILED),
                "  fi",
                "  n=$((n + 1)); sleep 0.05",
                "done",
                # when the command (this shell's pid, after exec) is gone, unmount: sshfs exits
                (
                    f"(while kill -0 $$ 2>/dev/null; do sleep 0.1; done; umount -l {share})"
                    " </dev/null >/dev/null 2>&1 &"
                ),
            ]
        lines.append("exec " + shlex.join(argv))
        return [
            "ip", "netns", "exec", self.net.ns(host),
            "unshare", "--uts", "--mount", "--propagation", "private",
            "sh", "-c", "\n".join(lines),
        ]  # fmt: skip

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start `argv` in worker `host` with the share mounted (stopped on exit)."""
        options = {k: kwargs.pop(k) for k in ("hostname", "hide", "mount") if k in kwargs}
        process = subprocess.Popen(
            self.command(host, argv, **options), start_new_session=True, **kwargs
        )
        self.net.processes.append(process)
        return process

    def run(
        self, host: str, argv: list[str], *, timeout: float, **options
    ) -> subprocess.CompletedProcess:
        """Run `argv` in worker `host` with the share mounted, to completion (within `timeout`)."""
        process = self.popen(
            host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=10)
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def python(self, host: str, code: str, *args: str, timeout: float = 60, **options):
        """Run Python `code` (with `args` in sys.argv[1:]) in worker `host`, share mounted."""
        return self.run(host, [PYTHON, "-c", code, *args], timeout=timeout, **options)

    def read_logs(self) -> str:
        """sshd's log and the sshfs logs, for failure messages."""
        parts = []
        for log in sorted(self.logs.glob("*.log")) if self.logs.is_dir() else []:
            with contextlib.suppress(OSError):
                parts.append(f"--- {log.name}\n{log.read_text(errors='replace')}")
        return "\n".join(parts)

    # --- tearing down ----------------------------------------------------------------------

    def __exit__(self, *exc: object) -> None:
        try:
            if self._entered:
                self._entered = False
                # kills every process started here and every process left in the lab's hosts
                # (sshd and its sessions, sshfs and its ssh, watchers), then deletes them; the
                # sshfs mounts go with the mount namespaces of those processes
                self.net.__exit__()
        finally:
            self._unmount_leftovers()
            shutil.rmtree(self.base, ignore_errors=True)

    def _unmount_leftovers(self) -> None:
        """Lazily unmount anything under the lab's folder in this mount namespace (there should
        be nothing: the mounts are made in the workers' namespaces only)."""
        for point in sorted(mounts_under(self.base), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)


def mounts_under(folder: Path, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at or under `folder` in the mount namespace of `mountinfo`."""
    prefix = str(folder)
    points = []
    with Path(mountinfo).open() as info:
        for line in info:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points
