"""Relays a test puts between hubproxy and what it talks to: a TCP relay it can cut and restore (an outage),
and an HTTP relay in front of an S3 server that refuses writes or cuts reads."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.helpers import forward, free_port, serve_in_thread


class TcpForwarder:
    """A loopback TCP relay to ``target`` that a test can cut (an outage) and restore on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class S3FaultRelay:
    """An HTTP relay in front of an S3 server that can refuse writes (a full or over-quota bucket).

    Reads (GET, HEAD) pass; requests for which ``refuse(method, path)`` is true get the 507 an
    S3-compatible server sends when it is out of space, so uploads fail while reads keep working.
    With ``cut_gets`` set, every GET answer is cut after that many bytes of its body; with ``cut_once`` set to
    ``(offset, n)``, the next GET whose range starts at ``offset`` is cut after ``n`` bytes; with
    ``bytes_per_second``, each GET answer's body is sent no faster (a bucket that holds each connection back); and
    requests for which ``delayed(method, path)`` is true are held ``delay`` seconds (or until ``release`` is set)
    before they are passed on (a slow or throttling bucket).
    """

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.refuse: Callable[[str, str], bool] = lambda method, path: False
        self.cut_gets: int | None = None
        self.cut_once: tuple[int, int] | None = None
        self.bytes_per_second: float | None = None
        self.delayed: Callable[[str, str], bool] = lambda method, path: False
        self.delay = 0.0
        self.release = threading.Event()
        #: (method, path, headers with lower-case names) of every request relayed or refused (the first
        #: ``seen_limit`` of them if it is set).
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.seen_limit: int | None = None
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if relay.seen_limit is None or len(relay.seen) < relay.seen_limit:
                    relay.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                if relay.refuse(self.command, self.path):
                    msg = b"<Error><Code>InsufficientStorage</Code><Message>bucket full</Message></Error>"
                    self.send_response(507)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                if relay.delayed(self.command, self.path):
                    relay.release.wait(relay.delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = self.headers.get("Host", "")
                cut = relay.cut_gets if self.command == "GET" else None
                once = relay.cut_once
                if self.command == "GET" and once and self.headers.get("Range", "").startswith(f"bytes={once[0]}-"):
                    relay.cut_once, cut = None, once[1]
                forward(self, relay.target.hostname or "", relay.target.port or 80, self.path, body, headers,
                        cut, relay.bytes_per_second if self.command == "GET" else None)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay  # noqa: N815

        self.server, self.url = serve_in_thread(Handler)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":  # a relay of its own process, for the benchmarks (``benchmarks/s3.py``)
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(description="An S3FaultRelay in front of an S3 server; writes its URL to a file.")
    ap.add_argument("--target", required=True)
    ap.add_argument("--bytes-per-second", type=float, default=None, help="each GET answer's body at most this fast")
    ap.add_argument("--url-file", required=True)
    args = ap.parse_args()
    relay = S3FaultRelay(args.target)
    relay.bytes_per_second = args.bytes_per_second
    relay.seen_limit = 0
    Path(args.url_file).write_text(relay.url)
    threading.Event().wait()
