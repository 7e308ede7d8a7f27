"""How `imgdist run` gets its engines: how many and by what (--local, --slurm, --mpi, ...), and
more over SSH."""

from __future__ import annotations

import argparse
import shlex

from imgdist.errors import ParameterError
from imgdist.names import numbered_label

BATCH_OPTIONS = ("slurm", "mpi", "pbs", "sge", "lsf")


def engine_launch(args: argparse.Namespace) -> tuple[str, int]:
    """(launcher, engines to start) from --local, --slurm, --mpi, ... (default: 4 local ones;
    none when connecting to a running cluster)."""
    for name in BATCH_OPTIONS:
        count = getattr(args, name)
        if count is not None:
            if count < 1:
                msg = f"--{name} {count}: give how many engines to start, at least 1."
                raise ParameterError(msg)
            return name, count
    if args.launcher_args:
        msg = (
            f"--launcher-args {args.launcher_args!r} is for engines started by --slurm, --mpi, "
            "--pbs, --sge or --lsf; add one of them, or leave the arguments out."
        )
        raise ParameterError(msg)
    return "local", args.local if args.local is not None else (0 if args.connection else 4)


def start_over_ssh(cluster, hosts: list[str], args: argparse.Namespace, *, first_label: int):
    """One engine per SSH host, labelled worker<first_label>, worker<first_label + 1>, ..."""
    if args.ip.startswith("127.") and not all(_is_loopback(h) for h in hosts):
        msg = (
            f"--ssh {','.join(args.ssh)} starts engines on other machines, but the controller listens on {args.ip} "
            "only; add --ip with an address of this machine that they can reach."
        )
        raise ParameterError(msg)
    labels = [numbered_label(first_label + i) for i in range(len(hosts))]
    return cluster.start_ssh_engines(
        hosts,
        labels,
        ssh_args=shlex.split(args.ssh_args),
        remote_python=args.remote_python,
        timeout_s=args.timeout,
    )


def _is_loopback(host: str) -> bool:
    name = host.rpartition("@")[2].partition(":")[0]
    return name in ("localhost", "::1") or name.startswith("127.")
