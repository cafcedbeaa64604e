"""A forward proxy on loopback, as corporate networks put between hubproxy and the Hub.

It tunnels ``CONNECT host:port`` (HTTPS) and relays absolute-form requests (plain HTTP), and records
every request it was asked to make, so a test can tell what went through it.
"""

from __future__ import annotations

import select
import socket
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.helpers import forward, serve_in_thread


class ForwardProxy:
    def __init__(self) -> None:
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

            def do_CONNECT(self) -> None:  # noqa: N802
                proxy.seen.append(f"CONNECT {self.path}")
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host, int(port)))
                self.send_response(200, "Connection established")
                self.end_headers()
                sockets = [self.connection, upstream]
                try:
                    while True:
                        ready, _, _ = select.select(sockets, [], [], 30)
                        if not ready:
                            return
                        for s in ready:
                            data = s.recv(65536)
                            if not data:
                                return
                            (upstream if s is self.connection else self.connection).sendall(data)
                except OSError:
                    return
                finally:
                    upstream.close()
                    self.close_connection = True

            def _relay(self) -> None:
                proxy.seen.append(f"{self.command} {self.path}")
                target = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection",)}
                forward(self, target.hostname or "", target.port or 80,
                        target.path + (f"?{target.query}" if target.query else ""), body, headers)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _relay  # noqa: N815

        self.server, self.url = serve_in_thread(Handler)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
