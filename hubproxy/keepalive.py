"""HTTP/1.0 keep-alive: the connection stays open when an HTTP/1.0 client asks for it.

uvicorn closes every HTTP/1.0 connection after one answer, even when the request says
``Connection: keep-alive``. Clients and tools that speak HTTP/1.0 that way (ApacheBench, some health
checkers and proxies) then pay a new TCP connection per request, which costs more than answering a
cached HEAD. hubproxy's protocol keeps such a connection open and says so in the answer
(``Connection: keep-alive``, as HTTP/1.0 requires); hubproxy's answers carry a Content-Length, so the
client knows where each one ends.
"""

from __future__ import annotations

from typing import Any

from hubproxy.limits import BoundedHttpToolsProtocol


class HubproxyHttpProtocol(BoundedHttpToolsProtocol):
    """uvicorn's httptools protocol with bounded headers (``limits.py``) and HTTP/1.0 keep-alive."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._asks_keep_alive = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._asks_keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if name.lower() == b"connection" and b"keep-alive" in value.lower():
            self._asks_keep_alive = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        http10 = self.parser.get_http_version() == "1.0"
        if self._asks_keep_alive and http10 and cycle is not None and not cycle.keep_alive:
            cycle.keep_alive = True
            cycle.default_headers = [*cycle.default_headers, (b"connection", b"keep-alive")]
