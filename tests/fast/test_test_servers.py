"""The test suite's own HTTP servers: a client hanging up is not printed as an error, a real error still is."""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.fakehub.server import QuietHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        raise ValueError("a handler's own error")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _printed(server_class: type[ThreadingHTTPServer], reset: bool) -> str:
    """What ``server_class`` prints while a client resets its connection mid request line (``reset``) or sends a
    request whose handler raises."""
    server = server_class(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            sock = socket.create_connection(server.server_address)
            if reset:
                sock.sendall(b"GET / HT")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            else:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                sock.recv(100)
            sock.close()
            time.sleep(0.3)
    finally:
        server.shutdown()
        server.server_close()
    return err.getvalue()


@pytest.mark.parametrize("server_class", [ThreadingHTTPServer, QuietHTTPServer], ids=["plain", "quiet"])
def test_a_client_that_hangs_up_is_printed_only_by_a_plain_server(server_class: type[ThreadingHTTPServer]) -> None:
    printed = _printed(server_class, reset=True)
    assert ("ConnectionResetError" in printed) is (server_class is ThreadingHTTPServer)


def test_a_handler_error_is_still_printed_by_the_quiet_server() -> None:
    assert "a handler's own error" in _printed(QuietHTTPServer, reset=False)
