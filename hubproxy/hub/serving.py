"""Byte ranges and streamed bodies for ``/resolve``.

One small ASGI response class serves every file body: from the store, from a fill in
progress, or straight from the upstream. It sends headers first (HEAD stops there, with the
same headers as GET), stops reading when the client goes away, and cuts the connection if
its source fails, so a client never takes a short or wrong body for a whole one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

from starlette.types import Receive, Scope, Send

from hubproxy.http_protocol import DIRECT_BYTES, EXTENSION, ZeroCopy
from hubproxy.hub.errors import HubError
from hubproxy.store.bodies import LoanedSpan, SocketSpan, Span

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
#: Stands for any position past 19 digits: beyond every file, and never handed to ``int`` (which
#: refuses strings over 4,300 digits).
_HUGE = 1 << 63


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else _HUGE


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Parse a ``Range`` header into ``(start, end_exclusive)``; None means the whole file.

    As clients expect (``docs/protocol.md``, "Resolve: GET and ranges"): the end is clipped to the size,
    a start at or past the size is 416, a malformed or multi-part range is 400.
    """
    if header is None:
        return None
    text = header.strip().replace(" ", "")
    if "," in text:
        raise HubError(400, "InvalidRange", "Multiple byte ranges are not supported")
    m = _RANGE.fullmatch(text)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        raise HubError(400, "InvalidRange", f"Malformed Range header: {header[:100]!r}")
    first, last = m.group(1), m.group(2)
    unsatisfiable = HubError(
        416, "RangeNotSatisfiable", f"Range {header[:100]} not satisfiable for a file of {size} bytes",
        {"Content-Range": f"bytes */{size}"},
    )
    if first == "":
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - suffix), size
    start = _position(first)
    end = size - 1 if last == "" else min(_position(last), size - 1)
    if last != "" and _position(last) < start:
        raise HubError(400, "InvalidRange", f"Range end before start: {header[:100]!r}")
    if start >= size:
        raise unsatisfiable
    return start, end + 1


def byte_answer(header: str | None, total: int) -> tuple[int, int, int, dict[str, str]]:
    """``(start, end, status, headers)`` of a plain byte answer (no file metadata) to a ``Range`` header."""
    rng = parse_range(header, total)
    start, end = (0, total) if rng is None else rng
    headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    if rng is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
    return start, end, 200 if rng is None else 206, headers


class BodyResponse:
    """Headers, then a streamed body (none for HEAD)."""

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        body: AsyncIterator[bytes] | None = None,
        on_done: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.on_done = on_done
        #: Where the bytes come from (for the audit trail): hit, miss, relay, passthrough, redirect.
        self.source: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.source is not None:  # the access log says where a file's bytes came from
            scope.setdefault("state", {})["cache"] = self.source
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        if self.body is None or scope["method"] == "HEAD":
            if self.body is not None:
                await self.body.aclose()  # type: ignore[attr-defined]
            await send({"type": "http.response.body", "body": b""})
            self._report(0, True)
            return
        disconnected = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    return

        length = self.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        zero_copy = scope.get("extensions", {}).get(EXTENSION)
        spans = getattr(self.body, "spans", None)
        if zero_copy is not None and spans is not None and expected is not None:
            await self._send_spans(zero_copy, spans, expected, send)
            return
        watcher = asyncio.create_task(watch())
        sent = 0
        reported = False
        try:
            async for chunk in self.body:
                if disconnected.is_set():
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
                if sent == expected:
                    break  # the client has every byte: record that before anything else is awaited
            else:
                if expected is None:
                    expected = sent
            if sent == expected:
                reported = True
                self._report(sent, True)
                await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            await self.body.aclose()  # type: ignore[attr-defined]
            if not reported:
                self._report(sent, False)

    async def _send_spans(self, zero_copy: ZeroCopy, spans: Callable[[], AsyncIterator[Span]], expected: int,
                          send: Send) -> None:
        """The body straight from its open files or sockets to the client's (``http_protocol.py``), piece by
        piece."""
        sent = 0
        pieces = spans()
        try:
            async for piece in pieces:
                if not sent:  # the first bytes leave now (middleware times the first byte from here)
                    await send({"type": "http.response.body", "body": b"", "more_body": True, DIRECT_BYTES: 0})
                if isinstance(piece, bytes):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                    sent += len(piece)
                    continue
                if isinstance(piece, SocketSpan):
                    if piece.head:
                        await send({"type": "http.response.body", "body": piece.head, "more_body": True})
                        sent += len(piece.head)
                    wanted = piece.count
                    done = await zero_copy.relay(piece.sock, wanted)
                elif isinstance(piece, LoanedSpan):
                    wanted = piece.end - piece.start
                    done = await zero_copy(piece.fd, piece.start, wanted, piece.loans)
                else:
                    fd, start, end = piece
                    wanted = end - start
                    done = await zero_copy(fd, start, wanted)
                sent += done
                await send({"type": "http.response.body", "body": b"", "more_body": True, DIRECT_BYTES: done})
                if done < wanted:
                    break  # the client or the source went away
            if sent == expected:
                self._report(sent, True)
                await send({"type": "http.response.body", "body": b""})
                return
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]
            await self.body.aclose()  # type: ignore[union-attr]
            if sent != expected:
                self._report(sent, False)

    def _report(self, sent: int, complete: bool) -> None:
        if self.on_done is not None:
            self.on_done(sent, complete)
