"""The managed cache: prefetch, ls, pin, eviction to a budget, purge, verify; via ``hubproxy cache``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.fakehub import FakeHub
from tests.helpers import ROOT, ProxyProcess, request


def cache_cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBPROXY_")}
    proc = subprocess.run([sys.executable, "-m", "hubproxy", "cache", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"hubproxy cache {args} failed: {proc.stdout}\n{proc.stderr}")
    return proc


def ls(data_dir: Path) -> dict[str, dict]:
    rows = json.loads(cache_cli(data_dir, "ls", "--json").stdout)
    return {f"{r['repo_type']}:{r['repo_id']}": r for r in rows}


def _blob_path(proxy: ProxyProcess, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return proxy.data_dir / "blobs" / sha[:2] / sha


def _wait(predicate, timeout: float = 10) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_prefetch_ls_and_statistics(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy(maintenance_interval="0.3")
    out = cache_cli(proxy.data_dir, "prefetch", "alice/files", "--include", "*.json", "--include", "sub dir/*",
                    "--exclude", "*.bin", "--server", proxy.url, "--json")
    result = json.loads(out.stdout)
    assert result["files"] == 3  # config.json, and the two files under "sub dir"
    assert "[3/3]" in out.stderr and "MB/s" in out.stderr  # progress lines
    for _ in range(4):
        assert request("GET", proxy.url + "/alice/files/resolve/main/config.json")[0] == 200
    assert _wait(lambda: ls(proxy.data_dir)["model:alice/files"]["hits"] >= 5)
    row = ls(proxy.data_dir)["model:alice/files"]
    assert row["files_cached"] == 3 and row["refs"] == ["main"] and row["last_access"] > time.time() - 60
    text = cache_cli(proxy.data_dir, "ls").stdout
    assert "alice/files" in text and "main" in text
    missing = cache_cli(proxy.data_dir, "prefetch", "alice/nope", "--server", proxy.url, check=False)
    assert missing.returncode == 1 and "RepoNotFound" in missing.stderr


def test_eviction_keeps_pinned_and_in_use(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    budget = 5 * 1024 * 1024
    proxy = make_proxy(cache_max_bytes="5M", maintenance_interval="0.3")
    keep = os.urandom(2 * 1024 * 1024)
    fakehub.add_commit("model", "alice/keep", {"w.safetensors": keep})
    cache_cli(proxy.data_dir, "prefetch", "alice/keep", "--server", proxy.url)
    cache_cli(proxy.data_dir, "pin", "alice/keep")
    assert ls(proxy.data_dir)["model:alice/keep"]["pinned"] is True
    others = []
    for i in range(4):
        data = os.urandom(1536 * 1024)
        fakehub.add_commit("model", f"alice/churn{i}", {"w.safetensors": data})
        status, _, body = request("GET", f"{proxy.url}/alice/churn{i}/resolve/main/w.safetensors")
        assert status == 200 and body == data
        others.append(data)
        time.sleep(0.05)
    stored = lambda: sum(p.stat().st_size for p in (proxy.data_dir / "blobs").rglob("*") if p.is_file())  # noqa: E731
    assert _wait(lambda: stored() <= budget)
    assert _blob_path(proxy, keep).exists()  # pinned
    assert not _blob_path(proxy, others[0]).exists()  # least recently used went first
    # An evicted file is simply filled again.
    status, _, body = request("GET", proxy.url + "/alice/churn0/resolve/main/w.safetensors")
    assert status == 200 and body == others[0]
    cache_cli(proxy.data_dir, "unpin", "alice/keep")
    assert ls(proxy.data_dir)["model:alice/keep"]["pinned"] is False


def test_purge_and_refetch(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy()
    data = os.urandom(300_000)
    fakehub.add_commit("model", "alice/purged_1", {"w.safetensors": data, "config.json": b"{}"})
    cache_cli(proxy.data_dir, "prefetch", "alice/purged_1", "--server", proxy.url)
    assert _blob_path(proxy, data).exists()
    out = json.loads(cache_cli(proxy.data_dir, "purge", "alice/purged_1", "--json").stdout)
    assert out["blobs"] == 2 and out["bytes"] == len(data) + 2
    assert not _blob_path(proxy, data).exists()
    assert "model:alice/purged_1" not in ls(proxy.data_dir)
    status, _, body = request("GET", proxy.url + "/alice/purged_1/resolve/main/w.safetensors")
    assert status == 200 and body == data


def test_verify_quarantines_a_damaged_blob(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy()
    data = os.urandom(200_000)
    fakehub.add_commit("model", "alice/scrub", {"w.safetensors": data})
    url = proxy.url + "/alice/scrub/resolve/main/w.safetensors"
    assert request("GET", url)[2] == data
    blob = _blob_path(proxy, data)
    assert _wait(blob.exists)
    assert cache_cli(proxy.data_dir, "verify").returncode == 0
    damaged = bytearray(blob.read_bytes())
    damaged[1000] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    result = cache_cli(proxy.data_dir, "verify", "--json", check=False)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["corrupt"] == [blob.name] and (proxy.data_dir / "quarantine" / blob.name).exists()
    assert not blob.exists()
    status, _, body = request("GET", url)  # gone from the store: filled again from the upstream
    assert status == 200 and body == data
