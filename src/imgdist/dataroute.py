"""The data route: image bytes between the main and each worker over a ZeroMQ connection of their
own, so the controller carries only names and small messages.

The main binds a ROUTER socket (`DataServer`); each worker's task connects a DEALER
(`DataClient`), proves it holds the cluster's key, then asks for chunks of images ("next") and
sends back results ("result"). Everything the main does per image is reading the input's bytes
from disk and writing the output's bytes to disk; no image is decoded or encoded on the main,
unless it chose the `bits` format for a worker whose link is the bottleneck (see the schedule).

Security, like the controller's: a peer gets nothing and can send nothing that gets written
until it answers a fresh challenge with an HMAC made with the cluster's key, and then only on
the connection it proved itself on, with the session token it was given. With CurveZMQ
(`--curve`) the route is also encrypted and authenticated byte by byte; without it, as for the
controller without it, traffic is not encrypted, and an attacker able to rewrite packets in
flight needs `--curve` to be kept out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass

import zmq

PROTOCOL = b"imgdist-data-1"
HANDSHAKE_TIMEOUT_S = 10.0


def route_key(cluster_key: bytes) -> bytes:
    """The data route's own key, derived from the cluster's (never sent anywhere)."""
    return hmac.new(cluster_key, b"imgdist data route", hashlib.sha256).digest()


def proof(cluster_key: bytes, run_id: bytes, nonce: bytes, worker: bytes) -> bytes:
    """The answer to a challenge: who is asking, for which run, keyed with the cluster's key."""
    message = b"|".join((PROTOCOL, run_id, nonce, worker))
    return hmac.new(route_key(cluster_key), message, hashlib.sha256).digest()


@dataclass
class Event:
    """Something a worker asked of, or sent to, the main."""

    kind: str  # "next", "result" or "bye"
    peer: bytes  # the connection it came on (ZeroMQ's routing id)
    worker: str
    header: dict
    frames: list  # the result's output payloads (zmq.Frame), in header order


class DataServer:
    """The main's end: bound on `ip` (a port of `ports` when given), CurveZMQ with `curve`."""

    def __init__(
        self,
        cluster_key: bytes,
        run_id: bytes,
        ip: str,
        *,
        ports: tuple[int, int] | None = None,
        curve: bool = False,
    ) -> None:
        self.cluster_key = cluster_key
        self.run_id = run_id
        self.socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a gone peer is an error, not a hang
        self.public_key = b""
        if curve:
            self.public_key, secret = zmq.curve_keypair()
            self.socket.curve_server = True
            self.socket.curve_secretkey = secret
            self.socket.curve_publickey = self.public_key
        host = ip if ip not in ("", "*", "0.0.0.0") else "*"
        self.port = _bind(self.socket, f"tcp://{host}", ports)
        self.address = f"tcp://{ip}:{self.port}"
        self.sessions: dict[bytes, tuple[bytes, str]] = {}  # peer -> (token, worker)
        self.challenges: dict[bytes, tuple[bytes, bytes]] = {}  # peer -> (nonce, worker)
        self.refused = 0  # messages from peers that had not proved themselves
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)

    def serve(self, timeout_s: float) -> list[Event]:
        """Answer handshakes and return the events of proved workers that arrived within
        `timeout_s` (at once when there are some)."""
        events: list[Event] = []
        wait_ms = int(timeout_s * 1000)
        while self.poller.poll(wait_ms):
            wait_ms = 0
            peer, *frames = self.socket.recv_multipart(copy=False)
            event = self._handle(peer.bytes, frames)
            if event is not None:
                events.append(event)
        return events

    def _handle(self, peer: bytes, frames: list) -> Event | None:
        if len(frames) < 2 or frames[0].bytes != PROTOCOL:
            self.refused += 1
            return None
        kind = frames[1].bytes
        if kind == b"hello" and len(frames) == 3:
            nonce = os.urandom(16)
            self.challenges[peer] = (nonce, frames[2].bytes)
            self._send(peer, [b"challenge", nonce])
            return None
        if kind == b"prove" and len(frames) == 3 and peer in self.challenges:
            nonce, worker = self.challenges.pop(peer)
            if hmac.compare_digest(
                frames[2].bytes, proof(self.cluster_key, self.run_id, nonce, worker)
            ):
                token = os.urandom(16)
                self.sessions[peer] = (token, worker.decode(errors="replace"))
                self._send(peer, [b"welcome", token])
            else:
                self.refused += 1
                self._send(peer, [b"refused", b"wrong key"])
            return None
        session = self.sessions.get(peer)
        if (
            session is None
            or len(frames) < 3
            or not hmac.compare_digest(frames[2].bytes, session[0])
        ):
            self.refused += 1  # nothing is served to it, and nothing it sent is kept
            self._send(peer, [b"refused", b"not proved"])
            return None
        header = json.loads(frames[3].bytes) if len(frames) > 3 else {}
        return Event(kind.decode(), peer, session[1], header, frames[4:])

    def send_chunk(self, peer: bytes, header: dict, payloads: list[bytes]) -> bool:
        """Send a chunk's header and input bytes (zero-copy); False if the peer is gone."""
        return self._send(peer, [b"chunk", json.dumps(header).encode(), *payloads])

    def send_none(self, peer: bytes) -> bool:
        """Tell a worker there is no more work for it."""
        return self._send(peer, [b"none"])

    def send_bye(self, peer: bytes) -> bool:
        """Confirm a worker's goodbye: everything it sent before was handled."""
        return self._send(peer, [b"bye"])

    def _send(self, peer: bytes, frames: list) -> bool:
        try:
            _send_parts(self.socket, [peer, *frames])
        except zmq.ZMQError:  # the peer disconnected
            return False
        return True

    def close(self) -> None:
        """Stop serving; the port is free again."""
        self.poller.unregister(self.socket)
        self.socket.close(linger=0)


