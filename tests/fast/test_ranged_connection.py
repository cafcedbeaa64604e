"""``RangeConnection`` against a real HTTP server on loopback: ranges, keep-alive, drops, other answers."""

from __future__ import annotations

import http.client
import os
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from hubproxy.upstream.ranged import RangeConnection, RangeFailed
from tests.fakehub.server import QuietHTTPServer

DATA = os.urandom(3 * 1024 * 1024 + 17)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: set[int] = set()
    drop_after: int | None = None

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        _Handler.connections.add(id(self.connection))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/blob")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/whole":  # a server that ignores Range
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA)
            return
        first, _, last = self.headers["Range"].removeprefix("bytes=").partition("-")
        start, end = int(first), int(last) + 1
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(DATA)}")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        body = DATA[start:end]
        if self.path == "/trickle":  # 64 KiB, then the rest a second later
            self.wfile.write(body[:64 * 1024])
            self.wfile.flush()
            time.sleep(1.0)
            self.wfile.write(body[64 * 1024:])
            return
        if _Handler.drop_after is not None:
            self.wfile.write(body[: _Handler.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[str]:
    httpd = QuietHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.connections.clear()
    _Handler.drop_after = None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _read_all(conn: RangeConnection, size: int) -> bytes:
    buf, out = bytearray(256 * 1024), bytearray()
    while n := conn.read_into(buf, min(len(buf), size - len(out)), 0.05):
        out += buf[:n]
    return bytes(out)


def test_ranges_on_one_kept_alive_connection(server: str) -> None:
    conn = RangeConnection(ssl.create_default_context(), timeout=5)
    try:
        status, content_range = conn.request(server + "/blob", 100, 1024 * 1024 + 99, {})
        assert (status, content_range) == (206, f"bytes 100-1048675/{len(DATA)}")
        assert _read_all(conn, 1024 * 1024) == DATA[100: 1024 * 1024 + 100]
        assert conn.read_into(bytearray(10), 10, 0.05) == 0  # the answer is over
        conn.request(server + "/blob", 2 * 1024 * 1024, len(DATA) - 1, {})
        assert _read_all(conn, len(DATA) - 2 * 1024 * 1024) == DATA[2 * 1024 * 1024:]
        assert len(_Handler.connections) == 1
    finally:
        conn.close()


def test_a_drop_gives_what_arrived_then_fails(server: str) -> None:
    _Handler.drop_after = 300_000
    conn = RangeConnection(ssl.create_default_context(), timeout=5)
    buf, got = bytearray(1024 * 1024), bytearray()
    conn.request(server + "/blob", 0, 1024 * 1024 - 1, {})
    with pytest.raises(RangeFailed):
        while n := conn.read_into(buf, len(buf), 0.05):
            got += buf[:n]
    assert bytes(got) == DATA[:300_000]
    _Handler.drop_after = None
    conn.request(server + "/blob", 300_000, 1024 * 1024 - 1, {})  # a new connection resumes the rest
    assert _read_all(conn, 1024 * 1024 - 300_000) == DATA[300_000: 1024 * 1024]
    conn.close()


def test_other_answers_are_reported_not_followed(server: str) -> None:
    conn = RangeConnection(ssl.create_default_context(), timeout=5)
    assert conn.request(server + "/moved", 0, 9, {})[0] == 302
    assert conn.read_into(bytearray(10), 10, 0.05) == 0
    conn.close()


def test_nothing_listening_is_a_failure_to_resume_from() -> None:
    conn = RangeConnection(ssl.create_default_context(), timeout=2)
    with pytest.raises(RangeFailed):
        conn.request("http://127.0.0.1:9/blob", 0, 9, {})


def test_a_close_from_another_thread_frees_the_socket_only_once_the_read_left(server: str) -> None:
    """The fill's event loop closes a lane's connection while the lane's thread may be inside a read: the
    read must end, and the socket's number must not be free (for a new connection) while it is inside."""
    conn = RangeConnection(ssl.create_default_context(), timeout=5)
    conn.request(server + "/blob", 0, 1024 * 1024 - 1, {})
    resp = conn._resp
    assert resp is not None and conn._conn is not None and conn._conn.sock is not None
    fd = conn._conn.sock.fileno()
    inode = os.fstat(fd).st_ino
    entered, release = threading.Event(), threading.Event()
    real_readinto = resp.readinto

    def held_readinto(view: memoryview) -> int:  # the thread is inside the read when the close comes
        entered.set()
        release.wait(5)
        return real_readinto(view)

    resp.readinto = held_readinto  # type: ignore[method-assign]
    outcome: list[object] = []

    def lane() -> None:
        try:
            outcome.append(conn.read_into(bytearray(1024 * 1024), 1024 * 1024, 1.0))
        except RangeFailed as exc:
            outcome.append(exc)

    reader = threading.Thread(target=lane)
    reader.start()
    assert entered.wait(5)
    conn.close()  # from another thread, as the fill does when it gives a part up
    assert os.fstat(fd).st_ino == inode  # still this connection's socket: the number is not free
    release.set()
    reader.join(5)
    assert not reader.is_alive()
    assert outcome and (outcome[0] == 0 or isinstance(outcome[0], RangeFailed))  # shut down: no more bytes
    try:  # freed once the read left (another file may hold the number by now)
        still_open = os.fstat(fd).st_ino == inode
    except OSError:
        still_open = False
    assert not still_open


def test_a_close_while_the_connection_is_being_made_leaves_no_connection_open(
        server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fill that gives a part up closes its lane's connection while the lane's thread may still be making it
    (``connect`` is not yet done, so there is no socket to shut down): the request must fail and the new
    socket must be closed, not kept for a request nobody waits for."""
    entered, release = threading.Event(), threading.Event()
    made: list[http.client.HTTPConnection] = []
    real_connect = http.client.HTTPConnection.connect

    def held_connect(self: http.client.HTTPConnection) -> None:  # the thread is making the connection
        made.append(self)
        entered.set()
        release.wait(5)
        real_connect(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", held_connect)
    conn = RangeConnection(ssl.create_default_context(), timeout=5)
    outcome: list[object] = []

    def lane() -> None:
        try:
            outcome.append(conn.request(server + "/blob", 0, 9, {}))
        except RangeFailed as exc:
            outcome.append(exc)

    requester = threading.Thread(target=lane)
    requester.start()
    assert entered.wait(5)
    conn.close()  # from another thread, while connect is inside
    release.set()
    requester.join(5)
    assert not requester.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RangeFailed)
    assert len(made) == 1 and made[0].sock is None  # the socket it made is closed
    assert not _Handler.connections  # no request was sent on it
    with pytest.raises(RangeFailed):  # and a closed connection makes no new one
        conn.request(server + "/blob", 0, 9, {})
    assert len(made) == 1


def test_a_whole_file_answer_is_read_only_when_asked_for(server: str) -> None:
    """A probe from byte 0 takes a server's 200 (Range ignored: the whole file) as its one stream; any other request
    discards it."""
    conn = RangeConnection(ssl.create_default_context(), timeout=5)
    try:
        assert conn.request(server + "/whole", 0, 1023, {}) == (200, "")
        assert conn.read_into(bytearray(10), 10, 0.05) == 0  # discarded
        assert conn.request(server + "/whole", 0, 1023, {}, whole=True) == (200, "")
        assert _read_all(conn, len(DATA)) == DATA
    finally:
        conn.close()


def test_a_read_that_does_not_wait_returns_the_bytes_already_there(server: str) -> None:
    """The blob's first batch: what has arrived, at once, not once a whole slice has (the server sends 64 KiB, then
    nothing for a second)."""
    conn = RangeConnection(ssl.create_default_context(), timeout=5)
    try:
        conn.request(server + "/trickle", 0, 256 * 1024 - 1, {})
        buf = bytearray(256 * 1024)
        started = time.monotonic()
        got = conn.read_into(buf, len(buf), 0.0)
        assert time.monotonic() - started < 0.5 and 0 < got <= 64 * 1024 and buf[:got] == DATA[:got]
        assert bytes(buf[:got]) + _read_all(conn, 256 * 1024 - got) == DATA[:256 * 1024]
    finally:
        conn.close()
