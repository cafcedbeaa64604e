"""A fast single stream written past the page cache (``fill_direct_writes``), through real HTTP clients: exact
bytes, readers sent the bytes from the stream's buffers, a slow reader never holding the fill up, followers in
another worker process reading the file."""

from __future__ import annotations

import ctypes
import hashlib
import http.client
import mmap
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hubproxy.cache.spool import Spool
from tests.fakehub import FakeHub
from tests.helpers import ProxyProcess, request, scrape, value, wait_until

MIB = 1024 * 1024
#: Small parts, and any first stream counts as fast: the rest of the blob comes in one stream after the probe's part.
FAST = {"fill_connections": "4", "fill_part_bytes": str(2 * MIB), "fill_single_stream_mbps": "0.001"}
SENT = "hubproxy_fill_sent_bytes_total"


@pytest.fixture(autouse=True)
def _direct_io_here(tmp_path: Path) -> None:
    """Direct writes need a local disk filesystem under the tests' data dirs (not tmpfs)."""
    if not Spool(tmp_path, direct_writes=True).direct_writes:
        pytest.skip("the tests' temporary folder is on a filesystem without direct writes (tmpfs, NFS)")


def _blob(hub: FakeHub, name: str, size: int) -> tuple[bytes, str]:
    data = os.urandom(size)
    hub.add_commit("model", f"alice/{name}", {"w.safetensors": data})
    return data, hashlib.sha256(data).hexdigest()


def _stored(proxy: ProxyProcess, sha: str) -> Path:
    blob = proxy.data_dir / "blobs" / sha[:2] / sha
    wait_until(blob.exists, timeout=15)
    return blob


def _resident_bytes(path: Path) -> int:
    """How much of the file the page cache holds (``mincore(2)``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as view:
        vec = (ctypes.c_ubyte * pages)()
        address = ctypes.addressof(ctypes.c_char.from_buffer(view))
        try:
            assert libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vec) == 0, ctypes.get_errno()
        finally:
            del address  # the buffer export ends with the ctypes object
    return sum(v & 1 for v in vec) * mmap.PAGESIZE


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def test_a_fast_stream_is_sent_from_its_buffers_and_stays_out_of_the_page_cache(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                                                ) -> None:
    proxy = make_proxy(**FAST)
    size = 32 * MIB
    data, sha = _blob(fakehub, "direct", size)
    status, _, body = request("GET", proxy.url + "/alice/direct/resolve/main/w.safetensors")
    assert status == 200 and body == data
    samples = scrape(proxy.url)
    from_buffers, from_spool = value(samples, SENT, source="buffer"), value(samples, SENT, source="spool")
    # Everything after the probe's part came in the one stream; the client was sent it from the buffers it
    # arrived in (a reader that fell behind them would be sent the rest from the file: most, not all).
    assert from_buffers >= size // 2 and from_buffers + from_spool <= size
    blob = _stored(proxy, sha)
    # Its whole pages went to the disk with direct I/O: the page cache holds little more than the probe's part
    # (written through it). Checked before the file is read back below, which brings it in.
    assert _resident_bytes(blob) <= size // 4
    assert _sha256(blob) == sha


def test_direct_writes_switched_off_send_from_the_page_cache(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy(**FAST, fill_direct_writes="false")
    size = 8 * MIB
    data, sha = _blob(fakehub, "buffered", size)
    status, _, body = request("GET", proxy.url + "/alice/buffered/resolve/main/w.safetensors")
    assert status == 200 and body == data
    samples = scrape(proxy.url)
    assert value(samples, SENT, source="buffer") == value(samples, SENT, source="spool") == 0
    assert _sha256(_stored(proxy, sha)) == sha


def test_a_slow_reader_does_not_hold_up_the_fast_fill(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    """The stream's writer waits a while for a reader that has not sent a buffer yet, then lets it go (it is sent
    the rest from the file): the fill completes while the slow client is still near its start."""
    proxy = make_proxy(**FAST)
    size = 64 * MIB
    data, sha = _blob(fakehub, "slowreader", size)
    got = bytearray()
    started, hurry = threading.Event(), threading.Event()

    def slow() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
        # A small receive window: the proxy's socket fills after a few MiB, not after the loopback's large buffers.
        conn.sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=60)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        try:
            conn.request("GET", "/alice/slowreader/resolve/main/w.safetensors")
            resp = conn.getresponse()
            assert resp.status == 200
            while chunk := resp.read(64 * 1024):
                got.extend(chunk)
                started.set()
                if not hurry.is_set():
                    time.sleep(0.1)
        finally:
            conn.close()

    reader = threading.Thread(target=slow)
    reader.start()
    try:
        assert started.wait(30)
        blob = _stored(proxy, sha)  # filled and verified without waiting for the slow client
        assert len(got) < size // 8  # (a writer waiting for it would have let the fill run only 32 MiB ahead)
        status, _, body = request("GET", proxy.url + "/alice/slowreader/resolve/main/w.safetensors")
        assert status == 200 and body == data
    finally:
        hurry.set()
        reader.join(60)
    assert bytes(got) == data
    assert _sha256(blob) == sha


def test_clients_of_two_workers_get_exact_bytes_of_one_direct_fill(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    """Requests that land in the worker not filling follow the spool file, whose pages are on the disk only."""
    proxy = make_proxy(workers="2", **FAST)
    size = 24 * MIB
    data, sha = _blob(fakehub, "twoworkers", size)
    fakehub.reset_counts()

    def get(_: int) -> bytes:
        status, _, body = request("GET", proxy.url + "/alice/twoworkers/resolve/main/w.safetensors")
        assert status == 200
        return body

    with ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(get, range(6)))
    assert all(body == data for body in bodies)
    assert fakehub.blob_bytes[sha] <= 1.02 * size
    assert _sha256(_stored(proxy, sha)) == sha
