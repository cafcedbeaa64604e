"""Warm the cache: download a repo revision through a running hubproxy, with a progress bar.

Going through the server makes prefetch fill the cache the same single-flight, verified way
clients do, under the same policy: the token sent is the caller's hubproxy token (``--token``,
``HUBPROXY_TOKEN`` or ``HF_TOKEN``), so prefetch works with projects and ``anonymous_access: off``.
"""

from __future__ import annotations

import fnmatch
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote

from hubproxy.hub.routing import RESOLVE_PREFIX
from hubproxy.progress import Progress, human_bytes

CHUNK = 1024 * 1024


class PrefetchError(Exception):
    """The server refused or failed; the message names what."""


@dataclass
class PrefetchResult:
    commit: str
    files: int
    bytes: int
    seconds: float


def selected(path: str, include: list[str], exclude: list[str]) -> bool:
    """``fnmatch`` patterns, as huggingface_hub's allow/ignore patterns."""
    if include and not any(fnmatch.fnmatch(path, p) for p in include):
        return False
    return not any(fnmatch.fnmatch(path, p) for p in exclude)


class _Client:
    """GETs against the server, with the caller's token."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def open(self, url: str):  # noqa: ANN201 - an http.client response
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=self.headers), timeout=300)
        except urllib.error.HTTPError as exc:
            code = exc.headers.get("X-Error-Code", "")
            message = exc.headers.get("X-Error-Message", "")
            raise PrefetchError(f"{url.removeprefix(self.base)}: {exc.code} {code} {message}".strip()) from None
        except urllib.error.URLError as exc:
            raise PrefetchError(f"{self.base}: {exc.reason}") from None

    def get(self, url: str) -> tuple[bytes, dict[str, str]]:
        with self.open(url) as resp:
            return resp.read(), dict(resp.headers)


def _next_link(headers: dict[str, str]) -> str | None:
    link = headers.get("Link") or headers.get("link") or ""
    if 'rel="next"' in link:
        return link[link.index("<") + 1: link.index(">")]
    return None


def prefetch(server: str, repo_type: str, repo_id: str, revision: str, include: list[str], exclude: list[str],
             token: str | None = None, plain: bool = False) -> PrefetchResult:
    """Fetch every selected file of ``repo_id@revision`` through ``server`` (so hubproxy fills its cache)."""
    client = _Client(server, token)
    base = client.base
    t0 = time.monotonic()
    info, _ = client.get(f"{base}/api/{repo_type}s/{repo_id}/revision/{quote(revision, safe='')}")
    commit = json.loads(info)["sha"]
    url: str | None = f"{base}/api/{repo_type}s/{repo_id}/tree/{commit}?recursive=true&expand=false"
    files: list[tuple[str, int]] = []
    while url:
        body, headers = client.get(url)
        files += [(e["path"], int(e["size"])) for e in json.loads(body) if e.get("type") == "file"]
        url = _next_link(headers)
    files = [(p, s) for p, s in files if selected(p, include, exclude)]
    progress = Progress(f"prefetch {repo_id}@{revision} ({len(files)} files)", sum(s for _, s in files),
                        force_plain=plain)
    done = 0
    try:
        for path, size in files:
            with client.open(f"{base}/{RESOLVE_PREFIX[repo_type]}{repo_id}/resolve/{commit}/{quote(path)}") as resp:
                while chunk := resp.read(CHUNK):
                    done += len(chunk)
                    progress.advance(len(chunk))
            progress.note(f"{path} ({human_bytes(size)})")
    finally:
        seconds = progress.close()
    return PrefetchResult(commit, len(files), done, seconds or time.monotonic() - t0)
