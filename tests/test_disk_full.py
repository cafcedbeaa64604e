"""A full disk: too-large files pass through uncached; a disk that fills mid-fill aborts it cleanly."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakehub import FakeHub
from tests.helpers import request


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root, as on CI)."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


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


def test_disk_filling_mid_fill(make_proxy, fakehub: FakeHub, tmp_path: Path, small_disk: Path) -> None:  # noqa: ANN001
    data_dir = small_disk / "data"
    proxy = make_proxy(data_dir=data_dir, database_url=f"sqlite:///{tmp_path / 'index.db'}")
    small = proxy.url + "/alice/files/resolve/main/config.json"
    status, _, cached = request("GET", small)
    assert status == 200
    data = os.urandom(3 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/filling", {"w.safetensors": data})
    fakehub.faults.trickle[sha] = (128 * 1024, 0.05)
    ballast = small_disk / "ballast"

    def fill_the_disk() -> None:
        while not (data_dir / "tmp" / f"{sha}.part").exists():
            time.sleep(0.02)
        with open(ballast, "wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()

    threading.Thread(target=fill_the_disk, daemon=True).start()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.request("GET", "/alice/filling/resolve/main/w.safetensors")
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()
    assert list((data_dir / "tmp").iterdir()) == []
    assert sha not in _stored(data_dir)
    assert "No space left" in proxy.log() or "Errno 28" in proxy.log()
    status, _, again = request("GET", small)  # hits keep being served
    assert status == 200 and again == cached
    ballast.unlink()
    fakehub.faults.trickle.pop(sha)
    status, _, body = request("GET", proxy.url + "/alice/filling/resolve/main/w.safetensors")
    assert status == 200 and body == data
