"""`imgdist run`: the main notebook's job without a notebook."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from imgdist.cli.common import EXIT_FAILED, EXIT_OK, comma_list
from imgdist.cli.engines import engine_launch, start_over_ssh
from imgdist.codec import DEFAULT_MAX_PIXELS
from imgdist.defaults import (
    DEFAULT_SCHEDULE,
    DEFAULT_STALL_TIMEOUT_S,
    DEFAULT_TRANSPORT,
    SCHEDULES,
)
from imgdist.errors import ParameterError, RunError
from imgdist.transports import TRANSPORTS


def add_parser(sub) -> None:
    """The `run` sub-command's arguments."""
    run = sub.add_parser(
        "run",
        help="process images on workers and write outputs and manifest.json",
        description="Do the main notebook's job without a notebook. Exit status 0 only "
        "when every image was processed.",
    )
    _add_engines(run)
    _add_job(run)
    _add_network(run)
    _add_limits(run)
    run.set_defaults(command=command)


def _add_engines(run: argparse.ArgumentParser) -> None:
    """Where the engines come from: started here (how many, by what), or a running cluster."""
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--local",
        type=int,
        metavar="N",
        help="start a controller here with N local engines (default: 4; 0 for none: workers join)",
    )
    for name, what in (
        ("slurm", "as a Slurm job (sbatch)"),
        ("mpi", "with mpiexec (needs mpi4py)"),
        ("pbs", "as a PBS job (qsub; untested)"),
        ("sge", "as an SGE job (qsub; untested)"),
        ("lsf", "as an LSF job (bsub; untested)"),
    ):
        where.add_argument(
            f"--{name}",
            type=int,
            metavar="N",
            help=f"start a controller here and N engines {what}",
        )
    where.add_argument(
        "--connection",
        metavar="CLIENT_JSON",
        help="a running controller: its ipcontroller-*-client.json, or PROFILE[:CLUSTER_ID]",
    )
    run.add_argument(
        "--workers",
        metavar="NAME[,NAME...]",
        type=comma_list,
        default=[],
        help="worker names (label@host) to use, in order (default: all engines)",
    )


def _add_job(run: argparse.ArgumentParser) -> None:
    """What to process, where the outputs go, how images travel and are shared out."""
    what = run.add_mutually_exclusive_group()
    what.add_argument(
        "--images", type=int, default=32, metavar="N", help="copies of the portrait (default: 32)"
    )
    what.add_argument(
        "--inputs",
        nargs="+",
        metavar="PATH",
        help="your image files or folders instead of copies; folders are walked recursively "
        "(hidden ones skipped) and outputs keep their sub-folders",
    )
    run.add_argument(
        "--url", default="", help="download the portrait from this URL (default: matplotlib's)"
    )
    run.add_argument("--out", default="results", type=Path, help="output folder (default: results)")
    run.add_argument(
        "--transport",
        default=DEFAULT_TRANSPORT,
        choices=tuple(TRANSPORTS),
        help=f"how images travel (default: {DEFAULT_TRANSPORT}; 'pixels' is the Livebook's)",
    )
    run.add_argument(
        "--schedule",
        default=DEFAULT_SCHEDULE,
        choices=SCHEDULES,
        help=f"how images are shared out (default: {DEFAULT_SCHEDULE}; 'round-robin' is the Livebook's)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to wait for engines to start or answer (default: 60)",
    )


def _add_network(run: argparse.ArgumentParser) -> None:
    """The controller's address and ports, engines over SSH, encryption."""
    run.add_argument(
        "--ip",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address the controller started here listens on (default: 127.0.0.1, this machine only)",
    )
    run.add_argument(
        "--launcher-args",
        default="",
        metavar="ARGS",
        help='options for sbatch, qsub or mpiexec, e.g. --launcher-args="--partition=short '
        '--time=10" or --launcher-args="--hostfile hosts" (write = after --launcher-args)',
    )
    run.add_argument(
        "--ports",
        default="",
        metavar="LO-HI",
        help="keep every port the controller started here listens on in this range, for a "
        "firewall (at least 19 ports, e.g. 50000-50099; default: random ports)",
    )
    run.add_argument(
        "--ssh",
        type=comma_list,
        default=[],
        metavar="HOST[,HOST...]",
        help="also start one engine on each [user@]host over SSH (needs --ip reachable from there)",
    )
    run.add_argument(
        "--ssh-args",
        default="",
        metavar="ARGS",
        help='extra ssh options, e.g. "-i ~/.ssh/lab -o StrictHostKeyChecking=accept-new"',
    )
    run.add_argument(
        "--remote-python",
        default="",
        metavar="PATH",
        help="the Python with imgdist on the SSH hosts (default: this interpreter's path)",
    )
    run.add_argument(
        "--curve",
        action="store_true",
        help="encrypt and authenticate the cluster's traffic with CurveZMQ (or set IPP_ENABLE_CURVE=1)",
    )