_MORE = int(zmq.SNDMORE)  # a plain int: pyzmq's flag enum costs ~2 us per part to combine


def _send_parts(socket: zmq.Socket, parts: list) -> None:
    """`send_multipart(parts, copy=False)` without its per-part checks and flag arithmetic:
    the main sends a part per image."""
    send = socket.send
    for part in parts[:-1]:
        send(part, _MORE, copy=False)
    send(parts[-1], 0, copy=False)


def _bind(socket: zmq.Socket, address: str, ports: tuple[int, int] | None) -> int:
    if ports is None:
        return socket.bind_to_random_port(address)
    for port in range(ports[1], ports[0] - 1, -1):  # from the top: the controller took the bottom
        try:
            socket.bind(f"{address}:{port}")
        except zmq.ZMQError:
            continue
        return port
    msg = f"no free port in {ports[0]}-{ports[1]} for the data route; give a wider range."
    raise OSError(msg)


class DataClient:
    """A worker's end: connects, proves itself, then asks for chunks and sends results."""

    def __init__(
        self,
        address: str,
        cluster_key: bytes,
        run_id: bytes,
        worker: str,
        *,
        server_public_key: bytes = b"",
        send_queue: int = 2,
    ) -> None:
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 10_000)  # results still queued get out on close
        self.socket.setsockopt(zmq.SNDHWM, send_queue)  # a full link makes send() wait: measured
        if server_public_key:
            self.socket.curve_serverkey = server_public_key
            self.socket.curve_publickey, self.socket.curve_secretkey = zmq.curve_keypair()
        self.socket.connect(address)
        self.token = self._prove(cluster_key, run_id, worker.encode())

    def _prove(self, cluster_key: bytes, run_id: bytes, worker: bytes) -> bytes:
        self.socket.send_multipart([PROTOCOL, b"hello", worker])
        kind, nonce = self.receive(HANDSHAKE_TIMEOUT_S)
        self.socket.send_multipart(
            [PROTOCOL, b"prove", proof(cluster_key, run_id, nonce.bytes, worker)]
        )
        kind, token = self.receive(HANDSHAKE_TIMEOUT_S)
        if kind != b"welcome":
            msg = f"the main refused this worker's data connection: {token.bytes.decode()}"
            raise ConnectionRefusedError(msg)
        return token.bytes

    def ask(self) -> None:
        """Ask for the next chunk."""
        self.socket.send_multipart([PROTOCOL, b"next", self.token])

    def receive(self, timeout_s: float) -> tuple[bytes, ...]:
        """The next message from the main: (kind, frame, ...); TimeoutError after `timeout_s`."""
        if not self.socket.poll(int(timeout_s * 1000)):
            msg = f"the main sent nothing on the data route for {timeout_s:g} s"
            raise TimeoutError(msg)
        kind, *frames = self.socket.recv_multipart(copy=False)
        return (kind.bytes, *frames)

    def send_result(self, header: dict, payloads: list) -> None:
        """Send a chunk's results (zero-copy)."""
        _send_parts(
            self.socket, [PROTOCOL, b"result", self.token, json.dumps(header).encode(), *payloads]
        )

    def close(self, timeout_s: float = 30.0) -> None:
        """Say goodbye and wait until the main has handled everything sent before."""
        try:
            self.socket.send_multipart([PROTOCOL, b"bye", self.token])
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self.receive(deadline - time.monotonic())[0] == b"bye":
                    break
        finally:
            self.socket.close(linger=1000)
