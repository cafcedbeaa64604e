"""A fake upstream Hugging Face Hub: a real HTTP server on loopback, for tests and benchmarks.

It speaks the parts of the Hub protocol hubproxy proxies, the way huggingface.co does:
LFS files are answered with a 302 to a second "CDN" origin whose answer carries a different
ETag, with ``X-Linked-*`` and Xet headers on the 302; regular files on a branch answer a
relative 307 to ``/api/resolve-cache/...``; tree pages are short and linked with absolute
``Link`` headers; Xet keys appear in JSON. Gated, private and missing repos answer with the
Hub's error codes. Faults can be injected per blob, and every request and every blob byte
served is counted so tests can assert what reached the upstream.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".gguf", ".pt", ".h5", ".onnx", ".msgpack")
LFS_MIN_SIZE = 1024 * 1024
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Blob:
    """File content: bytes in memory, or a file on disk (large benchmark files)."""

    data: bytes | None = None
    path: Path | None = None
    size: int = 0
    sha256: str = ""
    sha1: str = ""

    @classmethod
    def of(cls, content: bytes | Path) -> Blob:
        if isinstance(content, Path):
            h256 = hashlib.sha256()
            size = content.stat().st_size
            h1 = hashlib.sha1(b"blob %d\0" % size)
            with open(content, "rb") as f:
                while chunk := f.read(8 << 20):
                    h256.update(chunk)
                    h1.update(chunk)
            return cls(path=content, size=size, sha256=h256.hexdigest(), sha1=h1.hexdigest())
        return cls(data=content, size=len(content), sha256=hashlib.sha256(content).hexdigest(), sha1=git_sha1(content))

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(end - start)


@dataclass
class RepoFile:
    blob: Blob
    lfs: bool

    def pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.blob.sha256}\n"
                f"size {self.blob.size}\n").encode()

    @property
    def etag(self) -> str:
        return self.blob.sha256 if self.lfs else self.blob.sha1


@dataclass
class Commit:
    sha: str
    title: str
    files: dict[str, RepoFile]
    date: str
    parent: str | None


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    private: bool = False


@dataclass
class Faults:
    """Per-blob fault injection (keyed by the blob's sha256 or git sha1)."""

    fail_next: dict[str, int] = field(default_factory=dict)  # answer 500 this many times
    drop_after: dict[str, list[int]] = field(default_factory=dict)  # [offset, times]: cut a body that spans it
    corrupt: set[str] = field(default_factory=set)  # flip a byte in the middle
    corrupt_next: dict[str, int] = field(default_factory=dict)  # flip it in this many bodies only
    trickle: dict[str, tuple[int, float]] = field(default_factory=dict)  # (chunk bytes, delay seconds)
    ignore_range: set[str] = field(default_factory=set)  # answer 200 with the whole body to a Range
    metadata_delay: float = 0.0  # seconds to sleep before every /api answer
    opaque_etag: set[str] = field(default_factory=set)  # regular files answered with an ETag that is no hash
    # After this many more CDN answers for a blob, the CDN links issued so far expire (403); resolve hands out new ones.
    cdn_expires: dict[str, int] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
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
        hub_srv = _Server((host, 0), _make_handler(self, cdn=False))
        cdn_srv = _Server((host, 0), _make_handler(self, cdn=True))
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
        hub_srv = _Server(("127.0.0.1", self.port), _make_handler(self, cdn=False))
        cdn_srv = _Server(("127.0.0.1", self.cdn_port), _make_handler(self, cdn=True))
        self._servers = [hub_srv, cdn_srv]
        for srv in self._servers:
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.cdn_port}"


def _iso(date: str) -> str:
    return date


