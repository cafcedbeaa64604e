"""The download audit trail: every attempt, with its outcome and the bytes really sent; journaled on disk first."""

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
from tests.helpers import ROOT, request, wait_until
from tests.relays import TcpForwarder


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


def test_events_wait_in_the_journal_while_the_database_is_away(make_proxy, fakehub: FakeHub, pg_url: str) -> None:  # noqa: ANN001
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
        time.sleep(2.5)  # two writer rounds fail meanwhile
        assert len(audit(proxy.data_dir, database_url=pg_url)) == 1
        journal = "".join(p.read_text() for p in (proxy.data_dir / "audit").glob("*.jsonl"))
        assert journal.count('"k":"e"') >= 3
    finally:
        relay.restore()
    events = _wait_events(proxy.data_dir, 4, database_url=pg_url)
    assert len(events) == 4 and {e["outcome"] for e in events} == {"complete"}
    assert len({e["event_id"] for e in events}) == 4


def _journaled_ends(data_dir: Path, path: str) -> int:
    lines = [line for f in (data_dir / "audit").glob("*.jsonl") for line in f.read_text().splitlines()]
    return sum(1 for line in lines if '"k":"e"' in line and f'"path":"{path}"' in line)


def test_a_killed_process_loses_no_event(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    """SIGKILL: finished downloads of the last second and a download in progress are all recorded after a restart."""
    data = os.urandom(8 * 1024 * 1024)
    fakehub.add_commit("model", "alice/killed-audit", {"big.safetensors": data})
    proxy = make_proxy(data_dir=tmp_path / "d")
    small = proxy.url + "/alice/files/resolve/main/config.json"
    assert request("GET", small)[0] == 200
    fakehub.throttle_bps = 1024 * 1024  # the big download takes about 8 s
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    sock.sendall(b"GET /alice/killed-audit/resolve/main/big.safetensors HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536)  # headers and the first bytes: the download is under way
    for _ in range(3):
        assert request("GET", small)[0] == 200
    # The client has its bytes a moment before the server has finished its answer (and journaled it).
    assert wait_until(lambda: _journaled_ends(proxy.data_dir, "config.json") >= 4)
    proxy.kill()  # within the writer's one-second batch: these events exist only in the journal
    sock.close()
    fakehub.throttle_bps = None
    restarted = make_proxy(data_dir=tmp_path / "d", port=proxy.port)
    events = _wait_events(restarted.data_dir, 5)
    by_path = sorted((e["path"], e["outcome"], e["complete"]) for e in events)
    assert by_path == [("big.safetensors", "interrupted", False)] + [("config.json", "complete", True)] * 4
    assert list((restarted.data_dir / "audit").glob("*.jsonl")) != []  # the restarted process's own journal only
    assert len(list((restarted.data_dir / "audit").glob("*.jsonl"))) == 1


def test_a_damaged_journal_line_blocks_nothing(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    """A truncated line (a writer killed mid-line) is skipped; events on either side of it are written."""
    data_dir = tmp_path / "d"
    (data_dir / "audit").mkdir(parents=True)
    good = {"ts": time.time(), "repo_type": "model", "repo_id": "alice/files", "path": "a.json", "status": 200,
            "bytes_sent": 5, "duration": 0.1, "complete": True, "outcome": "complete"}
    lines = [json.dumps({"k": "c", "id": "1" * 32, **good}), '{"k": "c", "id": "2222', json.dumps(
        {"k": "c", "id": "3" * 32, **good, "path": "b.json"})]
    (data_dir / "audit" / "deadhost-1-1-000000.jsonl").write_text("\n".join(lines) + "\n")
    legacy = json.dumps({**good, "path": "legacy.json", "principal": None, "token_id": None, "project": None,
                         "client_ip": None, "user_agent": "", "revision": "main", "commit": None, "range": None,
                         "cache": "hit"})
    (data_dir / "audit-spool.jsonl").write_text(legacy + "\n" + legacy[:40])  # the old spool, cut short
    proxy = make_proxy(data_dir=data_dir)
    assert request("GET", proxy.url + "/alice/files/resolve/main/config.json")[0] == 200
    events = _wait_events(data_dir, 4)
    assert sorted(e["path"] for e in events) == ["a.json", "b.json", "config.json", "legacy.json"]
    assert not (data_dir / "audit-spool.jsonl").exists()
    assert not (data_dir / "audit" / "deadhost-1-1-000000.jsonl").exists()
