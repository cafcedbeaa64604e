"""The fake hub's request handler: connection bookkeeping, answers, errors, and repo and revision lookups."""

from __future__ import annotations

import contextlib
import json
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING

from tests.fakehub.content import Commit, Repo

if TYPE_CHECKING:
    from tests.fakehub.server import FakeHub


class HubHandler(BaseHTTPRequestHandler):
    """Answers for one origin of ``hub``: the hub itself, or its CDN (``cdn``)."""

    hub: FakeHub
    cdn: bool
    protocol_version = "HTTP/1.1"
    #: As the Hub's servers and CDNs do: a small body written after its headers goes out at once, not after
    #: the client's delayed ACK of the headers (about 40 ms on a kept-alive connection, per answer).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._conns.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.hub._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    # -- helpers ------------------------------------------------------------------
    def _record(self) -> None:
        with self.hub._lock:
            self.hub.requests.append((self.command, ("CDN " if self.cdn else "") + self.path, dict(self.headers)))

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
        new_id = self.hub.renames.get((repo_type, repo_id.lower()))
        if new_id is not None:
            path = self.path.replace(f"/{repo_id}/", f"/{new_id}/", 1)
            if path == self.path and self.path.split("?")[0].endswith(f"/{repo_id}"):
                head, _, query = self.path.partition("?")
                path = head[: -len(repo_id)] + new_id + (f"?{query}" if query else "")
            self._send(307, b"", {"Location": path})
            return None
        repo = self.hub.find(repo_type, repo_id)
        token = self._token()
        if repo is None or (repo.private and token != self.hub.token):
            self._error(401 if token is None else 404, "RepoNotFound",
                        f"Repository not found: {self.hub.url}/api/{repo_type}s/{repo_id}")
            return None
        if content and repo.gated and token != self.hub.token:
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
