"""hubproxy's HTTP protocol under uvicorn: bounded headers, HTTP/1.0 keep-alive, bodies sent outside uvicorn.

- Headers are bounded by ``limits.py`` (431 past ``MAX_HEADER_BYTES``).
- HTTP/1.0 keep-alive: uvicorn closes every HTTP/1.0 connection after one answer, even when the request
  says ``Connection: keep-alive``. Clients and tools that speak HTTP/1.0 that way (ApacheBench, some
  health checkers and proxies) then pay a new TCP connection per request, which costs more than
  answering a cached HEAD. Such a connection is kept and the answer says ``Connection: keep-alive``, as
  HTTP/1.0 requires; hubproxy's answers carry a Content-Length, so the client knows where each ends.
- Zero-copy: on a plain (not TLS) connection the request's scope carries a ``hubproxy.sendfile``
  extension, ``await sendfile(fd, offset, count) -> sent``, that hands bytes of an open file to the
  kernel (``sendfile(2)``) once the answer's headers have left. ``BodyResponse`` uses it for blobs on local
  disk (stored or being filled): no copy through Python and no buffer per client, as nginx serves files.
  Bytes of a fill still in the buffers they were written from, past the page cache, are written from those
  buffers instead (``await sendfile(fd, offset, count, loans)``). The same extension's
  ``await relay(sock, count) -> sent`` moves bytes still on another socket (an object's body arriving from the
  S3 bucket, ``store/rawget.py``) to the client with ``read(2)`` and ``write(2)`` through one buffer per answer,
  so they never become Python objects either. (``splice(2)``
  through a pipe, which copies nothing, was slower on loopback: 256 MiB took 134-153 ms against 73-96 ms
  for the buffer in a standalone relay, 137 ms against 100 ms in hubproxy.) Those bytes never pass ``send``,
  so it reports them to middleware in empty body messages carrying ``DIRECT_BYTES`` (the access log and
  metrics count them like any other).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar

from hubproxy.descriptors import call_owning, duplicate
from hubproxy.limits import BoundedHttpToolsProtocol
from hubproxy.observability import metrics
from hubproxy.store.bodies import LoanReader

log = logging.getLogger(__name__)

#: Most bytes one worker-thread call sends (between calls the answer can be given up).
SENDFILE_STEP = 1024 * 1024 * 1024
#: Longest one worker-thread call goes on sending before it comes back to the event loop. Each trip between the
#: loop and a worker costs about a millisecond in which nothing is sent: with a call per 16 MiB, a client taking
#: 2 GB/s lost 60-70 ms per GiB. A slow client's answer can still be given up within this time.
STEP_SECONDS = 0.25
#: Longest a worker thread waits for a full client socket to take more bytes before it hands the wait to the
#: event loop. A slow or stalled client then waits on the event loop, which holds no thread, not in one of the
#: worker threads every disk and database call of the process shares; a client taking bytes as fast as they
#: come is back within it, and its answer keeps its thread. Measured in turns (8 and 64 hot clients against
#: nginx): 2 ms handed off so often that 8 clients fell to 0.81-0.84x; 10 ms 0.95-0.97x and 0.84-0.86x;
#: 50 ms 0.98-1.00x and 0.89-0.92x. A step already keeps its thread up to ``STEP_SECONDS`` while it sends.
BRIEF_WAIT_MS = 50
#: Buffer a relayed body (an S3 GET's) passes through, one per answer: ``RELAY_BUFFER_BYTES`` while the process's
#: relays hold at most ``RELAY_BUFFERS_BYTES`` in all, ``RELAY_SMALL_BUFFER_BYTES`` beyond. Measured in turns
#: (the streamed S3 row against a boto3 GET, two runs each): 4 MiB 0.906x and 0.907x, 1 MiB 0.853x and 0.872x.
RELAY_BUFFER_BYTES = 4 * 1024 * 1024
RELAY_SMALL_BUFFER_BYTES = 1024 * 1024
RELAY_BUFFERS_BYTES = 64 * 1024 * 1024
#: Most bytes of a fill with loaned buffers (``LoanedSpan``) sent from its file in one call before the loans are
#: looked at again (a reader behind the buffers catches up with them).
LOAN_LOOK_BYTES = 1024 * 1024
_SENT_FROM_BUFFER = metrics.FILL_SENT_BYTES.labels("buffer")
_SENT_FROM_SPOOL = metrics.FILL_SENT_BYTES.labels("spool")
#: Seconds a client may take to accept more bytes before the answer is given up.
STALL_SECONDS = 60.0
EXTENSION = "hubproxy.sendfile"
#: Key of an (empty) ``http.response.body`` message that tells middleware how many bytes went out zero-copy
#: (0 just before the first ones leave: the time to first byte).
DIRECT_BYTES = "hubproxy.direct_bytes"


class HubproxyHttpProtocol(BoundedHttpToolsProtocol):
    """uvicorn's httptools protocol with bounded headers, HTTP/1.0 keep-alive and a zero-copy extension."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None:
            return
        if not cycle.keep_alive and self.parser.get_http_version() == "1.0" and _asks_keep_alive(self.headers):
            cycle.keep_alive = True
            cycle.default_headers = [*cycle.default_headers, (b"connection", b"keep-alive")]
        if self.transport.get_extra_info("sslcontext") is None and self.transport.get_extra_info("socket"):
            self.scope.setdefault("extensions", {})[EXTENSION] = ZeroCopy(self, cycle)


