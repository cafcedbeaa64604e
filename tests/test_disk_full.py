"""A full disk: too-large files pass through uncached; a disk that fills mid-fill aborts it cleanly."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakehub import FakeHub
from tests.helpers import get_cut_before_the_end, request, wait_until


def _mount(args: list[str], mount: Path) -> None:
    proc = subprocess.run([*args, str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {proc.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, which supports fallocate(2) (needs root, as on CI)."""
    mount = tmp_path / "small"
    mount.mkdir()
    _mount(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs"], mount)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk_without_fallocate(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB ext2 image on a loop device: ext2 cannot reserve space up front, like NFS (needs root)."""
    image, mount = tmp_path / "ext2.img", tmp_path / "small"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(8 * 1024 * 1024)
    made = subprocess.run(["mkfs.ext2", "-q", "-F", str(image)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make an ext2 filesystem here: {made.stderr.decode().strip()}")
    _mount(["mount", "-o", "loop", str(image)], mount)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill_the_disk(ballast: Path) -> None:
    """Write zeros to ``ballast`` until the filesystem is full (in a thread)."""

    def fill() -> None:
        with open(ballast, "wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()

    threading.Thread(target=fill, daemon=True).start()


def _stored(data_dir: Path) -> list[str]:
    return [p.name for p in (data_dir / "blobs").rglob("*") if p.is_file()]


def test_file_larger_than_free_space_passes_through(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                    small_disk: Path) -> None:
    data_dir = small_disk / "data"
    proxy = make_proxy(data_dir=data_dir, database_url=f"sqlite:///{tmp_path / 'index.db'}")
    big = os.urandom(6 * 1024 * 1024)
    fakehub.add_commit("model", "alice/too-big", {"w.safetensors": big})
    status, _, body = request("GET", proxy.url + "/alice/too-big/resolve/main/w.safetensors")
    assert status == 200 and body == big
    assert hashlib.sha256(big).hexdigest() not in _stored(data_dir)
    assert list((data_dir / "tmp").iterdir()) == []


def test_a_file_passed_through_is_verified_before_its_last_byte(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                                small_disk: Path) -> None:
    """Uncached is not unverified: an answer that reaches the last byte is hashed over the whole blob (a range
    is fetched from byte 0 for that), and cut if the upstream's bytes are wrong; the cut client's resume then
    starts over, as after a failed fill."""
    data_dir = small_disk / "data"
    proxy = make_proxy(data_dir=data_dir, database_url=f"sqlite:///{tmp_path / 'index.db'}")
    big = os.urandom(6 * 1024 * 1024)
    sha = hashlib.sha256(big).hexdigest()
    fakehub.add_commit("model", "alice/too-big-bad", {"w.safetensors": big})
    path = "/alice/too-big-bad/resolve/main/w.safetensors"
    fakehub.reset_counts()
    status, _, body = request("GET", proxy.url + path, {"Range": "bytes=5000000-"})
    assert status == 206 and body == big[5000000:]
    with fakehub._lock:
        asked = [h.get("Range", "bytes=0-") for m, p, h in fakehub.requests if m == "GET" and sha in p]
    assert asked and all(r.startswith("bytes=0-") for r in asked)  # hashed from the first byte
    assert fakehub.blob_bytes[sha] >= len(big) - 1024 * 1024  # the whole blob came (the count may lag a piece)
    fakehub.faults.corrupt.add(sha)
    assert get_cut_before_the_end(proxy.port, path, len(big)) < len(big)
    fakehub.faults.corrupt.discard(sha)
    status, _, body = request("GET", proxy.url + path, {"Range": "bytes=1000-"})  # the cut client resumes
    assert status == 200 and body == big  # whole: what it holds may be wrong
    assert sha not in _stored(data_dir)


def test_disk_filling_mid_fill_where_space_cannot_be_reserved(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                               small_disk_without_fallocate: Path) -> None:
    """On a filesystem without fallocate (NFS, ext2) a disk that fills mid-fill cuts the answer, keeps nothing."""
    data_dir = small_disk_without_fallocate / "data"
    proxy = make_proxy(data_dir=data_dir, database_url=f"sqlite:///{tmp_path / 'index.db'}")
    small = proxy.url + "/alice/files/resolve/main/config.json"
    status, _, cached = request("GET", small)
    assert status == 200
    data = os.urandom(3 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/filling", {"w.safetensors": data})
    fakehub.faults.trickle[sha] = (128 * 1024, 0.05)
    ballast = small_disk_without_fallocate / "ballast"
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.request("GET", "/alice/filling/resolve/main/w.safetensors")
    resp = conn.getresponse()
    assert resp.status == 200
    assert len(resp.read(64 * 1024)) == 64 * 1024  # the fill is under way: now the disk fills up
    _fill_the_disk(ballast)
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    assert wait_until(lambda: list((data_dir / "tmp").iterdir()) == [])  # the failed fill's spool file goes
    assert sha not in _stored(data_dir)
    assert "No space left" in proxy.log() or "Errno 28" in proxy.log()
    status, _, again = request("GET", small)  # hits keep being served
    assert status == 200 and again == cached
    ballast.unlink()
    fakehub.faults.trickle.pop(sha)
    status, _, body = request("GET", proxy.url + "/alice/filling/resolve/main/w.safetensors")
    assert status == 200 and body == data


def test_a_fill_keeps_the_space_it_reserved(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                            small_disk: Path) -> None:
    """Where fallocate works the spool file is reserved whole before the first byte: a disk filling up
    mid-fill does not break it."""
    data_dir = small_disk / "data"
    proxy = make_proxy(data_dir=data_dir, database_url=f"sqlite:///{tmp_path / 'index.db'}")
    data = os.urandom(3 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/filling", {"w.safetensors": data})
    fakehub.faults.trickle[sha] = (128 * 1024, 0.05)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.request("GET", "/alice/filling/resolve/main/w.safetensors")
    resp = conn.getresponse()
    assert resp.status == 200
    head = resp.read(64 * 1024)
    _fill_the_disk(small_disk / "ballast")
    assert head + resp.read() == data
    conn.close()
    assert wait_until(lambda: sha in _stored(data_dir))  # stored just after the last byte was released


def test_a_disk_full_when_the_fill_reserves_passes_through(make_proxy, fakehub: FakeHub, tmp_path: Path,  # noqa: ANN001
                                                           small_disk: Path) -> None:
    """Six cold blobs that each fit the free space but not all together, asked for at once: a request that
    passed the room check but whose fill then cannot reserve its space (in most runs some do) serves its
    client from the upstream uncached, like one that failed the check, never a 502."""
    data_dir = small_disk / "data"
    proxy = make_proxy(data_dir=data_dir, database_url=f"sqlite:///{tmp_path / 'index.db'}")
    blobs = {f"w{i}.safetensors": os.urandom(1536 * 1024) for i in range(6)}
    fakehub.add_commit("model", "alice/crowded", blobs)
    answers: dict[str, tuple[int, bytes]] = {}

    def get(name: str) -> None:
        status, _, body = request("GET", proxy.url + f"/alice/crowded/resolve/main/{name}")
        answers[name] = (status, body)

    threads = [threading.Thread(target=get, args=(name,)) for name in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {name: (200, data) for name, data in blobs.items()}
    # A verified fill releases its last byte before it moves its spool file into the store.
    assert wait_until(lambda: not list((data_dir / "tmp").glob("*.part")))
    stored = _stored(data_dir)
    assert 1 <= sum(hashlib.sha256(data).hexdigest() in stored for data in blobs.values()) <= 2
