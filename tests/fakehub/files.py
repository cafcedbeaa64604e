"""The fake hub's file routes: ``/resolve`` (a 302 to the CDN for LFS files, a 307 for regular files on a
branch), ``/api/resolve-cache``, the CDN, and blob bodies with ranges, throttling and injected faults."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, quote, unquote

from tests.fakehub.base import HubHandler
from tests.fakehub.content import TYPES, Blob, Commit, RepoFile


class FileRoutes(HubHandler):
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
        found = self._file(t, repo_id, rev, path)
        if found is None:
            return
        commit, f = found
        if f.lfs:
            with self.hub._lock:
                self.hub.signatures += 1
                sig = self.hub.signatures
            return self._send(302, b"", {
                "Location": f"{self.hub.cdn_url}/_cdn/{f.blob.sha256}?sig={sig}",
                "X-Repo-Commit": commit.sha, "ETag": f'"{f.blob.sha256}"',
                "X-Linked-Etag": f'"{f.blob.sha256}"', "X-Linked-Size": str(f.blob.size),
                "X-Xet-Hash": hashlib.sha256(b"xet" + f.blob.sha256.encode()).hexdigest(),
                "Link": f'<{self.hub.url}/api/{t}s/{repo_id}/xet-read-token/{commit.sha}>; rel="xet-auth"',
            })
        if rev != commit.sha:
            loc = f"/api/resolve-cache/{t}s/{repo_id}/{commit.sha}/{quote(path)}?etag=%22{f.blob.sha1}%22"
            return self._send(307, b"", {"Location": loc})
        return self._serve_resolve(t, repo_id, commit.sha, path)

    def _file(self, t: str, repo_id: str, rev: str, path: str) -> tuple[Commit, RepoFile] | None:
        """The file at ``path`` in revision ``rev`` if the caller may download it; else answers the error."""
        repo = self._repo(t, repo_id, content=True)
        commit = None if repo is None else self._commit(repo, rev)
        if commit is None:
            return None
        f = commit.files.get(path)
        if f is None:
            self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit.sha})
            return None
        return commit, f

    def _serve_resolve(self, t: str, repo_id: str, sha: str, path: str) -> None:
        found = self._file(t, repo_id, sha, path)
        if found is None:
            return
        commit, f = found
        etag = f'W/"{f.blob.sha1[:8]}-gz"' if f.blob.sha1 in self.hub.faults.opaque_etag else f'"{f.blob.sha1}"'
        self._serve_blob(f.blob, f.blob.sha1, {"X-Repo-Commit": commit.sha, "ETag": etag})

    def _cdn(self, segs: list[str]) -> None:
        if len(segs) != 2 or segs[0] != "_cdn":
            return self._error(404, None, "Not found")
        blob = self.hub.blob_by_key(segs[1])
        if blob is None:
            return self._send(404, b"NoSuchKey", ctype="text/plain")
        sig = dict(parse_qsl(self.path.partition("?")[2])).get("sig", "0")
        with self.hub._lock:
            left = self.hub.faults.cdn_expires.get(blob.sha256)
            if left is not None:
                self.hub.faults.cdn_expires[blob.sha256] = left - 1
                if left == 0:
                    self.hub.expired_before[blob.sha256] = self.hub.signatures
            expired = int(sig) <= self.hub.expired_before.get(blob.sha256, 0)
        if expired:
            return self._send(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                              ctype="application/xml")
        self._serve_blob(blob, blob.sha256, {"ETag": '"' + hashlib.md5(blob.sha256.encode()).hexdigest() + '-3"'})

    def _serve_blob(self, blob: Blob, key: str, headers: dict[str, str]) -> None:
        faults = self.hub.faults
        with self.hub._lock:
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
            delay = faults.answer_delay.get(key, 0.0)
            if delay:  # a far CDN, or a busy one: the head of each ranged answer comes late
                time.sleep(delay)
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
        with self.hub._lock:
            spec = faults.drop_after.get(key)
            if spec and spec[1] > 0 and start <= spec[0] < end:
                spec[1] -= 1
                drop = spec[0]
        with self.hub._lock:
            corrupting = key in faults.corrupt or faults.corrupt_next.get(key, 0) > 0
            if faults.corrupt_next.get(key, 0) > 0 and start <= size // 2 < end:
                faults.corrupt_next[key] -= 1
        with self.hub._lock:
            self.hub.streams[key] += 1
            self.hub.peak_streams[key] = max(self.hub.peak_streams[key], self.hub.streams[key])
        counted = [True]

        def stream_ends() -> None:
            """The body stops counting as a stream being sent: before its last bytes go out, so that a request
            its client makes once it has them is never counted as sent at the same time."""
            with self.hub._lock:
                if counted[0]:
                    counted[0] = False
                    self.hub.streams[key] -= 1

        try:
            self._send_range(blob, key, start, end, drop, corrupting, stream_ends)
        finally:
            stream_ends()

    def _send_range(self, blob: Blob, key: str, start: int, end: int, drop: int | None,
                    corrupting: bool, last_bytes: Callable[[], None]) -> None:
        faults, size = self.hub.faults, blob.size
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
            if pos + n >= end or (drop is not None and pos + n >= drop):
                last_bytes()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return
            with self.hub._lock:
                self.hub.blob_bytes[key] += len(data)
            pos += n
            sent += n
            if drop is not None and pos >= drop:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if delay:
                time.sleep(delay)
            if self.hub.throttle_bps:
                ahead = sent / self.hub.throttle_bps - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