def _make_handler(hub: FakeHub, cdn: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

        def setup(self) -> None:
            super().setup()
            with hub._lock:
                hub._conns.add(self.connection)

        def finish(self) -> None:
            with hub._lock:
                hub._conns.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        # -- helpers ------------------------------------------------------------------
        def _record(self) -> None:
            with hub._lock:
                hub.requests.append((self.command, ("CDN " if cdn else "") + self.path, dict(self.headers)))

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  ctype: str = "application/json") -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body or status not in (204, 304):
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, obj: object, headers: dict[str, str] | None = None) -> None:
            self._send(200, json.dumps(obj).encode(), headers)

        def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
            h = dict(headers or {})
            if code:
                h["X-Error-Code"] = code
            h["X-Error-Message"] = message
            self._send(status, json.dumps({"error": message}).encode(), h)

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth[7:] if auth.startswith("Bearer ") else None

        def _repo(self, repo_type: str, repo_id: str, content: bool) -> Repo | None:
            """The repo if the caller may see it (and, for content, download it); else answers the error.

            Ids are case-insensitive; a renamed repo's old id answers a relative 307 to the same path under the
            new id. The not-found message names this server's URL, so a proxy passing it on would leak it.
            """
            new_id = hub.renames.get((repo_type, repo_id.lower()))
            if new_id is not None:
                path = self.path.replace(f"/{repo_id}/", f"/{new_id}/", 1)
                if path == self.path and self.path.split("?")[0].endswith(f"/{repo_id}"):
                    head, _, query = self.path.partition("?")
                    path = head[: -len(repo_id)] + new_id + (f"?{query}" if query else "")
                self._send(307, b"", {"Location": path})
                return None
            repo = hub.find(repo_type, repo_id)
            token = self._token()
            if repo is None or (repo.private and token != hub.token):
                self._error(401 if token is None else 404, "RepoNotFound",
                            f"Repository not found: {hub.url}/api/{repo_type}s/{repo_id}")
                return None
            if content and repo.gated and token != hub.token:
                self._error(401 if token is None else 403, "GatedRepo",
                            f"Access to model {repo_id} is restricted. You must have access to it.")
                return None
            return repo

        def _commit(self, repo: Repo, rev: str) -> Commit | None:
            sha = repo.branches.get(rev) or repo.tags.get(rev) or (rev if rev in repo.commits else None)
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return None
            return repo.commits[sha]

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

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
                    with hub._lock:
                        return self._send(200, json.dumps(dict(hub.blob_bytes)).encode())
                if cdn:
                    return self._cdn(segs)
                if segs[:1] == ["api"]:
                    if hub.faults.metadata_delay:
                        time.sleep(hub.faults.metadata_delay)
                    return self._api(segs[1:], dict(query), query, body)
                return self._resolve(segs)
            except (BrokenPipeError, ConnectionResetError):
                return

        # -- /api -----------------------------------------------------------------------
        def _api(self, segs: list[str], q: dict[str, str], items: list[tuple[str, str]], body: bytes) -> None:
            if segs == ["whoami-v2"]:
                if self._token() != hub.token:
                    return self._error(401, None, "Invalid credentials in Authorization header")
                return self._json({"type": "user", "name": "alice", "fullname": "Alice", "orgs": [{"name": "acme"}],
                                   "auth": {"type": "access_token",
                                            "accessToken": {"displayName": "upstream", "role": "read"}}})
            if segs[:1] == ["resolve-cache"]:
                t = TYPES[segs[1]]
                n = 2 if len(segs) > 4 and segs[3] != "" and not _is_sha(segs[3]) else 1
                repo_id = "/".join(segs[2:2 + n])
                return self._serve_resolve(t, repo_id, unquote(segs[2 + n]), "/".join(unquote(s) for s in segs[3 + n:]))
            if not segs or segs[0] not in TYPES:
                return self._error(404, None, "Not found")
            t = TYPES[segs[0]]
            rest = segs[1:]
            if not rest or rest == [""]:
                return self._list(t, segs[0], q)
            subs = {"revision", "tree", "paths-info", "refs", "commits", "xet-read-token", "xet-write-token"}
            if len(rest) >= 2 and rest[1] not in subs:
                repo_id, rest = "/".join(rest[:2]), rest[2:]
            else:
                repo_id, rest = rest[0], rest[1:]
            if rest and rest[0] in ("xet-read-token", "xet-write-token"):
                return self._send(200, b"{}", {"X-Xet-Cas-Url": "http://xet.invalid", "X-Xet-Access-Token": "x",
                                               "X-Xet-Token-Expiration": "9999999999"})
            repo = self._repo(t, repo_id, content=False)
            if repo is None:
                return
            if not rest or rest[0] == "revision":
                rev = unquote(rest[1]) if rest else "main"
                commit = self._commit(repo, rev)
                if commit:
                    self._json(self._info(repo, commit, q))
                return
            if rest[0] == "tree":
                commit = self._commit(repo, unquote(rest[1]))
                if commit:
                    self._tree(repo, commit, "/".join(unquote(s) for s in rest[2:]).strip("/"), q)
                return
            if rest[0] == "paths-info":
                commit = self._commit(repo, unquote(rest[1]))
                if commit:
                    form = parse_qsl(body.decode(), keep_blank_values=True)
                    wanted = [v for k, v in form if k == "paths"]
                    entries = {e["path"]: e for e in self._entries(commit, "", True, False)}
                    self._json([entries[p] for p in wanted if p in entries])
                return
            if rest[0] == "refs":
                out = {
                    "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()],
                    "converts": [],
                    "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()],
                }
                if q.get("include_prs") in ("1", "true", "True"):
                    out["pullRequests"] = []
                return self._json(out)
            if rest[0] == "commits":
                commit = self._commit(repo, unquote(rest[1]))
                if commit is None:
                    return
                history = []
                c: Commit | None = commit
                while c is not None:
                    history.append({"id": c.sha, "title": c.title, "message": "", "authors": [{"user": "alice"}],
                                    "date": c.date})
                    c = repo.commits.get(c.parent) if c.parent else None
                page = int(q.get("p", "0"))
                chunk = history[page * hub.page_size:(page + 1) * hub.page_size]
                headers = {}
                if (page + 1) * hub.page_size < len(history):
                    headers["Link"] = f'<{hub.url}/api/{segs[0]}/{repo_id}/commits/{rest[1]}?p={page + 1}>; rel="next"'
                return self._json(chunk, headers)
            return self._error(404, None, "Not found")

        def _list(self, repo_type: str, seg: str, q: dict[str, str]) -> None:
            """``/api/models?search=&author=&limit=``: public repos (private ones only with the token), paginated."""
            search, author = q.get("search", "").lower(), q.get("author", "")
            found = [r for (t, _), r in sorted(hub.repos.items()) if t == repo_type
                     and (not r.private or self._token() == hub.token) and search in r.repo_id.lower()
                     and (not author or r.repo_id.startswith(author + "/"))]
            limit = int(q.get("limit") or 1000)
            cursor = int(q.get("cursor", "0"))
            page = found[cursor:cursor + min(limit, hub.page_size)]
            items = []
            for r in page:
                item: dict[str, object] = {"_id": hashlib.md5(r.repo_id.encode()).hexdigest()[:24], "id": r.repo_id,
                                           "private": r.private, "downloads": 0, "likes": 0, "tags": [],
                                           "sha": r.branches.get("main")}
                if repo_type == "model":
                    item["modelId"] = r.repo_id
                items.append(item)
            headers = {}
            if cursor + len(page) < len(found) and len(page) < limit:
                query = urlencode({**q, "cursor": cursor + len(page)})
                headers["Link"] = f'<{hub.url}/api/{seg}?{query}>; rel="next"'
            self._json(items, headers)

        def _info(self, repo: Repo, commit: Commit, q: dict[str, str]) -> dict[str, object]:
            blobs = q.get("blobs", "").lower() in ("1", "true")
            siblings = []
            for path, f in sorted(commit.files.items()):
                s: dict[str, object] = {"rfilename": path}
                if blobs:
                    s.update({"size": f.blob.size, "blobId": git_sha1(f.pointer()) if f.lfs else f.blob.sha1})
                    if f.lfs:
                        s["lfs"] = {"sha256": f.blob.sha256, "size": f.blob.size, "pointerSize": len(f.pointer())}
                siblings.append(s)
            return {
                "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.sha,
                "lastModified": commit.date, "createdAt": commit.date, "private": repo.private,
                "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "cardData": {}, "siblings": siblings, "xetEnabled": True,
            }

        def _entries(self, commit: Commit, path: str, recursive: bool, expand: bool) -> list[dict[str, object]]:
            dirs: set[str] = set()
            files: list[dict[str, object]] = []
            prefix = path + "/" if path else ""
            for p, f in sorted(commit.files.items()):
                if not p.startswith(prefix) and path:
                    continue
                rel = p[len(prefix):]
                parts = rel.split("/")
                for i in range(1, len(parts)):
                    dirs.add(prefix + "/".join(parts[:i]))
                if not recursive and len(parts) > 1:
                    continue
                e: dict[str, object] = {"type": "file", "oid": git_sha1(f.pointer()) if f.lfs else f.blob.sha1,
                                        "size": f.blob.size, "path": p}
                if f.lfs:
                    e["lfs"] = {"oid": f.blob.sha256, "size": f.blob.size, "pointerSize": len(f.pointer())}
                    e["xetHash"] = hashlib.sha256(b"xet" + f.blob.sha256.encode()).hexdigest()
                if expand:
                    e["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
                    e["securityFileStatus"] = {"status": "safe", "avScan": {}, "pickleImportScan": {}}
                files.append(e)
            if not recursive:
                dirs = {d for d in dirs if "/" not in d[len(prefix):]}
            folders: list[dict[str, object]] = []
            for d in sorted(dirs):
                e = {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                if expand:
                    e["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
                folders.append(e)
            return folders + files

        def _tree(self, repo: Repo, commit: Commit, path: str, q: dict[str, str]) -> None:
            recursive = q.get("recursive", "").lower() in ("1", "true")
            expand = q.get("expand", "").lower() in ("1", "true")
            if path and not any(p.startswith(path + "/") for p in commit.files):
                return self._error(404, "EntryNotFound", f'{path} does not exist on "{commit.sha}"')
            entries = self._entries(commit, path, recursive, expand)
            cursor = int(q.get("cursor", "0"))
            page = entries[cursor:cursor + hub.page_size]
            headers = {}
            if cursor + hub.page_size < len(entries):
                sub = "/" + quote(path, safe="") if path else ""
                seg = {"model": "models", "dataset": "datasets", "space": "spaces"}[repo.repo_type]
                headers["Link"] = (f'<{hub.url}/api/{seg}/{repo.repo_id}/tree/{commit.sha}{sub}?recursive={recursive}'
                                   f'&expand={expand}&cursor={cursor + hub.page_size}>; rel="next"')
            self._json(page, headers)

        # -- /resolve -------------------------------------------------------------------
        def _resolve(self, segs: list[str]) -> None:
            t = "model"
            if segs and segs[0] in ("datasets", "spaces"):
                t, segs = TYPES[segs[0]], segs[1:]
            idx = 1 if len(segs) > 1 and segs[1] == "resolve" else 2
            if len(segs) <= idx + 2 or segs[idx] != "resolve":
                return self._error(404, None, "Not found")
            repo_id = "/".join(segs[:idx])
            rev = unquote(segs[idx + 1])
            path = "/".join(unquote(s) for s in segs[idx + 2:])
            repo = self._repo(t, repo_id, content=True)
            if repo is None:
                return
            commit = self._commit(repo, rev)
            if commit is None:
                return
            f = commit.files.get(path)
            if f is None:
                return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit.sha})
            if f.lfs:
                with hub._lock:
                    hub.signatures += 1
                    sig = hub.signatures
                return self._send(302, b"", {
                    "Location": f"{hub.cdn_url}/_cdn/{f.blob.sha256}?sig={sig}",
                    "X-Repo-Commit": commit.sha, "ETag": f'"{f.blob.sha256}"',
                    "X-Linked-Etag": f'"{f.blob.sha256}"', "X-Linked-Size": str(f.blob.size),
                    "X-Xet-Hash": hashlib.sha256(b"xet" + f.blob.sha256.encode()).hexdigest(),
                    "Link": f'<{hub.url}/api/{t}s/{repo_id}/xet-read-token/{commit.sha}>; rel="xet-auth"',
                })
            if rev != commit.sha:
                loc = f"/api/resolve-cache/{t}s/{repo_id}/{commit.sha}/{quote(path)}?etag=%22{f.blob.sha1}%22"
                return self._send(307, b"", {"Location": loc})
            return self._serve_resolve(t, repo_id, commit.sha, path)

        def _serve_resolve(self, t: str, repo_id: str, sha: str, path: str) -> None:
            repo = self._repo(t, repo_id, content=True)
            if repo is None:
                return
            commit = self._commit(repo, sha)
            if commit is None:
                return
            f = commit.files.get(path)
            if f is None:
                return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
            etag = f'W/"{f.blob.sha1[:8]}-gz"' if f.blob.sha1 in hub.faults.opaque_etag else f'"{f.blob.sha1}"'
            self._serve_blob(f.blob, f.blob.sha1, {"X-Repo-Commit": sha, "ETag": etag})

        def _cdn(self, segs: list[str]) -> None:
            if len(segs) != 2 or segs[0] != "_cdn":
                return self._error(404, None, "Not found")
            blob = hub.blob_by_key(segs[1])
            if blob is None:
                return self._send(404, b"NoSuchKey", ctype="text/plain")
            sig = dict(parse_qsl(self.path.partition("?")[2])).get("sig", "0")
            with hub._lock:
                left = hub.faults.cdn_expires.get(blob.sha256)
                if left is not None:
                    hub.faults.cdn_expires[blob.sha256] = left - 1
                    if left == 0:
                        hub.expired_before[blob.sha256] = hub.signatures
                expired = int(sig) <= hub.expired_before.get(blob.sha256, 0)
            if expired:
                return self._send(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                                  ctype="application/xml")
            self._serve_blob(blob, blob.sha256, {"ETag": '"' + hashlib.md5(blob.sha256.encode()).hexdigest() + '-3"'})

        def _serve_blob(self, blob: Blob, key: str, headers: dict[str, str]) -> None:
            faults = hub.faults
            with hub._lock:
                if faults.fail_next.get(key, 0) > 0:
                    faults.fail_next[key] -= 1
                    fail = True
                else:
                    fail = False
            if fail:
                return self._error(500, None, "Internal Error (injected)")
            size = blob.size
            start, end, status = 0, size, 200
            rng = self.headers.get("Range")
            if rng and key not in faults.ignore_range:
                first, _, last = rng.replace("bytes=", "").partition("-")
                if first == "":
                    start = max(0, size - int(last))
                else:
                    start = int(first)
                    end = min(size, int(last) + 1) if last else size
                if start >= size:
                    return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                status = 206
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return
            drop = None
            with hub._lock:
                spec = faults.drop_after.get(key)
                if spec and spec[1] > 0 and start <= spec[0] < end:
                    spec[1] -= 1
                    drop = spec[0]
            with hub._lock:
                corrupting = key in faults.corrupt or faults.corrupt_next.get(key, 0) > 0
                if faults.corrupt_next.get(key, 0) > 0 and start <= size // 2 < end:
                    faults.corrupt_next[key] -= 1
            with hub._lock:
                hub.streams[key] += 1
                hub.peak_streams[key] = max(hub.peak_streams[key], hub.streams[key])
            try:
                self._send_range(blob, key, start, end, drop, corrupting)
            finally:
                with hub._lock:
                    hub.streams[key] -= 1

        def _send_range(self, blob: Blob, key: str, start: int, end: int, drop: int | None,
                        corrupting: bool) -> None:
            faults, size = hub.faults, blob.size
            pos = start
            t0 = time.monotonic()
            sent = 0
            while pos < end:
                chunk, delay = faults.trickle.get(key, (1 << 20, 0.0))  # looked up each time: tests lift it
                n = min(chunk, end - pos)
                if drop is not None and pos + n > drop:
                    n = max(0, drop - pos)
                data = blob.read(pos, pos + n)
                if corrupting and pos <= size // 2 < pos + n:
                    ba = bytearray(data)
                    ba[size // 2 - pos] ^= 0xFF
                    data = bytes(ba)
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    return
                with hub._lock:
                    hub.blob_bytes[key] += len(data)
                pos += n
                sent += n
                if drop is not None and pos >= drop:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if delay:
                    time.sleep(delay)
                if hub.throttle_bps:
                    ahead = sent / hub.throttle_bps - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)

    return Handler


def _is_sha(seg: str) -> bool:
    return len(seg) == 40 and all(c in "0123456789abcdef" for c in seg)


if __name__ == "__main__":  # a standalone fake hub, for benchmarks and manual tries
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--file", action="append", default=[], help="REPO:PATH=LOCALFILE to serve")
    ap.add_argument("--throttle", type=float, default=None, help="bytes/s per connection")
    args = ap.parse_args()
    fake = FakeHub(page_size=1000)
    fake.throttle_bps = args.throttle
    for spec in args.file:
        target, local = spec.split("=", 1)
        repo, path = target.split(":", 1)
        fake.add_commit("model", repo, {path: Path(local)})
    fake.start()
    print(json.dumps({"url": fake.url, "cdn_url": fake.cdn_url}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    os._exit(0)
