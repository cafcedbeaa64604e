"""Ranged GETs read by worker threads: the receive loop of a parallel fill, off the event loop.

Receiving through aiohttp costs the event loop's thread 0.6-1.1 s of CPU per GiB on loopback
(measured with eight concurrent ranges), and TLS is decrypted there too: a single core for every
stream of every fill. Here each fill connection is a blocking ``http.client`` connection used by one
worker thread at a time; ``readinto`` moves the body straight from the socket into the fill's batch
buffer with the GIL released (0.2-0.25 s per GiB in the same measurement).

The parts after the probe come this way, and the probe too where the CDN URL is known already (the upstream's
HEAD of the file redirected there); otherwise the probe goes through ``UpstreamClient``, which follows the
redirects and learns the final URL and whether the upstream serves ranges. A connection here never follows a
redirect and never goes through a proxy: when ``HTTPS_PROXY``/``HTTP_PROXY`` apply to the URL (``direct.route``
says None), or the answer is neither the asked range nor (for a probe from byte 0) the whole file, the fill uses
``UpstreamClient`` instead.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from hubproxy.direct import route

#: Bytes per ``readinto`` call: small enough that a slow stream still hands over bytes often.
READ_SLICE = 256 * 1024


class RangeFailed(Exception):
    """The connection broke or timed out; the part may resume with a new request."""

    def __init__(self, detail: str, timeout: bool = False) -> None:
        super().__init__(detail)
        self.timeout = timeout

    @classmethod
    def of(cls, exc: BaseException) -> RangeFailed:
        return cls(f"{type(exc).__name__}: {exc}", timeout=isinstance(exc, TimeoutError))


class RangeConnection:
    """One keep-alive connection for ranged GETs, reconnecting when the origin changes or after a failure.

    Every method blocks: call them from a worker thread, one at a time; ``close`` may also come from another
    thread, to stop a read or a request for good.
    """

    def __init__(self, ssl_context: ssl.SSLContext, timeout: float) -> None:
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._origin: tuple[str, str] | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._error: RangeFailed | None = None
        #: Guards the two fields below between the thread using the connection and one closing it.
        self._guard = threading.Lock()
        self._inside = 0  # calls (request, read_into) in progress
        self._doomed: list[http.client.HTTPConnection] = []  # closed while a call was inside: freed as it leaves
        self._closed = False  # ``close`` was called: no connection is made any more

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """Around each blocking call: connections closed meanwhile are freed once no call is inside."""
        with self._guard:
            self._inside += 1
        try:
            yield
        finally:
            with self._guard:
                self._inside -= 1
                doomed, self._doomed = (self._doomed, []) if not self._inside else ([], self._doomed)
            for conn in doomed:
                conn.close()

    def request(self, url: str, start: int, end: int, headers: dict[str, str], whole: bool = False
                ) -> tuple[int, str]:
        """Send ``GET url`` for bytes ``[start, end]`` (inclusive); the status and Content-Range of the answer.
        A 206 (or, if ``whole``, a 200: the whole file, Range ignored) is then read with ``read_into``; any other
        answer is discarded here."""
        with self._call():
            return self._request(url, start, end, headers, whole)

    def _request(self, url: str, start: int, end: int, headers: dict[str, str], whole: bool) -> tuple[int, str]:
        origin = route(url)
        if origin is None:
            raise ValueError(f"{url} cannot be fetched on a direct connection")
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._error = None
        try:
            conn = self._connect(origin)
            conn.request("GET", target or "/", headers={**headers, "Range": f"bytes={start}-{end}"})
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.reset()
            raise RangeFailed.of(exc) from None
        status, content_range = resp.status, resp.headers.get("Content-Range", "")
        if status == 206 or (whole and status == 200):
            self._resp = resp
        else:
            self.reset()  # an error or a whole-file answer: not worth reading to keep the connection
        return status, content_range

    def read_into(self, buf: bytearray | memoryview, limit: int, max_wait: float) -> int:
        """Read up to ``limit`` bytes of the current answer into ``buf``; returns early (with at least one byte)
        once ``max_wait`` seconds have passed (at 0, with the bytes the first read finds), and 0 once the answer
        was read to its end. A drop raises ``RangeFailed``, after the bytes that arrived before it were returned."""
        with self._call():
            return self._read_into(buf, limit, max_wait)

    def _read_into(self, buf: bytearray | memoryview, limit: int, max_wait: float) -> int:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        resp = self._resp
        if resp is None:
            return 0
        got = 0
        started = time.monotonic()
        with memoryview(buf) as view:
            try:
                while got < limit:
                    if max_wait <= 0:  # what is there now (``readinto`` waits for the whole slice)
                        data = resp.read1(min(limit - got, READ_SLICE))
                        n = len(data)
                        view[got:got + n] = data
                    else:
                        n = resp.readinto(view[got: min(limit, got + READ_SLICE)])
                    if not n:
                        if resp.length:  # http.client returns 0 when the connection ends early
                            raise http.client.IncompleteRead(b"", resp.length)
                        break
                    got += n
                    if time.monotonic() - started >= max_wait:
                        break
            except (OSError, http.client.HTTPException) as exc:
                if self._resp is not resp:  # closed meanwhile by the fill that gave up on it
                    raise RangeFailed("the connection was closed") from None
                self.reset()
                error = RangeFailed.of(exc)
                if not got:
                    raise error from None
                self._error = error  # raised by the next call
                return got
        if resp.isclosed() and self._resp is resp:
            self._resp = None  # read to its end: the connection can take the next request
        return got

    def close(self) -> None:
        """Drop the connection for good; safe from another thread to stop a read or a request. The socket is shut
        down at once, which wakes a thread blocked reading it, but its descriptor is freed only once no call is
        inside: freed earlier, its number could go to a new connection (another fill's) while the read still
        uses it. A request whose connection was being made meanwhile closes it and fails."""
        with self._guard:
            self._closed = True
        self.reset()

    def reset(self) -> None:
        """Drop the current connection (the next request makes a new one), with ``close``'s care for a call
        inside."""
        with self._guard:
            conn, self._conn, self._resp, self._origin = self._conn, None, None, None
            if conn is None:
                return
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
            if self._inside:
                self._doomed.append(conn)
                return
        conn.close()

    def _connect(self, origin: tuple[str, str]) -> http.client.HTTPConnection:
        if self._resp is not None:  # the previous answer was not read to its end
            self.reset()
        if self._conn is not None and self._origin == origin:
            return self._conn
        self.reset()
        if self._closed:
            raise RangeFailed("the connection was closed")
        scheme, netloc = origin
        if scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(netloc, timeout=self.timeout,
                                                                           context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self.timeout)
        conn.connect()  # may take up to the timeout: ``close`` cannot reach this socket before it is kept below
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._guard:
            if not self._closed:
                self._conn, self._origin = conn, origin
                return conn
        conn.close()  # closed while it was being made: never used, never left open
        raise RangeFailed("the connection was closed")