def _add_limits(run: argparse.ArgumentParser) -> None:
    """When a worker is given up, resuming, and the decompression-bomb guard."""
    run.add_argument(
        "--stall-timeout",
        type=float,
        default=DEFAULT_STALL_TIMEOUT_S,
        metavar="S",
        help="give up a worker that holds work and shows no progress (no image claimed or "
        f"finished) for S seconds; its images go to the others (default: {DEFAULT_STALL_TIMEOUT_S:g})",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="keep outputs that OUT/manifest.json lists and that still decode; process only the rest",
    )
    run.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images over N pixels, a decompression-bomb guard (default: {DEFAULT_MAX_PIXELS:,})",
    )


def command(args: argparse.Namespace) -> int:
    from imgdist.lock import FolderLock
    from imgdist.runner import check_out_dir

    out = check_out_dir(args.out)
    with FolderLock([out]):  # the whole command: copies, cluster, run and manifest
        return _run_locked(args, out)


def _run_locked(args: argparse.Namespace, out: Path) -> int:
    from imgdist.runner import expand_inputs, portrait_copies

    sources = (
        expand_inputs(args.inputs, skip=[out])
        if args.inputs
        else portrait_copies(out, url=args.url, copies=args.images)
    )
    launcher, local = engine_launch(args)
    if args.ssh and args.connection:
        msg = (
            f"--ssh {','.join(args.ssh)} starts engines from a controller started here, but --connection "
            "connects to a running one; drop --connection (a controller starts here), or start "
            "workers on those machines with `imgdist worker`."
        )
        raise ParameterError(msg)
    with _open_cluster(args, launcher, local) as cluster:
        workers = _workers(cluster, args, local)
        print(
            f"Processing {len(sources)} images on {', '.join(w.name for w in workers)} ...",
            flush=True,
        )
        result = _distribute(args, workers, sources, out)
    print(result.summary())
    print(f"Outputs: {out / 'images'}; manifest: {out / 'manifest.json'}")
    return EXIT_OK if result.ok else EXIT_FAILED


def _open_cluster(args: argparse.Namespace, launcher: str, local: int):
    """The cluster the arguments name or start; join instructions when workers may join."""
    from imgdist.cluster.connection import join_instructions
    from imgdist.runner import open_cluster

    cluster = open_cluster(
        local=local,
        connection=args.connection or "",
        timeout_s=args.timeout,
        controller_ip=args.ip,
        curve=args.curve or os.environ.get("IPP_ENABLE_CURVE") == "1",
        ports=args.ports,
        launcher=launcher,
        launcher_args=args.launcher_args,
    )
    if cluster.is_local and (local == 0 or not args.ip.startswith("127.") or args.ports):
        try:
            print(join_instructions(cluster.engine_connection_file), flush=True)
        except BaseException:
            cluster.stop()
            raise
    return cluster


def _workers(cluster, args: argparse.Namespace, local: int) -> list:
    """The workers to use: started over SSH, named by --workers, or every engine."""
    from imgdist.connections import resolve, wait_for_workers

    if args.ssh:
        started = start_over_ssh(cluster, args.ssh, args, first_label=local + 1)
        print(f"Started over SSH: {', '.join(w.name for w in started)}", flush=True)
    if args.workers:
        return wait_for_workers(cluster, args.workers, timeout_s=args.timeout)
    cluster.wait_for_engines(1, timeout_s=args.timeout)
    known = cluster.workers(timeout_s=args.timeout)
    return resolve(cluster, [w.name for w in known], known=known)


def _distribute(args: argparse.Namespace, workers: list, sources: list[Path], out: Path):
    """The run, with a progress bar (or lines) on stderr; the summary printed if it fails."""
    from imgdist.console import TerminalProgress
    from imgdist.distribution import distribute

    roots = [
        Path(path).expanduser() for path in (args.inputs or []) if Path(path).expanduser().is_dir()
    ]
    progress = TerminalProgress(len(sources))
    try:
        return distribute(
            workers,
            sources,
            out_dir=out / "images",
            manifest=out / "manifest.json",
            transport=args.transport,
            schedule=args.schedule,
            resume=args.resume,
            max_pixels=args.max_pixels,
            stall_timeout_s=args.stall_timeout,
            input_roots=roots,
            on_progress=progress,
        )
    except RunError as exc:
        if exc.result is not None:
            progress.close()
            print(exc.result.summary())
        raise
    finally:
        progress.close()
