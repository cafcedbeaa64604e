"""The zero-copy sender (``http_protocol.ZeroCopy``) on real loopback TCP connections: every byte arrives,
the socket is corked while the bytes move and uncorked once they have (so the tail and the next answer on a
keep-alive connection are not held back), and a lost connection's bytes never reach another connection."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import uvloop

from hubproxy import http_protocol
from hubproxy.http_protocol import ZeroCopy

#: Not a multiple of any segment size: a tail that a socket left corked would hold back.
SIZE = 3 * 1024 * 1024 + 777


class _Transport:
    """What ``ZeroCopy`` asks of uvicorn's transport: the socket, its write buffer, whether it is closing."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> socket.socket | None:
        return self.sock if name == "socket" else None

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server side, client side) of a TCP connection on loopback; the server side non-blocking, as uvicorn's."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=10)
        server, _ = listener.accept()
    server.setblocking(False)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


def _receive(sock: socket.socket, size: int, into: bytearray, after: float = 0.0) -> threading.Thread:
    """A thread reading ``size`` bytes from ``sock`` into ``into``, starting ``after`` seconds from now."""

    def run() -> None:
        time.sleep(after)
        while len(into) < size:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            into.extend(chunk)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _corked(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)


#: A file far bigger than the sockets' buffers take (a hole: no disk used).
BIG = 256 * 1024 * 1024


def _sparse_blob(tmp_path: Path) -> Path:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(BIG)
    return path


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def _sender(transport: object, size: int) -> ZeroCopy:
    return ZeroCopy(SimpleNamespace(transport=transport), SimpleNamespace(expected_content_length=size))  # type: ignore[arg-type]


async def _uvloop_connection() -> tuple[asyncio.Server, socket.socket, asyncio.Transport]:
    """A connection accepted by uvloop (uvicorn's loop): the server, the client's socket (a small receive buffer,
    so a sender soon waits for it) and the server side's transport."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Accept, "127.0.0.1", 0)
    client = socket.create_connection(server.sockets[0].getsockname(), timeout=10)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    return server, client, await accepted


def test_a_file_is_sent_whole_from_a_corked_socket_that_is_uncorked_after(
        connection: tuple[socket.socket, socket.socket], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, client = connection
    data = os.urandom(SIZE + 100)
    (tmp_path / "blob").write_bytes(data)
    cork_while_sending: list[int] = []
    send_step = http_protocol._send_step

    def watched_step(sock: int, fd: int, offset: int, count: int, until: float, loans: object) -> tuple[int, bool]:
        cork_while_sending.append(_corked(server))
        return send_step(sock, fd, offset, count, until, loans)

    monkeypatch.setattr(http_protocol, "_send_step", watched_step)
    monkeypatch.setattr(http_protocol, "SENDFILE_STEP", 1024 * 1024)  # several steps
    sender = _sender(_Transport(server), SIZE)
    received = bytearray()
    reader = _receive(client, SIZE, received)
    with _opened(tmp_path / "blob") as fd:
        sent = asyncio.run(sender(fd, 100, SIZE))
    reader.join(10)
    assert sent == SIZE and bytes(received) == data[100:]
    assert cork_while_sending == [1] * 4
    assert _corked(server) == 0
    assert sender.cycle.expected_content_length == 0  # uvicorn is told these bytes went out


def test_a_step_whose_time_is_up_comes_back_to_the_event_loop_and_the_answer_goes_on(
        connection: tuple[socket.socket, socket.socket], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps are bounded by time, not only bytes: a fast client gets few of them, and every one comes back in
    time for the answer to be given up."""
    server, client = connection
    data = os.urandom(SIZE)
    (tmp_path / "blob").write_bytes(data)
    steps: list[int] = []
    send_step = http_protocol._send_step

    def counted_step(sock: int, fd: int, offset: int, count: int, until: float,
                    loans: object) -> tuple[int, bool | str]:
        sent, more = send_step(sock, fd, offset, count, until, loans)
        steps.append(sent)
        return sent, more

    monkeypatch.setattr(http_protocol, "_send_step", counted_step)
    monkeypatch.setattr(http_protocol, "STEP_SECONDS", 0.0)  # every step's time is up after its first bytes
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    received = bytearray()
    # Nobody reads at first, so the first call moves only what the buffers hold, far less than the file (a reader
    # already draining could let one call send everything).
    reader = _receive(client, SIZE, received, after=0.3)
    with _opened(tmp_path / "blob") as fd:
        sent = asyncio.run(_sender(_Transport(server), SIZE)(fd, 0, SIZE))
    reader.join(10)
    assert sent == SIZE and bytes(received) == data
    # (A step that finds the socket still full sends nothing: it hands the wait to the event loop.)
    assert len([n for n in steps if n]) > 1 and sum(steps) == SIZE
    assert _corked(server) == 0


