"""Upstream metadata answers as hubproxy keeps them: the headers worth replaying, Xet keys stripped.

Also the errors a client gets when the upstream cannot answer and nothing is cached, and single-flight
requests (one upstream request for any number of concurrent callers).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hubproxy.hub.errors import HubError, offline_miss, upstream_timeout, upstream_unreachable
from hubproxy.upstream.client import UpstreamClient, UpstreamResponse, UpstreamUnavailable

log = logging.getLogger(__name__)

#: JSON keys that would send clients to Xet (``docs/protocol.md``, "Xet"): removed at any depth.
XET_KEYS = frozenset({"xetHash", "xetEnabled"})
#: Upstream headers worth keeping with a replayed answer.
REPLAY_HEADERS = ("Content-Type", "X-Error-Code", "X-Error-Message", "X-Repo-Commit", "Link", "Retry-After",
                  "RateLimit", "RateLimit-Policy")
STALE_WARNING = "hubproxy; upstream unreachable, serving cached metadata"


def strip_xet(value: Any) -> Any:
    """Drop ``xetHash``/``xetEnabled`` keys at any depth."""
    if isinstance(value, dict):
        return {k: strip_xet(v) for k, v in value.items() if k not in XET_KEYS}
    if isinstance(value, list):
        return [strip_xet(v) for v in value]
    return value


@dataclass
class Answer:
    """An answer ready to send: status, headers, body; ``stale`` when it stands in for the upstream's."""

    status: int
    headers: dict[str, str]
    body: bytes
    stale: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    @classmethod
    def of_json(cls, data: Any, stale: bool = False, headers: dict[str, str] | None = None) -> Answer:
        return cls(200, {"Content-Type": "application/json", **(headers or {})},
                   json.dumps(data, separators=(",", ":")).encode(), stale)


def from_upstream(resp: UpstreamResponse) -> Answer:
    """Keep the replayable headers; strip Xet keys from JSON bodies."""
    headers = {h: resp.headers[h] for h in REPLAY_HEADERS if h in resp.headers}
    body = resp.body
    if resp.status < 300 and "json" in headers.get("Content-Type", "application/json"):
        try:
            body = json.dumps(strip_xet(json.loads(body)), separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        except ValueError:
            pass
    if resp.status >= 400 and "X-Error-Message" not in headers:
        headers["X-Error-Message"] = _error_text(resp.body) or f"Upstream answered {resp.status}"
    return Answer(resp.status, headers, body)


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return data["error"]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace").strip()


def unavailable_error(exc: UpstreamUnavailable, what: str) -> HubError:
    """The 5xx for an upstream that cannot answer while nothing is cached.

    The client learns what is missing, never the upstream's address: the details go to the log.
    """
    if exc.offline:
        return offline_miss(what)
    log.info("upstream unavailable for %s: %s", what, exc.detail)
    if exc.timeout:
        return upstream_timeout(what)
    return upstream_unreachable(what)


def upstream_failure(answer: Answer) -> HubError:
    """An upstream 5xx, passed on as a gateway error."""
    status = answer.status if answer.status in (502, 503, 504) else 502
    message = answer.headers.get("X-Error-Message") or f"Upstream answered {answer.status}"
    return HubError(status, answer.headers.get("X-Error-Code") or "UpstreamError", f"Upstream error: {message}")


def as_error(answer: Answer) -> HubError:
    """An upstream error answer as hubproxy passes it on (5xx as gateway errors)."""
    if answer.status >= 500:
        return upstream_failure(answer)
    return HubError(answer.status, answer.headers.get("X-Error-Code"),
                    answer.headers.get("X-Error-Message", f"Upstream answered {answer.status}"))


def next_link(link: str) -> str | None:
    """The ``rel="next"`` URL of a Link header."""
    for part in link.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if start != -1 and end > start:
                return part[start + 1: end]
    return None


def api_path(repo_type: str, repo_id: str, *parts: str) -> str:
    """``/api/{T}s/{repo}/...`` with every extra part encoded as one segment."""
    return f"/api/{repo_type}s/{repo_id}" + "".join("/" + quote(p, safe="") for p in parts)


async def tree_pages(upstream: UpstreamClient, path: str, params: dict[str, str]) -> list[dict[str, Any]] | None:
    """Every page of a tree answer joined; None for ``EntryNotFound``; a ``HubError`` for other errors."""
    url: str | None = path
    query: dict[str, str] | None = params
    found: list[dict[str, Any]] = []
    while url:
        answer = from_upstream(await upstream.fetch("GET", url, params=query))
        if answer.status == 404 and answer.headers.get("X-Error-Code") == "EntryNotFound":
            return None
        if answer.status != 200:
            raise as_error(answer)
        found.extend(e for e in answer.json() if isinstance(e, dict) and isinstance(e.get("path"), str))
        url, query = next_link(answer.headers.get("Link", "")), None
    return found


class Flights:
    """Single flight: concurrent callers with the same key share one run of the work."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, key: str, fn: Callable[[], Awaitable[Any]], timeout: float | None = None) -> Any:
        """The result of ``fn()``, run once for every caller of ``key`` meanwhile. With ``timeout``, a caller
        stops waiting (``asyncio.TimeoutError``) while the work goes on for the others."""
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._inflight[key] = fut

            async def work() -> None:
                try:
                    fut.set_result(await fn())
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    fut.set_exception(exc)
                finally:
                    self._inflight.pop(key, None)

            fut.add_done_callback(lambda f: None if f.cancelled() else f.exception())  # never "unretrieved"
            task = asyncio.create_task(work())
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)
        if timeout is None:
            return await asyncio.shield(fut)
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
