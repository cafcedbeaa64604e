"""The fake hub itself: its content and counters, and the two servers (hub and CDN) it runs on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tests.fakehub.api import ApiRoutes
from tests.fakehub.content import LFS_MIN_SIZE, LFS_SUFFIXES, Blob, Commit, Faults, Repo, RepoFile
from tests.fakehub.files import FileRoutes


class Handler(ApiRoutes, FileRoutes):
    """Every route of the fake hub (``make_handler`` binds it to a hub and an origin)."""

    # -- dispatch -----------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        self._record()
        body = self._body() if self.command == "POST" else b""
        parts = urlsplit(self.path)
        segs = parts.path.split("/")[1:]
        query = parse_qsl(parts.query, keep_blank_values=True)
        try:
            if segs == ["_fake", "blob-bytes"]:  # for benchmarks that run the fake hub as a process
                with self.hub._lock:
                    return self._send(200, json.dumps(dict(self.hub.blob_bytes)).encode())
            if self.cdn:
                return self._cdn(segs)
            if segs[:1] == ["api"]:
                if self.hub.faults.metadata_delay:
                    time.sleep(self.hub.faults.metadata_delay)
                return self._api(segs[1:], dict(query), query, body)
            return self._resolve(segs)
        except (BrokenPipeError, ConnectionResetError):
            return


def make_handler(hub: FakeHub, cdn: bool) -> type[Handler]:
    """The handler class for one origin of ``hub``."""
    return type("BoundHandler", (Handler,), {"hub": hub, "cdn": cdn})


class QuietHTTPServer(ThreadingHTTPServer):
    """A threaded test server that takes a client hanging up for what it is in these tests (a killed replica,
    a dropped pooled connection), not an error to print; any other error is printed as usual."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Server(QuietHTTPServer):
    allow_reuse_address = True
    request_queue_size = 128


class FakeHub:
    """The fake upstream: ``url`` is the hub origin, ``cdn_url`` the CDN origin."""

    def __init__(self, page_size: int = 3, token: str = "hf_upstream_secret_token",
                 tls: ssl.SSLContext | None = None) -> None:
        self.page_size = page_size
        #: Serve HTTPS with this context (its certificate for 127.0.0.1) instead of HTTP.
        self.tls = tls
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.faults = Faults()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.blob_bytes: Counter[str] = Counter()
        #: Bodies of a blob being sent right now, and the most sent at once (parallel ranged fills).
        self.streams: Counter[str] = Counter()
        self.peak_streams: Counter[str] = Counter()
        self.throttle_bps: float | None = None
        #: Renamed repos: (type, old id lower-cased) -> new id. The old name answers 307 to the new one.
        self.renames: dict[tuple[str, str], str] = {}
        #: CDN links handed out so far (each carries its number); those numbered up to expired_before[blob] expired.
        self.signatures = 0
        self.expired_before: dict[str, int] = {}
        self._lock = threading.Lock()
        self._servers: list[_Server] = []
        self._conns: set[socket.socket] = set()
        self.port = 0
        self.cdn_port = 0

    # -- content ----------------------------------------------------------------------
    def add_commit(self, repo_type: str, repo_id: str, files: dict[str, bytes | Path], *, branch: str = "main",
                   title: str = "Upload", replace: bool = False, gated: bool = False, private: bool = False) -> str:
        """Add a commit on ``branch`` (creating the repo) and return its sha."""
        repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_type, repo_id))
        repo.gated = repo.gated or gated
        repo.private = repo.private or private
        parent = repo.branches.get(branch)
        base = {} if replace or parent is None else dict(repo.commits[parent].files)
        for path, content in files.items():
            blob = Blob.of(content)
            lfs = path.endswith(LFS_SUFFIXES) or blob.size >= LFS_MIN_SIZE
            base[path] = RepoFile(blob, lfs)
        digest = hashlib.sha1(json.dumps(
            [parent, title, sorted((p, f.etag) for p, f in base.items())]).encode()).hexdigest()
        date = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        repo.commits[digest] = Commit(digest, title, base, date, parent)
        repo.branches[branch] = digest
        return digest

    def find(self, repo_type: str, repo_id: str) -> Repo | None:
        """A repo by id, case-insensitively, as the Hub finds it."""
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            repo = next((r for (t, i), r in self.repos.items() if t == repo_type and i.lower() == repo_id.lower()),
                        None)
        return repo

    def blob_by_key(self, key: str) -> Blob | None:
        for repo in self.repos.values():
            for commit in repo.commits.values():
                for f in commit.files.values():
                    if key in (f.blob.sha256, f.blob.sha1):
                        return f.blob
        return None

    # -- accounting -------------------------------------------------------------------
    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.blob_bytes.clear()
            self.peak_streams.clear()

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests if (method is None or m == method) and contains in p)

    def paths(self) -> list[str]:
        with self._lock:
            return [f"{m} {p}" for m, p, _ in self.requests]

    # -- server -----------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1") -> FakeHub:
        hub_srv = _Server((host, 0), make_handler(self, cdn=False))
        cdn_srv = _Server((host, 0), make_handler(self, cdn=True))
        if self.tls is not None:
            for srv in (hub_srv, cdn_srv):
                srv.socket = self.tls.wrap_socket(srv.socket, server_side=True)
        self._servers = [hub_srv, cdn_srv]
        self.port, self.cdn_port = hub_srv.server_address[1], cdn_srv.server_address[1]
        for srv in self._servers:
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open (keep-alive) connection: the upstream is gone."""
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        self._servers = []
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def restart(self) -> None:
        """Start again on the same ports (after ``stop``)."""
        hub_srv = _Server(("127.0.0.1", self.port), make_handler(self, cdn=False))
        cdn_srv = _Server(("127.0.0.1", self.cdn_port), make_handler(self, cdn=True))
        self._servers = [hub_srv, cdn_srv]
        for srv in self._servers:
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.cdn_port}"
