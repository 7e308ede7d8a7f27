"""Connection files and ports: what workers need to join a controller, and which ports it takes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from imgdist.errors import ConnectionFileError, ParameterError

# Ports a controller listens on (ipyparallel 9: registration, 2 x control, mux, task, iopub and
# broadcast, hb_ping, hb_pong, notification, and its schedulers' internal ones): "Used 18 random
# ports" in its log.
CONTROLLER_PORTS = 18

DATA_ROUTE_PORTS = 1  # the direct transport's own connection, bound per run

PORTS_NEEDED = CONTROLLER_PORTS + DATA_ROUTE_PORTS


def free_ports(address: str, ports: tuple[int, int]) -> list[int]:
    """The first CONTROLLER_PORTS ports of the range (LO, HI) that nothing listens on here (at
    least PORTS_NEEDED must be free: the data route takes one more, from the top), or a
    ParameterError naming the busy ones."""
    free, busy = [], []
    for port in range(ports[0], ports[1] + 1):
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds
            try:
                probe.bind((address if address not in ("*", "") else "0.0.0.0", port))
            except OSError:
                busy.append(port)
                continue
        free.append(port)
        if len(free) == PORTS_NEEDED:
            return free[:CONTROLLER_PORTS]
    msg = (
        f"ports {ports[0]}-{ports[1]} have {len(free)} free ports on {address}, but imgdist needs "
        f"{PORTS_NEEDED} ({CONTROLLER_PORTS} for the controller, {DATA_ROUTE_PORTS} for the data route; in use: {', '.join(map(str, busy[:10]))}"
        f"{' ...' if len(busy) > 10 else ''}); give a wider or another range."
    )
    raise ParameterError(msg)


PORT_KEYS = ("registration", "control", "mux", "task", "iopub", "hb_ping", "hb_pong", "broadcast")


def connection_ports(path: Path | None) -> list[int]:
    """The TCP ports named in an ipyparallel connection file."""
    if path is None:
        return []
    info = json.loads(Path(path).read_text())
    values = [info.get(key) for key in (*PORT_KEYS, "notification")]
    flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return sorted({int(v) for v in flat if v})


def check_connection_file(path: str | Path) -> Path:
    """`path` as an existing, readable ipyparallel connection file, or a clear error."""
    path = Path(path).expanduser()
    if not path.is_file():
        msg = f"Connection file {path} does not exist; copy it from the controller machine (see the README)."
        raise ConnectionFileError(msg)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        msg = f"Connection file {path} is not readable JSON ({exc}); copy it again from the controller machine."
        raise ConnectionFileError(msg) from None
    if not isinstance(info, dict) or "key" not in info:
        msg = f"{path} is not an ipyparallel connection file (no 'key'); use ipcontroller-*-client.json or -engine.json."
        raise ConnectionFileError(msg)
    return path


def connection_file(connection: str | Path, work_dir: Path) -> Path:
    """The engine connection file: `connection` itself, or its pasted JSON saved privately."""
    text = str(connection).strip()
    if text.startswith("{"):
        try:
            info = json.loads(text)
        except ValueError as exc:
            msg = f"the pasted connection info is not valid JSON ({exc}); paste the whole ipcontroller-*-engine.json."
            raise ConnectionFileError(msg) from None
        path = Path(work_dir) / "ipcontroller-engine.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
    else:
        path = Path(text).expanduser()
        if not text or not path.is_file():
            msg = f"connection file {text!r} does not exist; copy ipcontroller-*-engine.json from the main machine."
            raise ConnectionFileError(msg)
        try:
            info = json.loads(path.read_text())
        except ValueError as exc:
            msg = f"connection file {path} is not valid JSON ({exc}); copy it again from the main machine."
            raise ConnectionFileError(msg) from None
    if not isinstance(info, dict) or "key" not in info or "registration" not in info:
        msg = "the connection info has no 'key' or 'registration'; use the controller's ipcontroller-*-engine.json."
        raise ConnectionFileError(msg)
    return path


def parse_ports(text: str) -> tuple[int, int] | None:
    """'LO-HI' as (LO, HI), '' as None; a ParameterError for anything else."""
    if not str(text).strip():
        return None
    low, sep, high = str(text).strip().partition("-")
    if not (sep and low.isdigit() and high.isdigit() and 1024 <= int(low) <= int(high) <= 65535):
        msg = (
            f"ports {text!r} is not a range LO-HI of TCP ports between 1024 and 65535; "
            f"give e.g. 50000-50099 (at least {PORTS_NEEDED} ports)."
        )
        raise ParameterError(msg)
    if int(high) - int(low) + 1 < PORTS_NEEDED:
        msg = (
            f"ports {text!r} holds {int(high) - int(low) + 1} ports, but imgdist needs "
            f"{PORTS_NEEDED} ({CONTROLLER_PORTS} for the controller, {DATA_ROUTE_PORTS} for the "
            f"data route); give a wider range, e.g. {low}-{int(low) + PORTS_NEEDED - 1}."
        )
        raise ParameterError(msg)
    return int(low), int(high)


def join_instructions(engine_file: Path | None) -> str:
    """How a worker machine joins: the file to copy (never its key), the command, the ports."""
    if engine_file is None:
        return (
            "This cluster's engine connection file is not on this machine; ask whoever started it."
        )
    info = json.loads(Path(engine_file).read_text())
    address = str(info.get("interface", "")).removeprefix("tcp://")
    ports = connection_ports(engine_file)
    loopback = address.startswith("127.") or address in ("localhost", "::1")
    lines = [
        f"Engine connection file: {engine_file}",
        f"The controller listens on {address}, TCP ports {', '.join(map(str, ports))}"
        + (
            " (loopback only: start it with another address for other machines)."
            if loopback
            else "."
        ),
        (
            "Each run also opens one port there for its data route (the highest free port of "
            "--ports, or a random one): workers connect to it too."
        ),
        "On each worker machine, copy the file (it holds the cluster's key: keep it private) and start a worker:",
        f"  scp {socket.gethostname()}:{engine_file} .",
        f"  imgdist worker --connection {Path(engine_file).name} --name worker1",
    ]
    return "\n".join(lines)
