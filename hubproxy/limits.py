"""Bounds on what a client may send: request headers and request bodies.

Without them one request can take the process's memory: uvicorn's httptools parser keeps any
header however long, and Starlette's ``Request.body()`` reads any body whole.

- Headers: ``BoundedHttpToolsProtocol`` counts the bytes of a request up to the end of its
  headers and answers ``431`` and closes the connection past ``MAX_HEADER_BYTES``.
- Bodies: ``read_body`` reads at most a route's limit (checking ``Content-Length`` first) and
  raises ``BodyTooLarge`` past it, before holding more than the limit in memory. Large bodies go to disk
  instead (``receive_into``, ``spool_body``): written in batches in a worker thread while the next batch
  arrives, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Request line plus headers, in bytes (nginx's default large_client_header_buffers is 4 x 8k; Hub
#: clients send well under 2k).
MAX_HEADER_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """A request body is larger than its route accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the {limit} bytes this route accepts")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or ``BodyTooLarge`` once it passes ``limit`` bytes (never holding more)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        parts.append(chunk)
    return b"".join(parts)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing requests whose line and headers exceed ``MAX_HEADER_BYTES``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True
        self._header_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)  # one read is bounded by the event loop's buffer size
        super().data_received(data)
        if self._in_headers and self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            self._refuse()

    def _refuse(self) -> None:
        message = b"Request header fields too large"
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
                             b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n"
                             + message)
        self.transport.close()


WRITE_BATCH = 8 * 1024 * 1024


async def receive_into(request: Request, write: Callable[[bytes], None], limit: int | None = None) -> int:
    """The request body into ``write`` (run in a worker thread, in batches): the next batch is received while
    the previous one is written, so the network and the disk work at the same time. Returns the bytes received;
    ``BodyTooLarge`` past ``limit``."""
    declared = request.headers.get("content-length")
    if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    writing: asyncio.Future[None] | None = None
    pending: list[bytes] = []
    held = size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if limit is not None and size > limit:
                raise BodyTooLarge(limit)
            pending.append(chunk)
            held += len(chunk)
            if held >= WRITE_BATCH:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(asyncio.to_thread(write, b"".join(pending)))
                pending, held = [], 0
    finally:
        if writing is not None:
            await writing
    if pending:
        await asyncio.to_thread(write, b"".join(pending))
    return size


async def spool_body(request: Request, directory: str, prefix: str, limit: int) -> str:
    """The request body in a new file under ``directory`` (never whole in memory); the caller removes it."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as out:
            await receive_into(request, out.write, limit)
    except BaseException:
        os.unlink(path)
        raise
    return path