def _asks_keep_alive(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's headers (names lower-cased) ask to keep the connection."""
    return any(name == b"connection" and b"keep-alive" in value.lower() for name, value in headers)


class ZeroCopy:
    """``await sendfile(fd, offset, count)`` for one request's answer; returns the bytes the client got."""

    def __init__(self, protocol: HubproxyHttpProtocol, cycle: Any) -> None:
        self.protocol = protocol
        self.cycle = cycle

    async def __call__(self, fd: int, offset: int, count: int, loans: LoanReader | None = None) -> int:
        """Send bytes ``[offset, offset + count)`` of the open file ``fd`` (from ``loans`` where they hold them)."""
        if not await self._drained():
            return 0
        return await self._move(
            lambda own, sent, step, until: _send_step(own[0], own[1], offset + sent, step, until, loans), count, fd)

    async def relay(self, source: socket.socket, count: int) -> int:
        """Move the next ``count`` bytes arriving on ``source`` to the client, through one buffer of this answer's
        (``relay_buffer_size``), never into a Python object."""
        if not await self._drained():
            return 0
        timeout = source.gettimeout() or STALL_SECONDS
        # One buffer for the whole answer (steps may leave bytes in it), never shared: a step still running when the
        # answer is given up keeps it alive, and writes into it alone.
        held = _Held(relay_buffer_size(count))
        _Held.in_use += len(held.view)
        try:
            return await self._move(lambda own, sent, step, until: _relay_step(own[1], own[0], held, step, until),
                                    count, source.fileno(), source_timeout=timeout)
        finally:
            _Held.in_use -= len(held.view)

    async def _drained(self) -> bool:
        """Wait until what was sent before (the headers) has left; False if the client is gone or takes nothing."""
        transport = self.protocol.transport
        deadline = time.monotonic() + STALL_SECONDS
        while transport.get_write_buffer_size() and not transport.is_closing():
            if time.monotonic() > deadline:
                transport.close()  # a client that takes no bytes at all
                return False
            await asyncio.sleep(0.001)  # the headers (and anything before) leave first, in order
        return not transport.is_closing()

    async def _move(self, step: Callable[[tuple[int, ...], int, int, float], tuple[int, bool | str]], count: int,
                    source: int, source_timeout: float = STALL_SECONDS) -> int:
        """Run ``step((client, source), sent, at_most, until)`` in worker threads until ``count`` bytes went out or a
        step says it cannot go on (it returns the bytes it moved and whether it can; it stops by itself at the
        monotonic time ``until``, ``STEP_SECONDS`` after it starts). A step that found the client's socket full
        says ``BLOCKED``: the wait for room is the event loop's, so a slow or stalled client holds no thread; one
        that found its source socket empty says ``STARVED``, and the event loop waits for bytes on it (at most
        ``source_timeout``).

        Each step gets descriptors of its own for the client's socket and the ``source`` (``descriptors.py``:
        duplicated here on the event loop, closed by the step's thread when it ends). The transport closes its socket when the
        connection is lost, and the request's body closes its file when the answer is given up, both while a
        step may still run; a number they free is soon another connection's, and a step using the shared
        numbers would then send one client's bytes down another client's connection.

        The client's socket is corked meanwhile (``TCP_CORK``, what nginx's ``tcp_nopush`` does around
        ``sendfile``): the kernel sends only full segments, so the client handles fewer, larger packets (1 GiB
        on loopback here: 0.37-0.47 s corked, 0.54-0.58 s not). Uncorking at the end sends the tail at once."""
        transport = self.protocol.transport
        client = transport.get_extra_info("socket")
        sent = 0
        _cork(client, True)
        try:
            while sent < count and not transport.is_closing() and client.fileno() >= 0:
                asked = min(SENDFILE_STEP, count - sent)
                try:
                    own = duplicate(client.fileno(), source)
                except OSError as exc:  # out of descriptors (EMFILE): this answer ends short, the process goes on
                    log.warning("zero-copy answer cut after %d bytes: %s", sent, exc)
                    break
                n, more = await call_owning(None, step, own, sent, asked, time.monotonic() + STEP_SECONDS)
                sent += n
                if more is BLOCKED:
                    if not await _ready(client.fileno(), True, STALL_SECONDS):
                        break  # the client takes nothing more
                elif more is STARVED:
                    if not await _ready(source, False, source_timeout):
                        break  # the source sends nothing more
                elif not more:
                    break  # the client or the source is gone or stalled
        finally:
            _cork(client, False)
            # uvicorn counts the body against Content-Length; these bytes did not pass through it.
            self.cycle.expected_content_length -= sent
            metrics.ZERO_COPY_BYTES.inc(sent)
        return sent


def _cork(client: Any, on: bool) -> None:
    """Set or clear ``TCP_CORK`` on the client's socket (nothing for a socket without it, or one the transport
    closed already: a client that went away has nothing left to flush)."""
    if client is None or client.fileno() < 0:
        return
    with contextlib.suppress(OSError):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))


