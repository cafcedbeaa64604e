"""A body left on its socket (``store/rawget.py``) and the relay that moves it (``http_protocol.py``),
against real sockets on loopback: exact bytes, an answer cut short, a client that goes away."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from hubproxy.config import load_settings
from hubproxy.http_protocol import (
    BLOCKED,
    RELAY_BUFFER_BYTES,
    RELAY_BUFFERS_BYTES,
    RELAY_SMALL_BUFFER_BYTES,
    STARVED,
    _Held,
    _relay_step,
    relay_buffer_size,
)
from hubproxy.store.bodies import SocketSpan, WrappedBody
from hubproxy.store.rawget import raw_get
from hubproxy.store.s3 import S3BlobStore
from tests.helpers import read_head

DATA = os.urandom(5 * 1024 * 1024 + 11)


class _OneShotServer:
    """Answers each connection with ``answer`` (bytes, sent as they are) and closes it; records the requests."""

    def __init__(self) -> None:
        self.answer = b""
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            # A client that hangs up early (a test cutting a body) is not an error of the server.
            with conn, contextlib.suppress(OSError):
                request = read_head(conn)
                if b"\r\n\r\n" in request:
                    self.requests.append(request)
                    conn.sendall(self.answer)


@pytest.fixture
def server() -> Iterator[_OneShotServer]:
    s = _OneShotServer()
    yield s
    s.sock.close()


def _answer(status: str, body: bytes, length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    return f"HTTP/1.1 {status}\r\nContent-Length: {length}\r\nX-Amz-Id: 1\r\n\r\n".encode() + body


def test_the_head_is_parsed_and_the_body_iterates_exactly(server: _OneShotServer) -> None:
    server.answer = _answer("206 Partial Content", DATA)
    answer = raw_get(f"{server.url}/bucket/key?X-Amz-Signature=abc", {"Range": "bytes=0-9"}, 10)
    assert answer.status == 206 and answer.headers["content-length"] == str(len(DATA))
    assert answer.headers["x-amz-id"] == "1"
    request = server.requests[0].decode()
    assert request.startswith("GET /bucket/key?X-Amz-Signature=abc HTTP/1.1\r\n")
    assert "\r\nRange: bytes=0-9\r\n" in request and "\r\nConnection: close\r\n" in request

    async def read() -> bytes:
        body = answer.body(len(DATA))
        try:
            return b"".join([chunk async for chunk in body])
        finally:
            await body.aclose()
            assert [span async for span in body.spans()] == []  # iterated (and closed): nothing left to relay

    assert asyncio.run(read()) == DATA


def test_a_body_handed_over_as_its_socket_is_one_span(server: _OneShotServer) -> None:
    server.answer = _answer("206 Partial Content", DATA)
    answer = raw_get(server.url + "/k", {}, 10)

    async def take() -> None:
        body = WrappedBody(answer.body(len(DATA)))  # as the store's layers hand it on
        assert body.spans is not None
        [span] = [span async for span in body.spans()]
        assert isinstance(span, SocketSpan) and span.sock is answer.sock
        assert len(span.head) + span.count == len(DATA) and DATA.startswith(span.head)
        received = span.head
        while len(received) < len(DATA):
            received += span.sock.recv(1 << 20)
        assert received == DATA
        assert [again async for again in body.spans()] == []  # handed over once
        with pytest.raises(RuntimeError):
            await body.__anext__()  # and never also read here
        await body.aclose()
        assert answer.sock.fileno() == -1  # the body still closes the socket

    asyncio.run(take())


def test_a_body_cut_short_raises_instead_of_ending(server: _OneShotServer) -> None:
    server.answer = _answer("206 Partial Content", DATA[:100_000], length=len(DATA))
    answer = raw_get(server.url + "/k", {}, 10)

    async def read() -> int:
        got = 0
        body = answer.body(len(DATA))
        try:
            async for chunk in body:
                got += len(chunk)
        finally:
            await body.aclose()
        return got

    with pytest.raises(OSError, match="ended"):
        asyncio.run(read())


def test_not_http_or_not_plain_is_refused(server: _OneShotServer) -> None:
    server.answer = b"SSH-2.0-OpenSSH\r\n\r\n"
    with pytest.raises(OSError, match="not an HTTP"):
        raw_get(server.url + "/k", {}, 10)
    with pytest.raises(ValueError):
        raw_get("https://127.0.0.1/k", {}, 10)


def _pump(server: _OneShotServer, count: int, until: float = math.inf) -> tuple[int, bytes, bytes, int]:
    """Relay ``count`` body bytes from a raw GET to one end of a socket pair (in calls that each stop at the
    monotonic time ``until``, or when it has passed after their first bytes); what moved, what the other end
    read, the head that came with the headers, and how many calls it took (not counting those that came back to
    have a socket waited for: they are called again, as ``ZeroCopy`` does once the socket is ready)."""
    answer = raw_get(server.url + "/k", {}, 10)
    head = answer.head
    client, far = socket.socketpair()
    client.setblocking(False)
    received = bytearray()

    def drain() -> None:
        while chunk := far.recv(1 << 20):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    held = _Held(RELAY_BUFFER_BYTES)
    moved, calls = 0, 0
    try:
        more = True
        while more and moved < count:
            n, more = _relay_step(answer.sock.fileno(), client.fileno(), held, count - moved, until)
            moved, calls = moved + n, calls + (more not in (BLOCKED, STARVED))
    finally:
        client.close()
        reader.join()
        far.close()
        answer.close()
    return moved, head, bytes(received), calls


def test_the_relay_moves_the_whole_body(server: _OneShotServer) -> None:
    server.answer = _answer("200 OK", DATA)
    moved, head, received, calls = _pump(server, len(DATA))
    assert len(head) + moved == len(DATA) and head + received == DATA and calls == 1


def test_a_relay_step_whose_time_is_up_comes_back_with_its_buffer_empty_and_the_next_goes_on(
        server: _OneShotServer) -> None:
    """A call whose time is up returns after a buffer's worth (the answer can then be given up); none is lost."""
    server.answer = _answer("200 OK", DATA)
    moved, head, received, calls = _pump(server, len(DATA), until=0.0)
    assert len(head) + moved == len(DATA) and head + received == DATA
    assert calls > 1


