"""The floor under the HEAD row: an ASGI app that answers every request at once with a HEAD-sized answer and
does nothing else. Run by ``benchmarks/run.py`` under the same uvicorn setup as hubproxy (uvloop, httptools,
the same number of workers, no access log), it shows what the server hubproxy runs in can do on the machine."""

from __future__ import annotations

from typing import Any

HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"23"), (b"etag", b'"' + b"0" * 40 + b'"'),
           (b"x-repo-commit", b"0" * 40), (b"accept-ranges", b"bytes")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401 - the ASGI callables
    """Answer 200 with fixed headers and no body."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b""})
