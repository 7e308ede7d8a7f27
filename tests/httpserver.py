"""A real HTTP server on loopback for download tests, with routes for each failure."""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class PortraitServer(ThreadingHTTPServer):
    """Serves `/portrait.jpg` and routes that fail in each way a download can."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, portrait: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.portrait = portrait
        self.thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def handle_error(self, request, client_address) -> None:
        """A client that hung up mid-answer (a download test that gave up) is not an error of
        the server: only other errors are printed, as the standard library does."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server: PortraitServer

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, content_length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header(
            "Content-Length", str(len(body) if content_length is None else content_length)
        )
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/portrait.jpg":
            self._send(200, self.server.portrait)
        elif self.path == "/missing.jpg":
            self._send(404, b"not found")
        elif self.path == "/broken.jpg":
            self._send(500, b"server error")
        elif self.path == "/text.jpg":
            self._send(200, b"<html>this is not an image</html>")
        elif self.path == "/slow.jpg":
            time.sleep(2.0)
            self._send(200, self.server.portrait)
        elif self.path == "/huge-declared.jpg":
            self._send(200, b"", content_length=10**9)
        elif self.path == "/huge-streamed.jpg":
            # no Content-Length: the limit must hold while reading the body
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\xff" * 65536)
        else:
            self._send(404, b"")
