"""Warm the cache: download a repo revision through a running hubproxy, with progress."""

from __future__ import annotations

import fnmatch
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from hubproxy.hub.routing import RESOLVE_PREFIX

CHUNK = 1024 * 1024


class PrefetchError(Exception):
    """The server refused or failed; the message names what."""


@dataclass
class PrefetchResult:
    commit: str
    files: int
    bytes: int
    seconds: float


def _get(url: str) -> tuple[bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=300) as resp:
            return resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        code = exc.headers.get("X-Error-Code", "")
        raise PrefetchError(f"{url}: {exc.code} {code} {exc.headers.get('X-Error-Message', '')}".strip()) from None
    except urllib.error.URLError as exc:
        raise PrefetchError(f"{url}: {exc.reason}") from None


def _next_link(headers: dict[str, str]) -> str | None:
    link = headers.get("Link") or headers.get("link") or ""
    if 'rel="next"' in link:
        return link[link.index("<") + 1: link.index(">")]
    return None


def selected(path: str, include: list[str], exclude: list[str]) -> bool:
    """``fnmatch`` patterns, as huggingface_hub's allow/ignore patterns."""
    if include and not any(fnmatch.fnmatch(path, p) for p in include):
        return False
    return not any(fnmatch.fnmatch(path, p) for p in exclude)


def prefetch(server: str, repo_type: str, repo_id: str, revision: str, include: list[str], exclude: list[str],
             report: Callable[[str], None] | None = None) -> PrefetchResult:
    """Fetch every selected file of ``repo_id@revision`` through ``server`` (so hubproxy fills its cache)."""
    say = report or (lambda line: print(line, file=sys.stderr, flush=True))
    base = server.rstrip("/")
    t0 = time.monotonic()
    info, _ = _get(f"{base}/api/{repo_type}s/{repo_id}/revision/{quote(revision, safe='')}")
    commit = json.loads(info)["sha"]
    url: str | None = f"{base}/api/{repo_type}s/{repo_id}/tree/{commit}?recursive=true&expand=false"
    files: list[tuple[str, int]] = []
    while url:
        body, headers = _get(url)
        files += [(e["path"], int(e["size"])) for e in json.loads(body) if e.get("type") == "file"]
        url = _next_link(headers)
    files = [(p, s) for p, s in files if selected(p, include, exclude)]
    total = sum(s for _, s in files)
    say(f"prefetching {repo_type} {repo_id}@{revision} ({commit[:12]}): {len(files)} files, {total} bytes")
    done = 0
    for i, (path, size) in enumerate(files, 1):
        target = f"{base}/{RESOLVE_PREFIX[repo_type]}{repo_id}/resolve/{commit}/{quote(path)}"
        try:
            with urllib.request.urlopen(target, timeout=300) as resp:
                while chunk := resp.read(CHUNK):
                    done += len(chunk)
        except urllib.error.HTTPError as exc:
            raise PrefetchError(f"{path}: {exc.code} {exc.headers.get('X-Error-Message', '')}") from None
        elapsed = max(time.monotonic() - t0, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate else 0
        say(f"[{i}/{len(files)}] {path} {size} bytes  total {done}/{total}  {rate / 1e6:.1f} MB/s  eta {eta:.0f}s")
    return PrefetchResult(commit, len(files), done, time.monotonic() - t0)
