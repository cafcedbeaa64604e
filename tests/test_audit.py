"""The download audit trail: one event per download with the bytes really sent; spooled when the DB is away."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from huggingface_hub import hf_hub_download

from tests.fakehub import FakeHub
from tests.helpers import ROOT, TcpForwarder, request
from tests.test_database import pg_url  # noqa: F401 - fixture


def audit(data_dir: Path, *args: str, database_url: str | None = None) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBPROXY_")}
    if database_url:
        env["HUBPROXY_DATABASE_URL"] = database_url
    proc = subprocess.run([sys.executable, "-m", "hubproxy", "admin", "audit", "--data-dir", str(data_dir),
                           "--format", "jsonl", "--limit", "1000", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def _wait_events(data_dir: Path, n: int, **kw: str) -> list[dict]:
    deadline = time.monotonic() + 15
    while True:
        events = audit(data_dir, **kw) if not kw else audit(data_dir, database_url=kw["database_url"])
        if len(events) >= n or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def _aborted_get(port: int, path: str, read: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = 0
    while got < read:
        got += len(sock.recv(65536))
    sock.close()


def test_every_download_is_recorded_with_bytes_sent(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    proxy = make_proxy(trusted_proxies="127.0.0.1")
    token = json.loads(subprocess.run(
        [sys.executable, "-m", "hubproxy", "admin", "bootstrap", "--data-dir", str(proxy.data_dir), "--json"],
        capture_output=True, text=True, cwd=ROOT, check=True).stdout)["token"]
    big = os.urandom(32 * 1024 * 1024)
    fakehub.add_commit("model", "alice/audited", {"big.safetensors": big, "config.json": b'{"x": 1}'})
    url = proxy.url + "/alice/audited/resolve/main/"
    hf_hub_download("alice/audited", "config.json", endpoint=proxy.url, cache_dir=tmp_path, token=token)
    assert request("GET", url + "big.safetensors")[0] == 200  # cold: a fill
    assert request("GET", url + "big.safetensors", {"Range": "bytes=10-1009"})[0] == 206
    assert request("GET", url + "big.safetensors", {"X-Forwarded-For": "203.0.113.9"})[0] == 200
    assert request("GET", url + "nope.json")[0] == 404
    _aborted_get(proxy.port, "/alice/audited/resolve/main/big.safetensors", 1024 * 1024)
    events = _wait_events(proxy.data_dir, 6)
    assert len(events) == 6
    by = sorted(events, key=lambda e: e["ts"])
    config, cold, ranged, forwarded, missing, aborted = by
    assert config["principal"] == "admin" and config["token_id"] == 1 and config["bytes_sent"] == 8
    assert config["status"] == 200 and config["commit"] and "hf_hub" in config["user_agent"]
    assert (cold["bytes_sent"], cold["cache"], cold["complete"]) == (len(big), "miss", True)
    assert (ranged["bytes_sent"], ranged["status"], ranged["range"]) == (1000, 206, "bytes=10-1009")
    assert ranged["cache"] in ("hit", "miss")  # "miss" while the verified fill is still being made durable
    assert forwarded["client_ip"] == "203.0.113.9" and forwarded["principal"] is None
    assert (missing["status"], missing["bytes_sent"]) == (404, 0)
    assert aborted["complete"] is False and 1024 * 1024 <= aborted["bytes_sent"] < len(big)
    assert all(e["client_ip"] == "127.0.0.1" for e in (config, cold, ranged))
    assert audit(proxy.data_dir, "--user", "admin")[0]["path"] == "config.json"
    csv_out = subprocess.run([sys.executable, "-m", "hubproxy", "admin", "audit", "--data-dir", str(proxy.data_dir),
                              "--format", "csv"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert csv_out.splitlines()[0].startswith("ts,principal,token_id") and len(csv_out.splitlines()) == 7


def test_untrusted_forwarded_for_is_ignored(proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    assert request("GET", proxy.url + "/alice/files/resolve/main/config.json", {"X-Forwarded-For": "6.6.6.6"})[0] == 200
    events = _wait_events(proxy.data_dir, 1)
    assert events[0]["client_ip"] == "127.0.0.1"


def test_events_are_spooled_while_the_database_is_away(make_proxy, fakehub: FakeHub, pg_url: str) -> None:  # noqa: ANN001, F811
    relay = TcpForwarder(("127.0.0.1", 5432))
    db = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    proxy = make_proxy(database_url=db)
    hot = proxy.url + "/alice/files/resolve/main/config.json"
    assert request("GET", hot)[0] == 200
    assert len(_wait_events(proxy.data_dir, 1, database_url=pg_url)) == 1
    relay.cut()
    try:
        for _ in range(3):
            assert request("GET", hot)[0] == 200  # known in memory: served with the database away
        spool = proxy.data_dir / "audit-spool.jsonl"
        deadline = time.monotonic() + 20
        while not (spool.exists() and len(spool.read_text().splitlines()) == 3) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(spool.read_text().splitlines()) == 3
    finally:
        relay.restore()
    assert len(_wait_events(proxy.data_dir, 4, database_url=pg_url)) == 4
    assert not (proxy.data_dir / "audit-spool.jsonl").exists()
