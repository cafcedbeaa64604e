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
        self.proc: subprocess.Popen[bytes] | None = None
        self._terminated = False
        self.log_path = (log_dir or data_dir.parent) / f"hubproxy-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ProxyProcess:
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
                raise RuntimeError(f"hubproxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _, _ = request("GET", self.url + "/health", timeout=1)
                if status == 200:
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
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def forward(handler: Any, host: str, port: int, target: str, body: bytes | None, headers: dict[str, str],
            cut_after: int | None = None) -> None:
    """Send ``handler``'s request on to ``host:port`` and its whole answer back (test relays and proxies);
    with ``cut_after``, the connection is closed after that many bytes of the answer's body."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request(handler.command, target, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        handler.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(k, v)
        # A HEAD answer's length is the one the upstream announced (its body is always empty).
        length = resp.getheader("Content-Length", "0") if handler.command == "HEAD" else str(len(data))
        handler.send_header("Content-Length", length)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data if cut_after is None else data[:cut_after])
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


class TcpForwarder:
    """A loopback TCP relay to ``target`` that a test can cut (an outage) and restore on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        import threading

        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class S3FaultRelay:
    """An HTTP relay in front of an S3 server that can refuse writes (a full or over-quota bucket).

    Reads (GET, HEAD) pass; requests for which ``refuse(method, path)`` is true get the 507 an
    S3-compatible server sends when it is out of space, so uploads fail while reads keep working.
    With ``cut_gets`` set, every GET answer is cut after that many bytes of its body.
    """

    def __init__(self, target: str) -> None:
        from http.server import BaseHTTPRequestHandler

        self.target = urlsplit(target)
        self.refuse: Callable[[str, str], bool] = lambda method, path: False
        self.cut_gets: int | None = None
        #: (method, path, headers with lower-case names) of every request relayed or refused.
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                relay.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                if relay.refuse(self.command, self.path):
                    msg = b"<Error><Code>InsufficientStorage</Code><Message>bucket full</Message></Error>"
                    self.send_response(507)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = self.headers.get("Host", "")
                forward(self, relay.target.hostname or "", relay.target.port or 80, self.path, body, headers,
                        relay.cut_gets if self.command == "GET" else None)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay  # noqa: N815

        self.server, self.url = serve_in_thread(Handler)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
