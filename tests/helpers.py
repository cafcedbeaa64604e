"""Test helpers: run hubproxy as a real process, run real clients in subprocesses, raw HTTP."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyProcess:
    """``hubproxy serve`` in its own process, on a free loopback port."""

    def __init__(self, data_dir: Path, upstream: str, env: dict[str, str] | None = None,
                 args: list[str] | None = None, port: int | None = None, log_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.upstream = upstream
        self.env = env or {}
        self.args = args or []
        self.port = port or free_port()
        self._port_chosen = port is None
        self.proc: subprocess.Popen[bytes] | None = None
        self._terminated = False
        self.log_path = (log_dir or data_dir.parent) / f"hubproxy-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        """Start the server and wait until it answers on its port. A port chosen here that another process took
        meanwhile (every test process picks free ports the same way) is given up for another one."""
        for _ in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                if not self._port_chosen:
                    raise
                self.port = free_port()
                self.log_path = self.log_path.with_name(f"hubproxy-{self.port}.log")
        return self._start(timeout)

    def _start(self, timeout: float) -> ProxyProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBPROXY_", "HF_"))}
        env.update(self.env)
        cmd = [sys.executable, "-m", "hubproxy", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--upstream", self.upstream, "--data-dir", str(self.data_dir), *self.args]
        self._log = open(self.log_path, "ab")
        self._terminated = False
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                if "address already in use" in self.log().lower():
                    raise PortTaken(self.port)
                raise RuntimeError(f"hubproxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _, _ = request("GET", self.url + "/health", timeout=1)
                # Another test process's server may hold the port: only this server's answer counts.
                if status == 200 and _listening_in_session(self.port, self.proc.pid):
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"hubproxy did not become ready:\n{self.log()}")

    def terminate(self) -> None:
        """Ask the server to stop (SIGTERM, once), without waiting for it."""
        if self.proc and self.proc.poll() is None and not self._terminated:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self._killpg()
                self.proc.wait()
        if self.proc:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL to every process of the server: no chance to clean up."""
        assert self.proc is not None
        self._killpg()
        self.proc.wait()
        self._log.close()

    def _killpg(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class PortTaken(Exception):
    """The server could not listen on its port: another process holds it."""


def _listening_in_session(port: int, session: int) -> bool:
    """Whether a process of the session ``session`` holds the socket listening on 127.0.0.1:``port``."""
    with open("/proc/net/tcp") as table:
        next(table)
        sockets = {f"socket:[{fields[9]}]" for fields in map(str.split, table)
                   if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) == session and any(
                    os.readlink(f"/proc/{pid}/fd/{fd}") in sockets for fd in os.listdir(f"/proc/{pid}/fd")):
                return True
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return False


def s3_settings(endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    """Settings of a hubproxy whose store is ``bucket`` at the S3 endpoint ``endpoint`` (moto in the tests)."""
    return {"store": "s3", "s3_bucket": bucket, "s3_endpoint_url": endpoint, "s3_region": "us-east-1",
            "s3_path_style": "true", **extra}


def request(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None,
            timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request (no redirects followed); header names are lower-cased."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def read_head(sock: socket.socket) -> bytes:
    """Receive from ``sock`` until an HTTP head's blank line; everything that arrived (without that blank line if
    the peer closed first)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def get_cut_before_the_end(port: int, path: str, size: int) -> int:
    """GET a file whose fill fails verification: the answer promises ``size`` bytes and is cut before the last
    one. Returns how many bytes arrived."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == size
        try:
            resp.read()
        except http.client.IncompleteRead as exc:
            assert len(exc.partial) < size
            return len(exc.partial)
        raise AssertionError("a file whose bytes failed verification was answered whole")
    finally:
        conn.close()


def get_after_refill_wait(url: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``, waiting out the 502s (with ``Retry-After`` of at most 2 s) that a blob which failed
    verification twice in a row answers until its next fill may start."""
    deadline = time.monotonic() + timeout
    while (answer := request("GET", url))[0] == 502:
        assert 0 < int(answer[1]["retry-after"]) <= 2 and time.monotonic() < deadline
        time.sleep(0.2)
    return answer


def serve_in_thread(handler: type) -> tuple[Any, str]:
    """A threaded HTTP server on a free loopback port, serving in the background; returns it and its URL."""
    import threading

    from tests.fakehub.server import QuietHTTPServer

    server = QuietHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def forward(handler: Any, host: str, port: int, target: str, body: bytes | None, headers: dict[str, str],
            cut_after: int | None = None, bytes_per_second: float | None = None) -> None:
    """Send ``handler``'s request on to ``host:port`` and its answer back (test relays and proxies), the body as it
    arrives where its length is known; with ``cut_after``, the connection is closed after that many bytes of the
    answer's body; with ``bytes_per_second``, the body is sent no faster than that."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(handler.command, target, body=body, headers=headers)
        resp = conn.getresponse()
        known = resp.getheader("Content-Length")
        streamed = handler.command != "HEAD" and known is not None and resp.getheader("Transfer-Encoding") is None
        data = b"" if streamed or handler.command == "HEAD" else resp.read()
        handler.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(k, v)
        # A HEAD answer's length is the one the upstream announced (its body is always empty).
        handler.send_header("Content-Length", known or "0" if handler.command == "HEAD" or streamed else str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            total = int(known) if streamed else len(data)  # type: ignore[arg-type]
            limit = total if cut_after is None else min(total, cut_after)
            began, sent, step = time.monotonic(), 0, 256 * 1024
            while sent < limit:
                piece = resp.read(min(step, limit - sent)) if streamed else data[sent:sent + step]
                if not piece:
                    break
                handler.wfile.write(piece)
                sent += len(piece)
                ahead = sent / bytes_per_second - (time.monotonic() - began) if bytes_per_second else 0
                if ahead > 0:
                    time.sleep(ahead)
        if cut_after is not None:
            handler.close_connection = True
    finally:
        conn.close()


class AdminClient:
    """The admin REST API of a running hubproxy, as an admin token sees it (faster than a CLI process per call)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + "/admin/api/v1"
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import json

        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        status, _, data = request(method, self.url + path, headers, json.dumps(body).encode() if body else None)
        if status >= 300:
            raise AssertionError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data) if data else None

    def user(self, name: str, project: str | None = None, role: str = "developer") -> str:
        """Create a user (a member of ``project`` with ``role``); returns a read token of theirs."""
        self.call("POST", "/users", {"name": name})
        if project:
            self.call("PUT", f"/projects/{project}/members/{name}", {"role": role})
        return self.call("POST", "/tokens", {"user": name})["token"]


@dataclass
class ClientResult:
    returncode: int
    stdout: str
    stderr: str


def client_env(endpoint: str, hf_home: Path, token: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a real client process pointed at ``endpoint``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBPROXY_"))}
    env.update({
        "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_ETAG_TIMEOUT": "10", "HF_HUB_DOWNLOAD_TIMEOUT": "10", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    })
    if token:
        env["HF_TOKEN"] = token
    env.update(extra)
    return env


def run_client(code: str, env: dict[str, str], timeout: float = 240, check: bool = True,
               args: list[str] | None = None) -> ClientResult:
    """Run Python ``code`` (or a command given by ``args``) in a fresh process."""
    cmd = args or [sys.executable, "-c", code]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    result = ClientResult(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"client failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-4000:]}\n"
                             f"STDERR:\n{proc.stderr[-6000:]}")
    return result


def hubproxy_cli(data_dir: Path, *args: str, database_url: str | None = None, check: bool = True,
                 timeout: float = 120, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run ``hubproxy <args> --data-dir DIR`` in a fresh process (the management commands).

    ``settings`` are passed as ``HUBPROXY_<NAME>`` variables, as a server's would be.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBPROXY_")}
    env.update({f"HUBPROXY_{k.upper()}": str(v) for k, v in settings.items()})
    if database_url:
        env["HUBPROXY_DATABASE_URL"] = database_url
    proc = subprocess.run([sys.executable, "-m", "hubproxy", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"hubproxy {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def admin_json(data_dir: Path, *args: str, database_url: str | None = None) -> Any:
    """``hubproxy admin <args> --json``, parsed."""
    import json

    return json.loads(hubproxy_cli(data_dir, "admin", *args, "--json", database_url=database_url).stdout)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value's truth."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    status, headers, body = request("GET", url + "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def evict_from_page_cache(path: Path | str) -> None:
    """Drop a file's pages from the page cache (clean pages: its next reader reads the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