def test_a_full_socket_is_waited_for_on_the_event_loop_not_in_a_thread(
        connection: tuple[socket.socket, socket.socket], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that takes nothing for a while holds no worker thread meanwhile: the step that finds its socket
    full comes back ``BLOCKED`` within ``BRIEF_WAIT_MS``, the event loop waits for room, and the answer goes on
    once the client reads."""
    server, client = connection
    data = os.urandom(SIZE)
    (tmp_path / "blob").write_bytes(data)
    results: list[tuple[int, bool | str, float]] = []
    send_step = http_protocol._send_step

    def timed_step(sock: int, fd: int, offset: int, count: int, until: float,
                  loans: object) -> tuple[int, bool | str]:
        started = time.monotonic()
        sent, more = send_step(sock, fd, offset, count, until, loans)
        results.append((sent, more, time.monotonic() - started))
        return sent, more

    monkeypatch.setattr(http_protocol, "_send_step", timed_step)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    received = bytearray()
    reader = _receive(client, SIZE, received, after=0.5)  # reads nothing for half a second
    with _opened(tmp_path / "blob") as fd:
        sent = asyncio.run(_sender(_Transport(server), SIZE)(fd, 0, SIZE))
    reader.join(10)
    assert sent == SIZE and bytes(received) == data
    assert results[0][1] is http_protocol.BLOCKED  # the first step filled the buffers and gave the wait back
    # No step spent the client's half second in its thread (each is back within its brief wait, far below it).
    assert max(took for _, _, took in results) < 0.25


def test_an_answer_given_up_mid_way_leaves_the_socket_uncorked(
        connection: tuple[socket.socket, socket.socket], tmp_path: Path) -> None:
    server, client = connection
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sender = _sender(_Transport(server), BIG)
    corked_before_cancel = []

    async def give_up(fd: int) -> None:
        sending = asyncio.create_task(sender(fd, 0, BIG))  # the client reads nothing: the step blocks
        await asyncio.sleep(0.3)
        corked_before_cancel.append(_corked(server))
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        assert _corked(server) == 0
        client.close()  # lets the blocked step end

    with _opened(_sparse_blob(tmp_path)) as fd:
        asyncio.run(give_up(fd))
    assert corked_before_cancel == [1]


def test_a_client_gone_while_bytes_move_gets_what_was_sent_and_no_error(tmp_path: Path) -> None:
    """On uvloop's own transport (uvicorn's): the client reads a little and resets, the transport sees the
    connection lost and closes its socket before the sender resumes. The bytes that went out are reported and
    nothing is raised (uvloop's socket object raises ValueError, not OSError, once closed)."""

    async def serve_one(fd: int) -> int:
        server, client, transport = await _uvloop_connection()
        threading.Timer(0.2, _reset, (client,)).start()
        try:
            return await _sender(transport, BIG)(fd, 0, BIG)
        finally:
            server.close()

    with _opened(_sparse_blob(tmp_path)) as fd:
        sent = uvloop.run(serve_one(fd))
    assert 0 < sent < BIG


def test_bytes_never_go_to_a_connection_that_took_a_lost_connections_number(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The transport closes its socket when the connection is lost, while a step still waits to send more; a new
    connection then takes the freed number. The step's bytes must not go down that new connection."""
    monkeypatch.setattr(http_protocol, "STALL_SECONDS", 3.0)
    stray: list[int] = []

    async def lose_and_reuse(fd: int) -> None:
        loop = asyncio.get_running_loop()
        server, client, transport = await _uvloop_connection()
        number = transport.get_extra_info("socket").fileno()
        sending = asyncio.ensure_future(_sender(transport, BIG)(fd, 0, BIG))
        await asyncio.sleep(0.3)  # the step waits for the client to take more
        listener = socket.create_server(("127.0.0.1", 0))
        transport.abort()  # the connection is lost: the transport closes its socket
        await asyncio.sleep(0.05)
        pairs = []
        for _ in range(20):  # new connections until one takes the freed number
            near = socket.create_connection(listener.getsockname())
            far, _ = listener.accept()
            near.setblocking(False)
            far.setblocking(False)
            pairs.append((near, far))
            if number in (near.fileno(), far.fileno()):
                break
        assert number in (pairs[-1][0].fileno(), pairs[-1][1].fileno())
        near, far = pairs[-1]
        peer = far if near.fileno() == number else near
        peer.settimeout(0.5)
        client.recv(1 << 20)  # the lost connection's client reads: a waiting step may go on
        client.close()
        try:
            stray.append(len(await loop.run_in_executor(None, peer.recv, 1 << 20)))
        except TimeoutError:
            stray.append(0)
        for pair in pairs:
            for sock in pair:
                sock.close()
        listener.close()
        await asyncio.wait_for(sending, 10)
        server.close()

    with _opened(_sparse_blob(tmp_path)) as fd:
        uvloop.run(lose_and_reuse(fd))
    assert stray == [0]


def test_no_descriptor_left_for_a_step_ends_the_answer_short(
        connection: tuple[socket.socket, socket.socket], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of descriptors (EMFILE) before a step: the answer ends with the bytes sent so far, nothing raised."""
    server, client = connection
    (tmp_path / "blob").write_bytes(os.urandom(SIZE))
    monkeypatch.setattr(http_protocol, "SENDFILE_STEP", 1024 * 1024)
    real_dup, dups = os.dup, [0]

    def dup_until_exhausted(fd: int) -> int:
        dups[0] += 1
        if dups[0] > 4:  # two steps' worth (the socket and the file each)
            raise OSError(errno.EMFILE, "Too many open files")
        return real_dup(fd)

    monkeypatch.setattr(http_protocol.os, "dup", dup_until_exhausted)
    received = bytearray()
    reader = _receive(client, 2 * 1024 * 1024, received)
    with _opened(tmp_path / "blob") as fd:
        sent = asyncio.run(_sender(_Transport(server), SIZE)(fd, 0, SIZE))
    reader.join(10)
    assert sent == 2 * 1024 * 1024 == len(received)
    assert _corked(server) == 0


def _reset(sock: socket.socket) -> None:
    """Read a little, then close with unread bytes pending: the peer gets a reset."""
    sock.recv(65536)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