def test_the_relay_stops_where_the_source_ends(server: _OneShotServer) -> None:
    server.answer = _answer("200 OK", DATA[:300_000], length=len(DATA))
    moved, head, received, calls = _pump(server, len(DATA))
    assert len(head) + moved == 300_000 and head + received == DATA[:300_000]
    assert calls == 1  # the call said it cannot go on: not called again


def test_the_relay_stops_when_the_client_goes_away(server: _OneShotServer) -> None:
    server.answer = _answer("200 OK", DATA)
    answer = raw_get(server.url + "/k", {}, 10)
    client, far = socket.socketpair()
    client.setblocking(False)
    far.close()  # nobody reads: the first write fails
    held = _Held(RELAY_BUFFER_BYTES)
    try:
        moved, more = 0, STARVED
        while more in (BLOCKED, STARVED):  # the source may not have sent yet: called again, as ZeroCopy does
            n, more = _relay_step(answer.sock.fileno(), client.fileno(), held, len(DATA) - moved, math.inf)
            moved += n
    finally:
        client.close()
        answer.close()
    assert moved < len(DATA) and not more


def test_relays_take_large_buffers_only_while_the_running_relays_leave_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Held, "in_use", 0)
    assert relay_buffer_size(1 << 30) == RELAY_BUFFER_BYTES
    assert relay_buffer_size(300_000) == 300_000  # never more than the body
    monkeypatch.setattr(_Held, "in_use", RELAY_BUFFERS_BYTES - RELAY_BUFFER_BYTES)
    assert relay_buffer_size(1 << 30) == RELAY_BUFFER_BYTES
    monkeypatch.setattr(_Held, "in_use", RELAY_BUFFERS_BYTES - RELAY_BUFFER_BYTES + 1)
    assert relay_buffer_size(1 << 30) == RELAY_SMALL_BUFFER_BYTES


@pytest.mark.parametrize(("endpoint", "proxy", "raw"), [
    ("http://minio.internal:9000", None, True),
    ("https://minio.internal:9000", None, False),  # TLS: boto3 reads it
    ("http://minio.internal:9000", "http://proxy.internal:3128", False),  # a proxy applies: boto3 goes through it
    (None, None, False),  # AWS itself (https)
])
def test_only_a_plain_http_endpoint_without_a_proxy_is_read_raw(monkeypatch: pytest.MonkeyPatch, endpoint: str | None,
                                                                proxy: str | None, raw: bool) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)
    env = {"HUBPROXY_STORE": "s3", "HUBPROXY_S3_BUCKET": "b", "HUBPROXY_S3_REGION": "us-east-1"}
    if endpoint:
        env["HUBPROXY_S3_ENDPOINT_URL"] = endpoint
    assert S3BlobStore(load_settings(environ=env)).plain_http is raw


def test_an_endpoint_refusing_raw_reads_is_read_through_boto3_from_then_on(server: _OneShotServer,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    for name, value in (("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")):
        monkeypatch.setenv(name, value)
    error = b"<Error><Code>AccessDenied</Code><Message>query auth refused</Message></Error>"
    server.answer = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n" + \
        f"Content-Length: {len(error)}\r\n\r\n".encode() + error
    store = S3BlobStore(load_settings(environ={
        "HUBPROXY_STORE": "s3", "HUBPROXY_S3_BUCKET": "b", "HUBPROXY_S3_REGION": "us-east-1",
        "HUBPROXY_S3_ENDPOINT_URL": server.url, "HUBPROXY_S3_PATH_STYLE": "true"}))
    key = "ab" * 32
    assert store.plain_http
    with pytest.raises(ClientError, match="AccessDenied"):
        asyncio.run(store.read(key, 0, 2 * 1024 * 1024, 1 << 20))
    assert not store.plain_http and len(server.requests) == 2  # the raw GET, then boto3's with its error
    assert b"X-Amz-Signature=" in server.requests[0].split(b"\r\n")[0]  # a presigned URL (SigV4)
    assert b"\r\nAuthorization: " in server.requests[1]  # boto3 signs its request in a header
    with pytest.raises(ClientError):
        asyncio.run(store.read(key, 0, 2 * 1024 * 1024, 1 << 20))
    assert len(server.requests) == 3  # boto3 only
