"""More engines for a cluster started here: local ones, or one per host over SSH."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time

from imgdist.cluster.identity import Worker
from imgdist.engine import LABEL_ENV
from imgdist.errors import NoEnginesError, ParameterError
from imgdist.names import WORKER_LABEL, numbered_label

DEFAULT_START_TIMEOUT_S = 60.0


class MoreEngines:
    """The part of `Cluster` that adds engines to a cluster started here (a mixin)."""

    def start_ssh_engines(
        self,
        hosts: list[str],
        labels: list[str],
        *,
        ssh_args: list[str] | None = None,
        remote_python: str = "",
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> list[Worker]:
        """Start one engine on each of `hosts` (`[user@]host[:port]`) over SSH, through
        ipyparallel's SSH engine launcher, named `labels[i]@<that host>`.

        `remote_python` is the interpreter on the hosts that has imgdist (default: this one's
        path); the hosts must reach this controller's address.
        """
        if self._local is None:
            msg = (
                f"engines over SSH start from a controller started here, but this one ({self.source}) "
                "was only connected to; start it here (imgdist run without --connection, or the "
                "notebook with no connection), or start workers on those machines with "
                "`imgdist worker`."
            )
            raise ParameterError(msg)
        python = remote_python or sys.executable
        before = set(self._client.ids)
        try:
            _launch_over_ssh(
                self._local, hosts, labels, list(ssh_args or []), python, self._remote_dirs
            )
        except subprocess.CalledProcessError as exc:
            msg = (
                f"could not start an engine over SSH on {', '.join(hosts)} ({exc.cmd[0]} exited with "
                f"{exc.returncode}); check that `ssh HOST` works without a password and that {python} "
                "with imgdist exists there."
            )
            raise NoEnginesError(msg) from None
        new_ids = self._wait_for_new(before, len(hosts), timeout_s=timeout_s)
        return self.identify(new_ids)

    def _wait_for_new(self, before: set[int], n_engines: int, *, timeout_s: float) -> list[int]:
        # new ids rather than a count: an engine that just died may still be counted
        deadline = time.monotonic() + timeout_s
        while len(set(self._client.ids) - before) < n_engines:
            if time.monotonic() > deadline:
                msg = (
                    f"{len(set(self._client.ids) - before)} of {n_engines} new engines registered "
                    f"within {timeout_s:g} s; check the engine logs in {self._local.profile_dir}."
                )
                raise NoEnginesError(msg)
            time.sleep(0.05)
        return sorted(set(self._client.ids) - before)

    def start_engines(
        self,
        n_engines: int,
        *,
        label_prefix: str = WORKER_LABEL,
        labels: list[str] | None = None,
        timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> list[Worker]:
        """Start `n_engines` more local engines (local clusters only) and name them.

        They are named `labels` (e.g. to bring back a worker that was lost), or
        `<label_prefix><engine id + 1>`.
        """
        if self._local is None:
            msg = (
                f"more engines can be started only on a cluster started here, not on {self.source}; "
                "start workers on their machines with `imgdist worker`."
            )
            raise ParameterError(msg)
        before = set(self._client.ids)
        self._local.start_engines_sync(n=n_engines)
        new_ids = self._wait_for_new(before, n_engines, timeout_s=timeout_s)
        names = list(labels or []) + [
            numbered_label(eid + 1, label_prefix) for eid in new_ids[len(labels or []) :]
        ]
        return [
            self._set_label(eid, label, only_if_unset=False)
            for eid, label in zip(new_ids, names, strict=False)
        ]


def _launch_over_ssh(
    local, hosts: list[str], labels: list[str], ssh: list[str], python: str, remote_dirs: list
) -> None:
    """One engine per host through ipyparallel's SSH launcher, named by its label.

    The connection file (with the key) goes to a folder of its own on each host: a name nobody
    can guess, made here with mode 0700 (`mkdir` fails if it exists, so it cannot have been
    made beforehand by someone else), removed when the cluster stops (`remote_dirs` lists
    them). Not the local profile's path: on a shared disk scp would copy the file onto itself.
    One engine set per host, so each host has a folder of its own (hosts may share /tmp).
    """
    launcher_class = local.engine_launcher_class
    local.engine_launcher_class = "ssh"
    try:
        for host, label in zip(hosts, labels, strict=True):
            command = ["env", f"{LABEL_ENV}={label}", python, "-m", "ipyparallel.engine"]
            remote_dir = f"/tmp/imgdist-ssh-{secrets.token_hex(12)}"
            _ssh(host, ssh, f"umask 077 && mkdir -m 700 {remote_dir}")
            remote_dirs.append((host, ssh, remote_dir))
            local.start_engines_sync(
                n=1,
                engines={host: {"n": 1, "engine_cmd": command}},
                ssh_args=ssh,
                scp_args=_scp_args(ssh),
                remote_python=python,
                remote_profile_dir=remote_dir,
            )
    finally:
        local.engine_launcher_class = launcher_class


def _ssh(host: str, ssh_args: list[str], command: str, timeout_s: float = 30.0) -> None:
    """Run `command` on `host` over ssh (with the launcher's options); CalledProcessError if it fails."""
    subprocess.run(
        ["ssh", *ssh_args, host, command],
        check=True,
        capture_output=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def _scp_args(ssh_args: list[str]) -> list[str]:
    # scp spells ssh's port option -P; everything else (-i, -o ...) is the same
    return ["-P" if arg == "-p" else arg for arg in ssh_args]


def remove_remote_dirs(folders: list[tuple[str, list[str], str]]) -> None:
    """Remove the folders made on remote hosts for connection files: (host, ssh args, folder)."""
    for host, ssh_args, folder in folders:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _ssh(host, ssh_args, f"rm -rf {folder}")
