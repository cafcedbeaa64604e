"""Malformed and oversized input gets a 4xx, never a 5xx or the process's memory; headers clients may
forge are believed only from trusted proxies; what answers without a token is exactly what is documented."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.fakehub import FakeHub
from tests.helpers import ROOT, ProxyProcess, free_port, request


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_malformed_numbers_and_huge_inputs_are_refused(proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    url = proxy.url + "/alice/files/resolve/main/config.json"
    assert request("GET", url)[0] == 200
    for method in ("GET", "HEAD"):
        for rng, expected in ((f"bytes={'9' * 5000}-", 416), (f"bytes=0-{'9' * 5000}", 206),
                              (f"bytes=-{'9' * 5000}", 206), ("bytes=\u0663-4".encode().decode("latin-1"), 400),
                              ("bytes=1-2,3-4", 400)):
            status, headers, _ = request(method, url, {"Range": rng})
            assert status == expected, (method, rng[:20], status)
    tree = proxy.url + "/api/models/alice/files/tree/main?cursor="
    for cursor in ("%C2%B2", "9" * 20, "-1", "1e5"):
        status, headers, _ = request("GET", tree + cursor)
        assert status == 400 and headers["x-error-code"] == "BadRequest", cursor
    before = rss_mb(proxy.proc.pid)
    big = b"paths=" + b"a" * (300 * 1024 * 1024)
    status, _, body = request("POST", proxy.url + "/api/models/alice/files/paths-info/main", {
        "Content-Type": "application/x-www-form-urlencoded"}, big)
    assert status == 413 and b"larger than" in body
    # A client that does not say how long its body is gets the same answer once it passes the limit.
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    sock.sendall(b"POST /api/models/alice/files/paths-info/main HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
    chunk = b"a" * (1 << 20)
    try:
        for _ in range(40):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass  # the server stopped reading: it has answered already
    assert b" 413 " in sock.recv(200)
    sock.close()
    # Headers: past 64 KiB a request is refused before it is parsed whole.
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    with contextlib.suppress(OSError):
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (50 * 1024 * 1024) + b"\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 431")
    sock.close()
    assert rss_mb(proxy.proc.pid) - before < 80
    assert request("GET", url)[0] == 200  # and the server is fine


def test_forwarded_headers_and_request_ids(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    forged = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    tree = "/api/models/alice/files/tree/main?recursive=true"
    untrusted = make_proxy(trusted_proxies="10.0.0.0/8", tree_page_size="2")
    status, headers, _ = request("GET", untrusted.url + tree, forged)
    assert status == 200 and headers["link"].startswith(f"<http://127.0.0.1:{untrusted.port}/")
    trusted = make_proxy(trusted_proxies="127.0.0.1", tree_page_size="2")
    status, headers, _ = request("GET", trusted.url + tree, forged)
    assert status == 200 and headers["link"].startswith("<https://evil.example/")
    token = "hf_" + "T" * 34
    status, headers, _ = request("GET", untrusted.url + "/alice/files/resolve/main/config.json",
                                 {"X-Request-Id": token})
    assert status == 200 and headers["x-request-id"] != token
    assert request("GET", untrusted.url + "/health", {"X-Request-Id": "ok-id.42"})[1]["x-request-id"] == "ok-id.42"
    time.sleep(0.5)
    assert token not in untrusted.log()


def test_logs_are_text_on_a_terminal_and_json_otherwise(tmp_path: Path, fakehub: FakeHub) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBPROXY_")}
    port = free_port()
    cmd = [sys.executable, "-m", "hubproxy", "serve", "--port", str(port), "--data-dir", str(tmp_path / "d"),
           "--upstream", fakehub.url]
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, cwd=ROOT)
    os.close(secondary)
    out = b""
    try:
        deadline = time.monotonic() + 20
        while b"ready" not in out and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.5)[0]:
                out += os.read(primary, 65536)
        time.sleep(0.3)
        # Listening on loopback, by default.
        while request("GET", f"http://127.0.0.1:{port}/health")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(20)
        os.close(primary)
    lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
    assert lines and not any(line.lstrip().startswith("{") for line in lines), lines[:3]
    assert any(" INFO " in line for line in lines)
    piped = subprocess.Popen(cmd[:5] + [str(free_port())] + cmd[6:], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        first = piped.stdout.readline() if piped.stdout else b""
    finally:
        piped.terminate()
        piped.wait(20)
    assert json.loads(first)["level"] in ("info", "warning")


def test_bad_input_never_reaches_upstream(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    """Raw request targets, as uvicorn parses them (an HTTP client library would normalize some away)."""
    bad = [
        "/alice/files/resolve/main/../config.json", "/alice/files/resolve/main/%2e%2e/config.json",
        "/alice/files/resolve/main/sub%2F..%2F..%2Fetc%2Fpasswd", "/alice/files/resolve/main//etc/passwd",
        "/alice/files/resolve/main/a%5Cb", "/alice/files/resolve/main/a%00b", "/alice/files/resolve/main/a%0Ab",
        "/alice/files/resolve/main/%252e%252e/x", "/alice/files/resolve/main/" + "x" * 300,
        "/alice/files/resolve/main/" + "/".join(["abcdefgh"] * 200), "/al..ice/files/resolve/main/x",
        "/api/models/alice/files/tree/main/..%2F..", "/alice/files/resolve/..%2F..%2Fmain/x",
        "/api/models/alice/files/revision/%00", "/alice/files/resolve/main/%ff",
    ]
    for path in bad:
        for method in ("HEAD", "GET"):
            status, h, _ = request(method, proxy.url + path)
            assert 400 <= status < 500, (path, status)
            assert h.get("x-error-message"), path
    assert fakehub.requests == []
    data_files = [p for p in proxy.data_dir.rglob("*") if p.is_file() and "blobs" in p.parts]
    assert data_files == []
