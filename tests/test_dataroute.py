"""The data route's security, with real ZeroMQ sockets on loopback: a peer without the cluster's
key (or with a wrong one) gets no file and sends nothing that is kept; with CurveZMQ the bytes
on the wire are encrypted (a capture of the loopback traffic shows them only without it)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest
import zmq

from imgdist.dataroute import PROTOCOL, DataClient, DataServer, proof

KEY = b"the-cluster-key-0123456789abcdef"
RUN = b"run-0001"


@pytest.fixture
def server():
    running = DataServer(KEY, RUN, "127.0.0.1")
    try:
        yield running
    finally:
        running.close()


def serve_until(server: DataServer, condition, timeout_s: float = 10.0) -> list:
    """Run the server's loop (as the main does) until `condition(events so far)` holds or
    `timeout_s` passes; the events seen."""
    events: list = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not condition(events):
        events += server.serve(0.05)
    return events


class Peer(threading.Thread):
    """A DataClient in a thread of its own (a worker), recording what it got."""

    def __init__(self, server: DataServer, key: bytes, **options) -> None:
        super().__init__(daemon=True)
        self.args, self.key, self.options = (server.address, RUN, "w1@h"), key, options
        self.outcome: object = None
        self.frames: list[bytes] = []

    def run(self) -> None:
        try:
            client = DataClient(self.args[0], self.key, self.args[1], self.args[2], **self.options)
            client.ask()
            kind, *frames = client.receive(10)
            self.outcome = kind
            self.frames = [frame.bytes for frame in frames]
            client.socket.close(linger=0)
        except Exception as exc:  # noqa: BLE001 - what the peer met is the test's result
            self.outcome = exc


def test_a_worker_with_the_key_is_served(server):
    """The cluster's key answers the challenge: the worker's requests reach the main."""
    peer = Peer(server, KEY)
    peer.start()
    events = serve_until(server, lambda events: events)
    assert [e.kind for e in events] == ["next"]
    assert events[0].worker == "w1@h"
    server.send_none(events[0].peer)
    peer.join(10)
    assert peer.outcome == b"none"
    assert server.refused == 0


def test_a_wrong_key_gets_nothing(server):
    """A peer answering the challenge with another key is refused; nothing of it reaches the main."""
    peer = Peer(server, b"not-the-cluster-key-000000000000")
    peer.start()
    events = serve_until(server, lambda _: not peer.is_alive(), 15)
    assert events == []
    assert isinstance(peer.outcome, ConnectionRefusedError)
    assert "the main refused this worker's data connection: wrong key" in str(peer.outcome)
    assert server.refused == 1


def test_requests_and_results_without_a_proof_are_dropped(server):
    """A peer that skips the handshake, or forges a session token, asks for files and sends a
    'result' with bytes: it is refused each time, and no event (nothing to write) comes out."""
    hostile = zmq.Context.instance().socket(zmq.DEALER)
    hostile.setsockopt(zmq.LINGER, 0)
    hostile.connect(server.address)
    try:
        forged = os.urandom(16)
        hostile.send_multipart([PROTOCOL, b"next", forged])
        hostile.send_multipart([PROTOCOL, b"result", forged, b'{"chunk": 1}', b"evil bytes"])
        hostile.send_multipart([PROTOCOL, b"prove", proof(KEY, RUN, b"never-asked", b"x")])
        hostile.send_multipart([b"not the protocol"])
        events = serve_until(server, lambda _: server.refused >= 4)
        replies = []
        while hostile.poll(500):
            replies.append(hostile.recv_multipart())
    finally:
        hostile.close(linger=0)
    assert events == []
    assert server.refused == 4
    assert all(reply[0] == b"refused" for reply in replies)
    assert all(b"evil" not in frame for reply in replies for frame in reply)


class LoopbackCapture(threading.Thread):
    """Every byte that crosses the loopback interface while it runs (a raw packet socket)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.1)
        self.seen = bytearray()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                self.seen += self.sock.recv(1 << 16)

    def stop(self) -> bytes:
        self.stopping.set()
        self.join(5)
        self.sock.close()
        return bytes(self.seen)


@pytest.mark.skipif(os.geteuid() != 0, reason="capturing loopback traffic needs root")
@pytest.mark.parametrize("curve", [False, True])
def test_curve_encrypts_the_route(curve):
    """The same chunk sent with and without CurveZMQ: its bytes are on the wire in clear
    without it, and nowhere with it."""
    marker = b"IMGDIST-MARKER-" + os.urandom(8).hex().encode()
    server = DataServer(KEY, RUN, "127.0.0.1", curve=curve)
    capture = LoopbackCapture()
    capture.start()
    try:
        peer = Peer(server, KEY, **({"server_public_key": server.public_key} if curve else {}))
        peer.start()
        (event,) = serve_until(server, lambda events: events)
        assert event.kind == "next"
        server.send_chunk(event.peer, {"chunk": 1}, [marker * 100])
        peer.join(10)
    finally:
        wire = capture.stop()
        server.close()
    assert peer.outcome == b"chunk"
    assert peer.frames[1] == marker * 100  # delivered either way
    assert (marker in wire) is (not curve)


def test_curve_refuses_a_client_without_the_servers_key():
    """With CurveZMQ, a client that does not know the server's public key cannot even say hello."""
    server = DataServer(KEY, RUN, "127.0.0.1", curve=True)
    try:
        peer = Peer(server, KEY)  # no server key: a plain connection to a Curve server
        peer.start()
        events = serve_until(server, lambda _: not peer.is_alive(), 15)
    finally:
        server.close()
    assert events == []
    assert isinstance(peer.outcome, TimeoutError)
