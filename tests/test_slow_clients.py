"""Clients that take their bytes slowly, or not at all, hold no worker thread: everyone else is still served.

A zero-copy answer's ``sendfile`` runs in the worker threads every disk and database call of the process shares;
a client whose socket stays full used to keep its thread waiting for room (up to a minute for one that reads
nothing, as ``hf_transfer``'s first, unread GET does). With as many such clients as threads, every other request
of the process waited with them. The wait is now the event loop's (``http_protocol.py``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import hf_hub_download

from tests.fakehub import FakeHub
from tests.helpers import ProxyProcess, read_head, request

MIB = 1024 * 1024
#: More stalled clients than the process has worker threads (``runtime.WORKER_THREADS``, 32).
STALLED = 40


def _stall(proxy: ProxyProcess, path: str) -> socket.socket:
    """A GET of ``path`` whose answer is read only up to its head; the rest waits in the socket."""
    port = urlsplit(proxy.url).port
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def test_stalled_clients_leave_the_others_served(proxy: ProxyProcess, fakehub: FakeHub, tmp_path: Path) -> None:
    big = os.urandom(32 * MIB)
    fakehub.add_commit("model", "alice/big", {"w.safetensors": big})
    small = os.urandom(3 * MIB)
    fakehub.add_commit("model", "alice/other", {"w.safetensors": small})
    path = "/alice/big/resolve/main/w.safetensors"
    status, _, body = request("GET", proxy.url + path)  # stored: later answers are zero-copy from disk
    assert status == 200 and body == big
    stalled = [_stall(proxy, path) for _ in range(STALLED)]
    try:
        time.sleep(1.0)  # every answer has filled its socket and is waiting for room
        # Another client: metadata, a cold fill (disk, hashing and database calls in worker threads), a download.
        done: list[str] = []

        def download() -> None:
            local = hf_hub_download("alice/other", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path)
            done.append(hashlib.sha256(Path(local).read_bytes()).hexdigest())

        worker = threading.Thread(target=download, daemon=True)
        started = time.monotonic()
        worker.start()
        worker.join(20)
        assert done == [hashlib.sha256(small).hexdigest()], \
            f"the other client was not served within {time.monotonic() - started:.1f}s"
        # The stalled answers go on once their clients read: each gets the whole file.
        for sock in stalled[:2]:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MIB)
            sock.settimeout(30)
            head = read_head(sock)
            assert head.startswith(b"HTTP/1.1 200")
            got = head.partition(b"\r\n\r\n")[2]
            while len(got) < len(big):
                chunk = sock.recv(4 * MIB)
                assert chunk, f"the answer ended after {len(got)} bytes"
                got += chunk
            assert got == big
    finally:
        for sock in stalled:
            sock.close()
