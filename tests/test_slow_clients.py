"""Clients that take their bytes slowly, or not at all, hold no worker thread: everyone else is still served.

A zero-copy answer moves its bytes in the worker threads every disk and database call of the process shares
(``sendfile`` from a stored blob, ``splice`` from an S3 GET). A client whose socket stays full used to keep its
thread waiting for room (up to a minute for one that reads nothing, as ``hf_transfer``'s first, unread GET
does). With as many such clients as threads, every other request of the process waited with them. The wait is
now the event loop's (``http_protocol.py``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from huggingface_hub import hf_hub_download

from tests.fakehub import FakeHub
from tests.helpers import ProxyProcess, read_head, request, s3_settings, wait_until

MIB = 1024 * 1024
#: More stalled clients than the process has worker threads (``runtime.WORKER_THREADS``, 32).
STALLED = 40


def _stall(proxy: ProxyProcess, path: str) -> socket.socket:
    """A GET of ``path`` whose answer is not read; it waits in the socket (whose buffer is kept small)."""
    port = urlsplit(proxy.url).port
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def _read_answer(sock: socket.socket, size: int) -> bytes:
    """The rest of a stalled answer, read now (with room to take it quickly)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MIB)
    sock.settimeout(30)
    head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200")
    got = head.partition(b"\r\n\r\n")[2]
    while len(got) < size:
        chunk = sock.recv(4 * MIB)
        assert chunk, f"the answer ended after {len(got)} bytes"
        got += chunk
    return got


@pytest.mark.parametrize("store", ["local", "s3"])
def test_stalled_clients_leave_the_others_served(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                 request_fixture: pytest.FixtureRequest, store: str) -> None:
    """On local disk the stalled answers are ``sendfile``d from the stored blob; from S3 each is spliced from a GET
    of its own."""
    big = os.urandom(32 * MIB)
    sha = hashlib.sha256(big).hexdigest()
    fakehub.add_commit("model", f"alice/stalled-{store}", {"w.safetensors": big})
    small = os.urandom(3 * MIB)
    fakehub.add_commit("model", f"alice/beside-stalled-{store}", {"w.safetensors": small})
    if store == "s3":
        name, s3 = request_fixture.getfixturevalue("bucket")
        proxy = make_proxy(**s3_settings(request_fixture.getfixturevalue("s3_endpoint"), name))
    else:
        proxy = make_proxy()
    path = f"/alice/stalled-{store}/resolve/main/w.safetensors"
    status, _, body = request("GET", proxy.url + path)
    assert status == 200 and body == big
    if store == "s3":  # stored in the bucket: from now on each answer is spliced from a GET of the object
        assert wait_until(lambda: s3.list_objects_v2(Bucket=name, Prefix=f"hubproxy/blobs/{sha[:2]}/{sha}")
                          .get("KeyCount"), 20)
    stalled = [_stall(proxy, path) for _ in range(STALLED)]
    try:
        time.sleep(1.0)  # every answer has filled its socket and is waiting for room
        # Another client: metadata, a cold fill (disk, hashing and database calls in worker threads), a download.
        done: list[str] = []

        def download() -> None:
            local = hf_hub_download(f"alice/beside-stalled-{store}", "w.safetensors", endpoint=proxy.url,
                                    cache_dir=tmp_path)
            done.append(hashlib.sha256(Path(local).read_bytes()).hexdigest())

        worker = threading.Thread(target=download, daemon=True)
        started = time.monotonic()
        worker.start()
        worker.join(20)
        assert done == [hashlib.sha256(small).hexdigest()], \
            f"the other client was not served within {time.monotonic() - started:.1f}s"
        # The stalled answers go on once their clients read: each gets the whole file.
        for sock in stalled[:2]:
            assert _read_answer(sock, len(big)) == big
    finally:
        for sock in stalled:
            sock.close()


@pytest.fixture
def request_fixture(request: pytest.FixtureRequest) -> pytest.FixtureRequest:
    """pytest's ``request`` under another name (this module's ``request`` is the HTTP helper)."""
    return request
