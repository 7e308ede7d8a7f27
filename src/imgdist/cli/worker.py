"""`imgdist worker`: an engine on this machine that joins a controller as LABEL@host."""

from __future__ import annotations

import argparse
import signal

from imgdist.cli.common import EXIT_FAILED, EXIT_OK


def add_parser(sub) -> None:
    """The `worker` sub-command's arguments."""
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

    worker.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    from imgdist.local_worker import WorkerEngine

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