#: What a step says when the client's socket stayed full for ``BRIEF_WAIT_MS``: wait on the event loop.
BLOCKED = "blocked"
#: What a relay step says when its source socket had nothing for ``BRIEF_WAIT_MS``: wait on the event loop.
STARVED = "starved"


async def _ready(fd: int, writing: bool, timeout: float) -> bool:
    """Wait on the event loop until the socket ``fd`` takes more bytes (``writing``) or has some to read (or reports
    an error, which the next step meets); False after ``timeout`` seconds or if it is closed. The wait is
    registered on a duplicate of the descriptor, which no transport uses (uvicorn's has its own registration of
    the number); the caller holds ``fd`` open meanwhile (it and whoever would close it run on the event loop)."""
    if fd < 0:
        return False
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    watched = os.dup(fd)
    add, remove = (loop.add_writer, loop.remove_writer) if writing else (loop.add_reader, loop.remove_reader)
    try:
        add(watched, lambda: ready.done() or ready.set_result(True))
        try:
            return await asyncio.wait_for(ready, timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            remove(watched)
    finally:
        os.close(watched)


def _send_step(sock: int, fd: int, offset: int, count: int, until: float,
               loans: LoanReader | None = None) -> tuple[int, bool | str]:
    """(In a thread.) Send up to ``count`` bytes of ``fd`` to the non-blocking socket until the monotonic time
    ``until``, waiting at most ``BRIEF_WAIT_MS`` at a time while it is full; bytes a buffer of ``loans`` holds are
    written from it, the others sent from the file (at most ``LOAN_LOOK_BYTES`` at a time, then the loans are
    looked at again). Returns what was sent, and False if the client is gone or the file ended, ``BLOCKED`` if
    the socket stayed full (the caller waits for it), True if all was sent or it is time to come back."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    sent = 0
    while sent < count:
        if sent and time.monotonic() >= until:
            return sent, True
        try:
            lent = loans.borrow(offset + sent) if loans is not None else None
            if lent is not None:
                n = 0
                try:
                    n = os.write(sock, lent[1][:count - sent])
                finally:
                    loans.give_back(lent[0], offset + sent + n)  # type: ignore[union-attr]
                _SENT_FROM_BUFFER.inc(n)
            elif loans is not None:
                n = os.sendfile(sock, fd, offset + sent, min(count - sent, LOAN_LOOK_BYTES))
                loans.reached(offset + sent + n)
                _SENT_FROM_SPOOL.inc(n)
            else:
                n = os.sendfile(sock, fd, offset + sent, count - sent)
        except BlockingIOError:
            events = poller.poll(BRIEF_WAIT_MS)
            if not events:
                return sent, BLOCKED
            if events[0][1] & (select.POLLERR | select.POLLHUP):
                return sent, False
            continue
        except OSError:  # the client went away (EPIPE, ECONNRESET)
            return sent, False
        if n == 0:
            return sent, False  # the file is shorter than asked
        sent += n
    return sent, True


class _Held:
    """A relay's buffer: bytes ``view[start:end]`` were read from the source and are not yet sent (kept between
    steps)."""

    __slots__ = ("end", "start", "view")
    #: Bytes of the buffers the process's running relays hold (counted on the event loop).
    in_use: ClassVar[int] = 0

    def __init__(self, size: int) -> None:
        self.view = memoryview(bytearray(size))
        self.start = self.end = 0


def relay_buffer_size(count: int) -> int:
    """The buffer for a relay of ``count`` bytes starting now: large while the running relays leave room for it."""
    large = _Held.in_use + RELAY_BUFFER_BYTES <= RELAY_BUFFERS_BYTES
    return min(count, RELAY_BUFFER_BYTES if large else RELAY_SMALL_BUFFER_BYTES)


def _relay_step(source: int, sock: int, held: _Held, count: int, until: float) -> tuple[int, bool | str]:
    """(In a thread.) Move up to ``count`` more bytes from the ``source`` socket through the answer's buffer (which
    may hold bytes a step before left) to the client's non-blocking socket, until the monotonic time ``until``,
    waiting at most ``BRIEF_WAIT_MS`` at a time on either socket. Returns what the client got, and False if the
    source ended or failed or the client went away, ``STARVED`` or ``BLOCKED`` if the source had nothing or the
    client's socket stayed full (the caller waits for it), True if all was moved or it is time to come back."""
    readable, writable = select.poll(), select.poll()
    readable.register(source, select.POLLIN)
    writable.register(sock, select.POLLOUT)
    moved = 0
    while moved < count:
        if held.start == held.end:
            if moved and time.monotonic() >= until:
                return moved, True
            try:  # never more than the answer still owes: the source may carry what follows it
                got = os.readv(source, [held.view[:min(len(held.view), count - moved)]])
            except BlockingIOError:
                if not readable.poll(BRIEF_WAIT_MS):
                    return moved, STARVED
                continue
            except OSError:  # the source failed (ECONNRESET)
                return moved, False
            if got == 0:
                return moved, False  # the source ended early
            held.start, held.end = 0, got
        try:
            n = os.write(sock, held.view[held.start:held.end])
        except BlockingIOError:
            events = writable.poll(BRIEF_WAIT_MS)
            if not events:
                return moved, BLOCKED
            if events[0][1] & (select.POLLERR | select.POLLHUP):
                return moved, False
            continue
        except OSError:  # the client went away
            return moved, False
        held.start += n
        moved += n
    return moved, True
