"""A plain-HTTP GET whose body stays on its socket, so that it can be relayed to a client without Python objects.

Relaying a stored object from an S3-compatible bucket through Python's HTTP stack (botocore's reads into
bytes objects, then uvicorn's send) costs hubproxy as much CPU as the bucket spends serving it. On a plain
``http://`` endpoint the answer's body can instead go from the bucket's socket to the client's with
``read(2)`` and ``write(2)`` through one buffer (``http_protocol.py``): here only the request line and the
headers are handled in Python. A body is either sent as one ``SocketSpan`` (``spans``, see ``bodies.py``) or
iterated, read ahead of its consumer in a worker thread (``readahead.py``), for every other use.

Deliberately small: one request per connection (``Connection: close``), answers with a
``Content-Length`` only. Anything else (a chunked answer, a redirect, an error) is reported to the
caller, which then makes the request its usual way and gets the usual errors.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from urllib.parse import urlsplit

from hubproxy.store.bodies import SocketSpan
from hubproxy.store.readahead import read_ahead

#: Bytes of status line and headers accepted before the answer is given up as malformed.
MAX_HEAD_BYTES = 64 * 1024


class RawAnswer:
    """The status and headers (names lower-cased) of an answer, and its socket if the body is still to come."""

    def __init__(self, status: int, headers: dict[str, str], sock: socket.socket, head: bytes) -> None:
        self.status = status
        self.headers = headers
        self.sock = sock
        self.head = head  # bytes of the body that arrived with the headers

    def body(self, length: int, pool: Executor | None = None) -> SocketBody:
        """The body (``length`` bytes); it owns the socket from now on. Read as an iterator, it is read in threads
        of ``pool`` (the default pool if None)."""
        return SocketBody(self.sock, self.head, length, pool)

    def close(self) -> None:
        self.sock.close()


def raw_get(url: str, headers: dict[str, str], timeout: float) -> RawAnswer:
    """(Blocking.) Send ``GET url`` on a new connection and read the answer's head. ``url`` must be ``http://``.
    Raises ``OSError`` if the connection fails or the answer is not HTTP/1.x."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not a plain http URL: {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        received = bytearray()
        while (end := received.find(b"\r\n\r\n")) < 0:
            if len(received) > MAX_HEAD_BYTES:
                raise OSError("the answer's headers are too long")
            data = sock.recv(MAX_HEAD_BYTES)
            if not data:
                raise OSError("the connection closed before the answer's headers ended")
            received += data
        status, fields = _parse_head(bytes(received[:end]))
        return RawAnswer(status, fields, sock, bytes(received[end + 4:]))
    except BaseException:
        sock.close()
        raise


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise OSError(f"not an HTTP/1.x answer: {status_line[:100]!r}")
    fields: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return int(code), fields


class SocketBody:
    """``length`` bytes of an answer's body: ``head`` already read, the rest still on ``sock``."""

    def __init__(self, sock: socket.socket, head: bytes, length: int, pool: Executor | None = None) -> None:
        self._sock: socket.socket | None = sock
        self._head = head
        self.length = length
        self._pool = pool
        self._iterator: AsyncIterator[bytes] | None = None
        self._spanned = False

    def take(self, size: int) -> bytes:
        """(Blocking.) The body's next ``size`` bytes (fewer only at its end), read before it is relayed or iterated
        (which then go on from the byte after them)."""
        if self._sock is None or self._iterator is not None or self._spanned:
            raise RuntimeError("the body is being read already")
        reader = _SocketReader(self._sock, self._head, self.length)
        taken = bytearray()
        while len(taken) < size and (data := reader.read(size - len(taken))):
            taken += data
        self._head, self.length = reader.head, self.length - len(taken)
        return bytes(taken)

    async def spans(self) -> AsyncIterator[SocketSpan]:
        """The whole body as one piece for a sender that relays it (nothing once it is being iterated); the
        body still closes the socket, and can no longer be iterated."""
        if self._iterator is None and self._sock is not None and not self._spanned:
            self._spanned = True
            yield SocketSpan(self._head[:self.length], self._sock, max(0, self.length - len(self._head)))

    def __aiter__(self) -> SocketBody:
        return self

    async def __anext__(self) -> bytes:
        if self._iterator is None:
            if self._spanned:
                raise RuntimeError("the body was handed over as its socket")
            if self._sock is None:
                raise StopAsyncIteration
            self._iterator = read_ahead(_SocketReader(self._sock, self._head, self.length), pool=self._pool)
        return await self._iterator.__anext__()

    def close_now(self) -> None:
        """Close the socket (a body read with ``take`` alone is closed so, from its thread)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def aclose(self) -> None:
        if self._iterator is not None:
            await self._iterator.aclose()  # type: ignore[attr-defined]
        self.close_now()


class _SocketReader:
    """A blocking ``read(n)`` over a body's bytes: the head, then the socket, exactly ``length`` in all."""

    def __init__(self, sock: socket.socket, head: bytes, length: int) -> None:
        self._sock = sock
        self.head = head[:length]
        self._left = length

    def read(self, size: int) -> bytes:
        if self.head:
            data, self.head = self.head[:size], self.head[size:]
            self._left -= len(data)
            return data
        want = min(size, self._left)
        if want <= 0:
            return b""
        buf = bytearray(want)
        got = 0
        with memoryview(buf) as view:
            while got < want:
                n = self._sock.recv_into(view[got:])
                if not n:
                    raise OSError(f"the connection ended {self._left - got} bytes before the body's end")
                got += n
        self._left -= got
        return bytes(buf) if got == want else bytes(buf[:got])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
