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
from tests.helpers import ROOT, ProxyProcess, request, wait_until


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


def test_prefetch_ls_and_statistics(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy(maintenance_interval="0.3")
    out = cache_cli(proxy.data_dir, "prefetch", "alice/files", "--include", "*.json", "--include", "sub dir/*",
                    "--exclude", "*.bin", "--server", proxy.url, "--json")
    result = json.loads(out.stdout)
    assert result["files"] == 3  # config.json, and the two files under "sub dir"
    # The same progress as sync: totals, speed and ETA (plain lines when not on a terminal), a line per file.
    assert "147 B of 147 B (100%)" in out.stderr and "B/s, eta" in out.stderr and "config.json" in out.stderr
    assert "2880321" not in out.stderr and len(out.stderr.splitlines()) < 10
    for _ in range(4):
        assert request("GET", proxy.url + "/alice/files/resolve/main/config.json")[0] == 200
    assert wait_until(lambda: ls(proxy.data_dir)["model:alice/files"]["hits"] >= 5)
    row = ls(proxy.data_dir)["model:alice/files"]
    assert row["files_cached"] == 3 and "main" in row["refs"] and row["last_access"] > time.time() - 60
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
    assert wait_until(lambda: stored() <= budget)
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
    assert wait_until(blob.exists)
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


def test_prefetch_sends_a_token(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy(anonymous_access="off")
    from tests.helpers import admin_json

    token = admin_json(proxy.data_dir, "bootstrap")["token"]
    refused = cache_cli(proxy.data_dir, "prefetch", "alice/files", "--include", "*.json", "--server", proxy.url,
                        check=False)
    assert refused.returncode == 1 and "401" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    env_token = cache_cli(proxy.data_dir, "prefetch", "alice/files", "--include", "*.json", "--server", proxy.url,
                          "--json", "--token", token)
    assert json.loads(env_token.stdout)["files"] == 1


def test_commands_fail_in_one_line_and_read_commands_create_nothing(tmp_path: Path, pg_url: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["ls"], ["ls", "--repo-type", "dataset"], ["verify"], ["purge", "alice/x"]):
        proc = cache_cli(empty, *args, check=False)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        assert "no hubproxy database" in proc.stderr
    assert list(empty.iterdir()) == []  # nothing created, nothing migrated
    missing = cache_cli(tmp_path / "nowhere", "ls", check=False)
    assert missing.returncode == 1 and "no hubproxy data dir" in missing.stderr
    assert not (tmp_path / "nowhere").exists()
    # A data dir whose index lives in PostgreSQL: a command without database_url says so, and makes no SQLite.
    from tests.helpers import hubproxy_cli

    pg_dir = tmp_path / "pg"
    hubproxy_cli(pg_dir, "db", "upgrade", database_url=pg_url)
    assert (pg_dir / "database.json").exists() and not (pg_dir / "hubproxy.db").exists()
    for args in (["cache", "ls"], ["admin", "user-list"], ["admin", "bootstrap"]):
        proc = hubproxy_cli(pg_dir, *args, check=False)
        assert proc.returncode == 1 and "database_url" in proc.stderr and "Traceback" not in proc.stderr, args
        assert not (pg_dir / "hubproxy.db").exists()
    assert hubproxy_cli(pg_dir, "cache", "ls", "--json", database_url=pg_url).stdout.strip() == "[]"
    # An unreachable database: one line, exit 1.
    down = hubproxy_cli(tmp_path / "down", "admin", "bootstrap",
                        database_url="postgresql://postgres@127.0.0.1:9/none", check=False)
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1 and "Traceback" not in down.stderr
