"""The command line: `imgdist run`, `imgdist worker`, `imgdist notebook`."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from imgdist.benchsuite import ALL_CASES
from imgdist.codec import DEFAULT_MAX_PIXELS
from imgdist.distribute import (
    DEFAULT_SCHEDULE,
    DEFAULT_STALL_TIMEOUT_S,
    DEFAULT_TRANSPORT,
    SCHEDULES,
    distribute,
)
from imgdist.errors import ImgdistError, ParameterError, RunError
from imgdist.transports import TRANSPORTS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with `run`, `worker` and `notebook` subcommands."""
    parser = argparse.ArgumentParser(
        prog="imgdist",
        description="Threshold a portrait's copies (or your images) on ipyparallel engines that draw their names.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="process images on workers and write outputs and manifest.json",
        description="Do the main notebook's job without a notebook. Exit status 0 only "
        "when every image was processed.",
    )
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
        default="",
        help="worker names (label@host) to use, in order (default: all engines)",
    )
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
        default="",
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

    worker = sub.add_parser(
        "worker",
        help="start a worker engine on this machine",
        description="Start an ipyparallel engine that registers with the controller as "
        "LABEL@<this host>, and keep it running until interrupted.",
    )
    worker.add_argument(
        "--connection",
        required=True,
        metavar="ENGINE_JSON",
        help="the controller's ipcontroller-*-engine.json, copied to this machine",
    )
    worker.add_argument(
        "--name", required=True, metavar="LABEL", help="the worker's label, e.g. worker1"
    )
    worker.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for registration (default: 30)",
    )

    bench = sub.add_parser(
        "bench",
        help="benchmark imgdist's flows against local and the peers",
        description="Benchee-style, interleaved runs of the same file-to-file job: local, "
        "seed/1,2,4 (the Livebook's flow), fast/1,2,4 (the defaults), "
        "multiprocessing, process-pool and dask, and split/2,4 (the machine's ceiling).",
    )
    bench.add_argument(
        "--images", type=int, default=32, metavar="N", help="copies of the portrait (default: 32)"
    )
    bench.add_argument(
        "--size", default="", metavar="WxH", help="rescale the portrait (default: its own size)"
    )
    bench.add_argument(
        "--runs", type=int, default=10, metavar="N", help="measured runs per case (default: 10)"
    )
    bench.add_argument(
        "--warmup", type=int, default=2, metavar="N", help="warm-up runs per case (default: 2)"
    )
    bench.add_argument(
        "--cases",
        default=",".join(ALL_CASES),
        metavar="NAME[,NAME...]",
        help=f"cases to run (default: all: {','.join(ALL_CASES)})",
    )
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    bench.add_argument("--plot", type=Path, metavar="FILE", help="write the chart as PNG")
    bench.add_argument(
        "--main-cost",
        action="store_true",
        help="instead: CPU per image on the main's side (main + controller) against the "
        "workers', per transport, on 2 local engines (64 vs 1,024 images)",
    )
    bench.add_argument(
        "--scaling",
        default="",
        metavar="N[,N...]",
        help="instead: fast/2 on each number of images; time per image and main's peak RSS",
    )

    notebook = sub.add_parser(
        "notebook", help="execute notebooks/main.ipynb headless into an output folder"
    )
    notebook.add_argument("--notebook", type=Path, default=Path("notebooks/main.ipynb"))
    notebook.add_argument("--out", type=Path, default=Path("results"))
    notebook.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="per cell (default: 600)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        commands = {"run": _run, "worker": _worker, "bench": _bench, "notebook": _notebook}
        return commands[args.command](args)
    except ImgdistError as exc:
        print(f"imgdist: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if not isinstance(exc, RunError) else EXIT_FAILED
    except KeyboardInterrupt:
        print("imgdist: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk or the system said no: a sentence, not a traceback
        named = exc.filename2 or exc.filename  # a rename's target rather than its temporary file
        where = f" ({named})" if named else ""
        print(f"imgdist: error: {exc.strerror or exc}{where}.", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from imgdist.files import FolderLock
    from imgdist.runner import check_out_dir

    out = check_out_dir(args.out)
    with FolderLock([out]):  # the whole command: copies, cluster, run and manifest
        return _run_locked(args, out)


def _run_locked(args: argparse.Namespace, out: Path) -> int:
    from imgdist.console import TerminalProgress
    from imgdist.runner import (
        expand_inputs,
        join_instructions,
        open_cluster,
        portrait_copies,
    )
    from imgdist.workers import resolve, wait_for_workers

    sources = (
        expand_inputs(args.inputs, skip=[out])
        if args.inputs
        else portrait_copies(out, url=args.url, copies=args.images)
    )
    roots = [path for path in (args.inputs or []) if Path(path).expanduser().is_dir()]
    launcher, local = engine_launch(args)
    if args.ssh and args.connection:
        msg = (
            f"--ssh {args.ssh} starts engines from a controller started here, but --connection "
            "connects to a running one; drop --connection (a controller starts here), or start "
            "workers on those machines with `imgdist worker`."
        )
        raise ParameterError(msg)
    curve = args.curve or os.environ.get("IPP_ENABLE_CURVE") == "1"
    with open_cluster(
        local=local,
        connection=args.connection or "",
        timeout_s=args.timeout,
        controller_ip=args.ip,
        curve=curve,
        ports=args.ports,
        launcher=launcher,
        launcher_args=args.launcher_args,
    ) as cluster:
        if cluster.is_local and (local == 0 or not args.ip.startswith("127.") or args.ports):
            print(join_instructions(cluster.engine_connection_file), flush=True)
        if args.ssh:
            hosts = [h.strip() for h in args.ssh.split(",") if h.strip()]
            started = start_over_ssh(cluster, hosts, args, first_label=local + 1)
            print(f"Started over SSH: {', '.join(w.name for w in started)}", flush=True)
        names = [n for n in args.workers.split(",") if n.strip()]
        if names:
            workers = wait_for_workers(cluster, names, timeout_s=args.timeout)
        else:
            cluster.wait_for_engines(1, timeout_s=args.timeout)
            known = cluster.workers(timeout_s=args.timeout)
            workers = resolve(cluster, [w.name for w in known], known=known)
        print(
            f"Processing {len(sources)} images on {', '.join(w.name for w in workers)} ...",
            flush=True,
        )
        progress = TerminalProgress(len(sources))
        try:
            result = distribute(
                workers,
                sources,
                out_dir=out / "images",
                manifest=out / "manifest.json",
                transport=args.transport,
                schedule=args.schedule,
                resume=args.resume,
                max_pixels=args.max_pixels,
                stall_timeout_s=args.stall_timeout,
                input_roots=[Path(root).expanduser() for root in roots],
                on_progress=progress,
            )
        except RunError as exc:
            progress.close()
            if exc.result is not None:
                print(exc.result.summary())
            raise
        progress.close()
    print(result.summary())
    print(f"Outputs: {out / 'images'}; manifest: {out / 'manifest.json'}")
    return EXIT_OK if result.ok else EXIT_FAILED


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
            f"--ssh {args.ssh} starts engines on other machines, but the controller listens on {args.ip} "
            "only; add --ip with an address of this machine that they can reach."
        )
        raise ParameterError(msg)
    labels = [f"worker{first_label + i}" for i in range(len(hosts))]
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


def _worker(args: argparse.Namespace) -> int:
    from imgdist.worker import WorkerEngine

    engine = WorkerEngine.start(args.connection, args.name)
    signal.signal(signal.SIGTERM, lambda *_: engine.terminate())
    try:
        status = engine.wait_registered(args.timeout)
        print(
            f"Worker {engine.name} is running: {status}. Type '{engine.name}' into the main notebook. "
            "Stop it with Ctrl-C.",
            flush=True,
        )
        code = engine.wait()
    finally:
        engine.stop()
    if engine.stop_requested:
        print(f"Worker {engine.name} stopped.")
        engine.close()
        return EXIT_OK
    print(
        f"Worker {engine.name}'s engine exited with code {code}; its log ends:\n{engine.log_tail()}"
    )
    engine.close()
    return EXIT_FAILED


def _bench(args: argparse.Namespace) -> int:
    from imgdist.benchsuite import parse_size, run_bench, run_main_cost, run_scaling
    from imgdist.maincost import save_main_cost
    from imgdist.render import (
        bench_chart,
        bench_table_text,
        main_cost_table_text,
        scaling_table_text,
    )

    if args.scaling:
        counts = [_whole(n, "--scaling") for n in args.scaling.split(",") if n.strip()]
        print(scaling_table_text(run_scaling(counts)))
        return EXIT_OK
    if args.main_cost:
        costs = run_main_cost()
        print(main_cost_table_text(costs))
        if args.json:
            save_main_cost(args.json, costs)
            print(f"JSON: {args.json}")
        return EXIT_OK
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    size = parse_size(args.size)
    print(
        f"Benchmarking {len(names)} cases on {args.images} images, {args.runs} runs each ...",
        flush=True,
    )
    report = run_bench(
        names, n_images=args.images, size=size, runs=args.runs, warmup_runs=args.warmup
    )
    baseline = "local" if "local" in names else None
    print(bench_table_text(report, baseline=baseline))
    if args.json:
        report.save(args.json)
        print(f"JSON: {args.json}")
    if args.plot:
        title = f"{args.images} portraits ({report.params['size']}), file to file"
        bench_chart(report, title=title, baseline=baseline).savefig(args.plot, dpi=100)
        print(f"Chart: {args.plot}")
    return EXIT_OK


def _whole(text: str, option: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        msg = f"{option} takes whole numbers of at least 1; {text!r} is not one."
        raise ParameterError(msg)
    return int(text)


def _notebook(args: argparse.Namespace) -> int:
    from imgdist.notebook import execute_main

    return execute_main(args.notebook, args.out, timeout_s=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
