"""Operations: /metrics, /ready, JSON logs with request ids, graceful SIGTERM, configuration errors."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.fakehub import FakeHub
from tests.helpers import ROOT, hubproxy_cli, request, scrape, value, wait_until


def test_metrics_ready_and_logs(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy(maintenance_interval="0.3")
    repo = fakehub.repos[("model", "alice/files")]
    path, f = next((p, f) for p, f in repo.commits[repo.branches["main"]].files.items() if f.blob.size > 1000)
    url = f"{proxy.url}/alice/files/resolve/main/{path}"
    before = scrape(proxy.url)
    unknown_token = "hf_" + "Q" * 34  # served as anonymous: must never reach the log
    for attempt in range(2):  # cold, then (once the fill is committed) hot
        status, _, body = request("GET", url, {"Authorization": f"Bearer {unknown_token}"})
        assert status == 200 and body == f.blob.data
        deadline = time.monotonic() + 10
        while attempt == 0 and value(scrape(proxy.url), "hubproxy_fill_duration_seconds_count", result="ok") < 1:
            assert time.monotonic() < deadline, "the fill never finished"
            time.sleep(0.05)
    # A token pasted into a URL by mistake is masked in the access log too.
    assert request("GET", f"{proxy.url}/alice/{unknown_token}/resolve/main/x")[0] in (400, 401, 404)
    status, headers, _ = request("GET", proxy.url + "/alice/files/resolve/main/missing.txt",
                                 {"X-Request-Id": "trace-me-42"})
    assert status == 404 and headers["x-request-id"] == "trace-me-42"
    deadline = time.monotonic() + 10
    while value(after := scrape(proxy.url), "hubproxy_cache_size_bytes") < f.blob.size:
        assert time.monotonic() < deadline, "cache size never reported"
        time.sleep(0.2)
    size = f.blob.size
    assert value(after, "hubproxy_requests_total", route="resolve", method="GET", status="200") - \
        value(before, "hubproxy_requests_total", route="resolve", method="GET", status="200") == 2
    assert value(after, "hubproxy_requests_total", route="resolve", method="GET", status="404") >= 1
    assert value(after, "hubproxy_served_bytes_total", cache="miss") == size
    assert value(after, "hubproxy_served_bytes_total", cache="hit") == size
    assert value(after, "hubproxy_zero_copy_bytes_total") == 2 * size  # the fill's bytes and the stored ones
    assert value(after, "hubproxy_upstream_bytes_total") >= size
    assert value(after, "hubproxy_fill_duration_seconds_count", result="ok") == 1
    assert value(after, "hubproxy_fills_in_flight") == 0
    assert value(after, "hubproxy_time_to_first_byte_seconds_count", route="resolve") >= 3
    assert ("hubproxy_audit_queue_depth", ()) in after and ("hubproxy_evictions_total", ()) in after
    status, _, body = request("GET", proxy.url + "/ready")
    assert status == 200 and json.loads(body) == {"status": "ready", "checks": {"database": "ok", "store": "ok"}}
    # JSON logs: one object per line; the access line of the 404 carries its request id; no token anywhere.
    deadline = time.monotonic() + 5  # access lines are written in batches, within 0.2 s
    while "trace-me-42" not in proxy.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(line) for line in proxy.log().splitlines() if line.startswith("{")]
    assert lines and len(lines) == len([x for x in proxy.log().splitlines() if x.strip()])
    access = [e for e in lines if e["logger"] == "hubproxy.access" and e.get("request_id") == "trace-me-42"]
    assert access and access[0]["status"] == 404 and access[0]["path"].endswith("missing.txt")
    assert all(e.get("request_id") for e in lines if e["logger"] == "hubproxy.access")
    # Bytes sent zero-copy are counted in the access log like any others, with a time to first byte.
    gets = [e for e in lines if e["logger"] == "hubproxy.access" and e["path"].endswith(path) and e["method"] == "GET"]
    assert [(e["status"], e["bytes"], e["cache"]) for e in gets] == [(200, size, "miss"), (200, size, "hit")]
    assert all(0 < e["ttfb_ms"] <= e["duration_ms"] for e in gets)
    assert unknown_token not in proxy.log() and "hf_upstream_secret_token" not in proxy.log()


def test_upstream_errors_are_counted(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    from tests.helpers import free_port

    proxy = make_proxy(upstream=f"http://127.0.0.1:{free_port()}")
    assert request("GET", proxy.url + "/api/models/alice/files")[0] == 502
    assert value(scrape(proxy.url), "hubproxy_upstream_errors_total", kind="unreachable") >= 1


def test_metrics_sum_over_workers(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy(workers="2")
    sent = 0
    while sent < 12 or len([n for n in per_worker_heads(proxy.data_dir).values() if n]) < 2:
        assert sent < 200, f"one worker answered every request: {per_worker_heads(proxy.data_dir)}"
        assert request("HEAD", proxy.url + "/alice/files/resolve/main/config.json")[0] == 200  # a new connection
        sent += 1
    # Both workers answered some; a scrape of either one reports them all.
    # A request is counted just after its last byte is sent: allow the last one a moment to land.
    deadline = time.monotonic() + 5
    while (seen := value(scrape(proxy.url), "hubproxy_requests_total", route="resolve", method="HEAD",
                         status="200")) < sent and time.monotonic() < deadline:
        time.sleep(0.1)
    assert seen == sent
    assert sum(per_worker_heads(proxy.data_dir).values()) == sent


def per_worker_heads(data_dir: Path) -> dict[str, float]:
    """Resolve HEADs each worker counted, read from its own prometheus_client multiprocess file."""
    import shutil
    import tempfile

    from prometheus_client import CollectorRegistry, multiprocess

    counts = {}
    for db in (data_dir / "prometheus-multiproc").glob("counter_*.db"):
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(db, alone)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=alone)
            counts[db.name] = registry.get_sample_value(
                "hubproxy_requests_total", {"route": "resolve", "method": "HEAD", "status": "200"}) or 0.0
    return counts


def test_sigterm_drains_downloads_and_flushes_audit(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    data = os.urandom(6 * 1024 * 1024)
    fakehub.add_commit("model", "alice/drain", {"model.safetensors": data})
    fakehub.throttle_bps = 2 * 1024 * 1024  # the cold download takes about 3 s (longer on a loaded machine)
    proxy = make_proxy(shutdown_timeout="120")
    got: dict[str, object] = {}

    def download() -> None:
        with urllib.request.urlopen(f"{proxy.url}/alice/drain/resolve/main/model.safetensors", timeout=60) as resp:
            got["first"] = resp.read(65536)
            got["rest"] = resp.read()

    worker = threading.Thread(target=download)
    worker.start()
    deadline = time.monotonic() + 20
    while "first" not in got:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert proxy.proc is not None
    proxy.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # No new connections once draining...
    try:
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
        refused = False
    except OSError:
        refused = True
    assert refused, "hubproxy still accepted connections after SIGTERM"
    # ...but the download in flight finishes, whole and right (waits are generous: a loaded machine is slow,
    # and what is checked is the outcome, not the time).
    worker.join(150)
    assert not worker.is_alive() and got["first"] + got["rest"] == data  # type: ignore[operator]
    proxy.proc.wait(150)
    log = proxy.log()
    assert "audit queue flushed" in log
    events = json.loads(subprocess.run(
        [sys.executable, "-m", "hubproxy", "admin", "audit", "--json", "--repo", "alice/drain", "--data-dir",
         str(proxy.data_dir)], capture_output=True, text=True, cwd=ROOT, check=True).stdout)
    assert [(e["bytes_sent"], e["complete"]) for e in events] == [(len(data), True)]


def test_bad_settings_are_named_at_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBPROXY_")}
    for name, bad in (("LOG_FORMAT", "xml"), ("SHUTDOWN_TIMEOUT", "-1"), ("PORT", "70000"), ("STORE", "s3")):
        proc = subprocess.run([sys.executable, "-m", "hubproxy", "serve", "--data-dir", str(tmp_path)],
                              env={**env, f"HUBPROXY_{name}": bad}, capture_output=True, text=True, cwd=ROOT,
                              timeout=30)
        setting = "s3_bucket" if name == "STORE" else name.lower()
        assert proc.returncode == 2 and f"'{setting}'" in proc.stderr, (name, proc.stderr)


def worker_pids(parent: int) -> list[int]:
    """The worker processes a multi-worker ``hubproxy serve`` (the parent) runs now (not its resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_killed_workers_leave_no_stale_gauges(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    """Workers killed mid-fill (OOM, a hung worker's kill) are replaced by the server; the sums of a scrape must
    not keep their last gauge values: no fill stays "in flight" and the cache's size follows the store, while their
    counters still count."""
    small, slow = os.urandom(1024 * 1024), os.urandom(16 * 1024 * 1024)
    fakehub.add_commit("model", "alice/gauges", {"small.safetensors": small, "slow.safetensors": slow})
    proxy = make_proxy(workers="2", maintenance_interval="0.3")
    url = proxy.url + "/alice/gauges/resolve/main/"
    assert request("GET", url + "small.safetensors")[2] == small
    assert wait_until(lambda: value(scrape(proxy.url), "hubproxy_cache_size_bytes") == len(small), timeout=20)
    fakehub.throttle_bps = 256 * 1024  # 16 MiB at that per connection: the fill runs for seconds

    def cut_short() -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            request("GET", url + "slow.safetensors")

    client = threading.Thread(target=cut_short)
    client.start()
    assert wait_until(lambda: value(scrape(proxy.url), "hubproxy_fills_in_flight") == 1, timeout=20)
    counted = value(scrape(proxy.url), "hubproxy_requests_total", route="resolve", method="GET", status="200")
    assert proxy.proc is not None
    killed = worker_pids(proxy.proc.pid)
    assert len(killed) == 2
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    client.join(30)
    fakehub.throttle_bps = None

    def replaced() -> bool:
        pids = worker_pids(proxy.proc.pid)  # type: ignore[union-attr]
        return len(pids) == 2 and not set(pids) & set(killed) and request("GET", proxy.url + "/health")[0] == 200

    assert wait_until(replaced, timeout=30)
    assert wait_until(lambda: value(scrape(proxy.url), "hubproxy_fills_in_flight") == 0, timeout=10), \
        value(scrape(proxy.url), "hubproxy_fills_in_flight")
    # The dead workers' counters stay in the sums (a counter must never go down).
    assert value(scrape(proxy.url), "hubproxy_requests_total", route="resolve", method="GET", status="200") >= counted
    # The store shrinks while the dead workers' last report of its size was larger: the size follows the store.
    hubproxy_cli(proxy.data_dir, "cache", "purge", "alice/gauges")
    assert wait_until(lambda: value(scrape(proxy.url), "hubproxy_cache_size_bytes") == 0, timeout=20), \
        value(scrape(proxy.url), "hubproxy_cache_size_bytes")


def _listening_sockets(port: int) -> int:
    """Sockets listening on ``port`` (any address), from ``/proc/net/tcp`` and ``tcp6``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def test_each_worker_accepts_on_a_socket_of_its_own(make_proxy) -> None:  # noqa: ANN001
    """Workers that only share the parent's socket take connections in bursts: the first woken accepts every one
    pending, and 32 connections opened at once all went to one of two workers in about one run in ten. Each
    worker also listens on a socket of its own in the port's ``SO_REUSEPORT`` group, which the kernel spreads
    connections over; a replaced worker binds its own again, and with every worker down a new connection waits in
    the parent's queue instead of being refused."""
    proxy = make_proxy(workers="2")
    assert proxy.proc is not None
    assert wait_until(lambda: _listening_sockets(proxy.port) == 3, timeout=10), _listening_sockets(proxy.port)
    killed = worker_pids(proxy.proc.pid)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in killed), timeout=10)
    # (A connection that reached a worker's own socket in the instant before it died is reset, as with any
    # SO_REUSEPORT group; one made now waits for a replacement in the parent's queue.)
    status, _, _ = request("GET", proxy.url + "/health")
    assert status == 200
    assert wait_until(lambda: _listening_sockets(proxy.port) == 3, timeout=30), _listening_sockets(proxy.port)
