"""Metadata answers: repo info, tree, paths-info, refs, commits; cached, Xet-free.

Answers about a commit never change and are kept for good. Answers about a branch or tag
are fresh for ``revision_ttl`` seconds; after that the upstream is asked again, and when it
is slow (``stale_timeout``), down, or hubproxy is offline, the last known answer is served
with an ``X-HF-Warning``. Errors are only ever the upstream's own (``RevisionNotFound`` and
``EntryNotFound`` are never invented from a cache miss).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from starlette.responses import Response

from hubproxy.cache.index import LRU, CachedAnswer, FileInfo, Index
from hubproxy.config import Settings
from hubproxy.hub.errors import HubError, offline_miss, upstream_timeout, upstream_unreachable
from hubproxy.hub.routing import is_commit
from hubproxy.upstream.client import UpstreamClient, UpstreamResponse, UpstreamUnavailable

log = logging.getLogger(__name__)

XET_KEYS = frozenset({"xetHash", "xetEnabled"})
#: Upstream headers worth keeping with a cached answer.
REPLAY_HEADERS = ("Content-Type", "X-Error-Code", "X-Error-Message", "X-Repo-Commit", "Link", "Retry-After",
                  "RateLimit", "RateLimit-Policy")
STALE_WARNING = "hubproxy; upstream unreachable, serving cached metadata"


def strip_xet(value: Any) -> Any:
    """Drop ``xetHash``/``xetEnabled`` keys at any depth (X3c)."""
    if isinstance(value, dict):
        return {k: strip_xet(v) for k, v in value.items() if k not in XET_KEYS}
    if isinstance(value, list):
        return [strip_xet(v) for v in value]
    return value


def api_path(repo_type: str, repo_id: str, *parts: str) -> str:
    """``/api/{T}s/{repo}/...`` with every extra part encoded as one segment."""
    return f"/api/{repo_type}s/{repo_id}" + "".join("/" + quote(p, safe="") for p in parts)


def query_key(items: Iterable[tuple[str, str]]) -> str:
    return urlencode(sorted(items))


def info_key(repo_type: str, repo_id: str, commit: str, qk: str = "") -> str:
    """Cache key of a repo info answer at a commit, for one query string."""
    return f"info|{repo_type}|{repo_id}|{commit}|{qk}"


def tree_key(repo_type: str, repo_id: str, commit: str, path: str, recursive: bool, expand: bool) -> str:
    """Cache key of a whole (all pages) tree listing at a commit."""
    return f"tree|{repo_type}|{repo_id}|{commit}|{path}|{int(recursive)}|{int(expand)}"


def refs_key(repo_type: str, repo_id: str, include_prs: bool) -> str:
    return f"refs|{repo_type}|{repo_id}|{int(include_prs)}"


def tree_view(entries: list[dict[str, Any]], path: str, recursive: bool, expand: bool) -> list[dict[str, Any]] | None:
    """A listing of ``path`` computed from a full recursive listing; None if ``path`` is no folder in it."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    if prefix and not any(e["path"].startswith(prefix) for e in entries):
        return None
    view = []
    for e in entries:
        rel = e["path"][len(prefix):] if e["path"].startswith(prefix) else None
        if not rel or (not recursive and "/" in rel):
            continue
        view.append(e if expand else {k: v for k, v in e.items() if k not in ("lastCommit", "securityFileStatus")})
    return view


@dataclass
class Answer:
    """An answer ready to send: status, headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes
    stale: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, cached: CachedAnswer, stale: bool = False) -> Answer:
        return cls(cached.status, dict(cached.headers), cached.body, stale)

    def json(self) -> Any:
        return json.loads(self.body)

    def to_response(self) -> Response:
        headers = {k: v for k, v in self.headers.items() if k != "Content-Type"}
        headers.update(self.extra)
        if self.stale:
            headers["X-HF-Warning"] = STALE_WARNING
        media = self.headers.get("Content-Type", "application/json")
        return Response(self.body, status_code=self.status, headers=headers, media_type=media)


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
    """The 5xx for an upstream that cannot answer while nothing is cached (E4, P4).

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


async def fetch_tree(upstream: UpstreamClient, repo_type: str, repo_id: str, commit: str, path: str,
                     recursive: bool, expand: bool) -> Answer:
    """The whole upstream listing of ``path`` at ``commit``: every page, joined, Xet keys stripped."""
    parts = ["tree", commit] + ([path] if path else [])
    url: str | None = api_path(repo_type, repo_id, *parts)
    params: Any = {"recursive": str(recursive).lower(), "expand": str(expand).lower()}
    entries: list[Any] = []
    while url:
        resp = await upstream.fetch("GET", url, params=params)
        answer = from_upstream(resp)
        if answer.status != 200:
            return answer
        entries.extend(answer.json())
        url = _next_link(resp.headers.get("Link", ""))
        params = None
    body = json.dumps(entries, separators=(",", ":")).encode()
    return Answer(200, {"Content-Type": "application/json"}, body)


class Metadata:
    """Serves the metadata routes from cache or upstream."""

    def __init__(self, settings: Settings, index: Index, upstream: UpstreamClient) -> None:
        self.settings = settings
        self.index = index
        self.upstream = upstream
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._trees: LRU[str, list[dict[str, Any]]] = LRU(32)
        self._listed_files: LRU[str, dict[str, dict[str, Any]]] = LRU(32)

    def forget_repo(self, repo_type: str, repo_id: str) -> None:
        """Drop parsed listings of a purged repo."""
        marker = f"|{repo_type}|{repo_id}|"
        self._trees.drop_where(lambda k: marker in k)
        self._listed_files.drop_where(lambda k: marker in k)

    # -- plumbing ---------------------------------------------------------------------
    async def single_flight(self, key: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``fn`` once for concurrent callers with the same key."""
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut

        async def run() -> None:
            try:
                fut.set_result(await fn())
            except BaseException as exc:  # noqa: BLE001
                fut.set_exception(exc)
            finally:
                self._inflight.pop(key, None)

        task = asyncio.create_task(run())
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(fut)

    async def _fetch(
        self, key: str, method: str, path: str, *, params: Any = None, data: Any = None,
        headers: dict[str, str] | None = None, stale_possible: bool = False,
        persist: Callable[[Answer], Awaitable[None]] | None = None,
    ) -> Answer:
        """One upstream request for concurrent callers; ``persist`` stores the answer once, inside the flight."""

        async def go() -> Answer:
            answer = from_upstream(await self.upstream.fetch(method, path, params=params, data=data, headers=headers))
            if persist is not None:
                await persist(answer)
            return answer

        task = self.single_flight(key, go)
        if stale_possible:
            try:
                return await asyncio.wait_for(asyncio.shield(task), self.settings.stale_timeout)
            except asyncio.TimeoutError:
                raise UpstreamUnavailable(f"no answer within {self.settings.stale_timeout}s", timeout=True) from None
        return await task

    async def _fetch_or_stale(self, flight_key: str, method: str, path: str, hit: CachedAnswer | None, what: str,
                              *, params: Any = None, data: Any = None,
                              persist: Callable[[Answer], Awaitable[None]] | None = None) -> Answer:
        """Ask the upstream; when it is down, slow or overloaded, fall back to ``hit`` (marked stale).

        With nothing cached, an unreachable upstream is a 502/504 and an upstream 5xx a 502; a 429 is passed
        on so the client backs off.
        """
        try:
            answer = await self._fetch(flight_key, method, path, params=params, data=data,
                                       stale_possible=hit is not None, persist=persist)
        except UpstreamUnavailable as exc:
            if hit is not None:
                return Answer.of(hit, stale=True)
            raise unavailable_error(exc, what) from None
        if answer.status >= 500 or answer.status == 429:
            if hit is not None:
                return Answer.of(hit, stale=True)
            if answer.status == 429:
                return answer
            raise upstream_failure(answer)
        return answer

    async def cached(
        self, key: str, method: str, path: str, *, immutable: bool, params: Any = None, data: Any = None,
        keep: Callable[[Answer], bool] = lambda a: a.status == 200, what: str = "this metadata",
    ) -> Answer:
        """The generic cache: fresh hit, else upstream, else the stale answer, else a 5xx."""
        hit = await self.index.get_meta(key)
        if hit is not None and (immutable or hit.age() < self.settings.revision_ttl):
            return Answer.of(hit)
        async def persist(answer: Answer) -> None:
            if keep(answer):
                await self.index.put_meta(key, answer.status, answer.headers, answer.body)

        return await self._fetch_or_stale(key, method, path, hit, what, params=params, data=data, persist=persist)

    # -- revisions --------------------------------------------------------------------
    async def resolve_commit(self, repo_type: str, repo_id: str, rev: str) -> str:
        """Map a revision to its commit (a commit maps to itself, with no upstream call)."""
        if is_commit(rev):
            return rev
        ref = await self.index.get_ref(repo_type, repo_id, rev, self.settings.revision_ttl)
        if ref is not None and _age(ref.fetched_at) < self.settings.revision_ttl:
            return ref.commit
        answer = await self.repo_info(repo_type, repo_id, rev, [])
        if answer.status != 200:
            raise HubError(answer.status, answer.headers.get("X-Error-Code"),
                           answer.headers.get("X-Error-Message", "Upstream error"))
        sha = _sha_of(answer)
        if sha is None:
            raise HubError(502, "UpstreamError", f"Upstream repo info for {repo_id}@{rev} has no commit sha")
        return sha

    async def repo_info(self, repo_type: str, repo_id: str, rev: str | None, query: list[tuple[str, str]]) -> Answer:
        """``/api/{T}/{repo}`` and ``/api/{T}/{repo}/revision/{rev}``."""
        qk = query_key(query)
        path = api_path(repo_type, repo_id, "revision", rev) if rev else api_path(repo_type, repo_id)

        def key_for(commit: str) -> str:
            return info_key(repo_type, repo_id, commit, qk)

        if rev and is_commit(rev):
            try:
                return await self.cached(key_for(rev), "GET", path, immutable=True, params=query,
                                         what=f"{repo_type} {repo_id} at {rev}")
            except HubError as exc:
                stand_in = await self._stand_in(repo_type, repo_id, rev, query) if exc.status >= 500 else None
                if stand_in is None:
                    raise
                return stand_in
        name = rev or ""
        ref = await self.index.get_ref(repo_type, repo_id, name, self.settings.revision_ttl)
        hit = await self.index.get_meta(key_for(ref.commit)) if ref is not None else None
        if hit is not None and ref is not None and _age(ref.fetched_at) < self.settings.revision_ttl:
            return Answer.of(hit)
        if ref is None and name == "":
            # The default branch was only ever asked for by name (snapshot_download asks for "main"): that is
            # what to show if the upstream cannot say which branch is the default.
            ref = await self.index.get_ref(repo_type, repo_id, "main")
        if hit is None and ref is not None:  # used only if the upstream cannot answer
            stand_in = await self._stand_in(repo_type, repo_id, ref.commit, query)
            hit = CachedAnswer(stand_in.status, stand_in.headers, stand_in.body, 0.0) if stand_in else None

        async def persist(answer: Answer) -> None:
            sha = _sha_of(answer) if answer.status == 200 else None
            if sha:
                await self.index.set_ref(repo_type, repo_id, name, sha)
                await self.index.put_meta(key_for(sha), answer.status, answer.headers, answer.body)

        return await self._fetch_or_stale(f"GET {path}?{qk}", "GET", path, hit,
                                          f"{repo_type} {repo_id} at {name or 'the default branch'}", params=query,
                                          persist=persist)

    # -- tree -------------------------------------------------------------------------
    async def _full_tree(self, repo_type: str, repo_id: str, commit: str, path: str,
                         recursive: bool, expand: bool) -> tuple[Answer, list[dict[str, Any]] | None]:
        """The whole listing at a commit (every upstream page), cached for good."""
        key = tree_key(repo_type, repo_id, commit, path, recursive, expand)
        entries = self._trees.get(key)
        if entries is not None:
            return Answer(200, {"Content-Type": "application/json"}, b""), entries
        hit = await self.index.get_meta(key)
        if hit is not None:
            answer = Answer.of(hit)
        else:
            async def fetch_and_keep() -> Answer:
                answer = await fetch_tree(self.upstream, repo_type, repo_id, commit, path, recursive, expand)
                if answer.status == 200 or answer.headers.get("X-Error-Code") == "EntryNotFound":
                    await self.index.put_meta(key, answer.status, answer.headers, answer.body)
                return answer

            try:
                answer = await self.single_flight(key, fetch_and_keep)
            except UpstreamUnavailable as exc:
                derived = await self._derived_tree(repo_type, repo_id, commit, path, recursive, expand)
                if derived is None:
                    raise unavailable_error(exc, f"the tree of {repo_id} at {commit}") from None
                return derived  # computed again next time: the upstream's own answer is the one to keep
            if answer.status >= 500:
                derived = await self._derived_tree(repo_type, repo_id, commit, path, recursive, expand)
                if derived is None:
                    raise upstream_failure(answer)
                return derived
        if answer.status != 200:
            return answer, None
        # A partially imported revision lists what its bundle carried (see ``Index.left_out_paths``).
        entries = without(json.loads(answer.body), await self.index.left_out_paths(repo_type, repo_id, commit))
        self._trees.put(key, entries)
        return answer, entries

    async def tree(self, repo_type: str, repo_id: str, rev: str, path: str, recursive: bool,
                   expand: bool, cursor: int, base_url: str) -> Answer:
        """One page of the listing, with an absolute ``Link`` to the next page on hubproxy."""
        commit = await self.resolve_commit(repo_type, repo_id, rev)
        answer, entries = await self._full_tree(repo_type, repo_id, commit, path, recursive, expand)
        if entries is None:
            return answer
        size = self.settings.tree_expand_page_size if expand else self.settings.tree_page_size
        page = entries[cursor: cursor + size]
        headers = {"Content-Type": "application/json"}
        if cursor + size < len(entries):
            parts = ["tree", commit] + ([path] if path else [])
            query = urlencode({"recursive": str(recursive).lower(), "expand": str(expand).lower(),
                               "cursor": cursor + size})
            headers["Link"] = f'<{base_url}{api_path(repo_type, repo_id, *parts)}?{query}>; rel="next"'
        return Answer(200, headers, json.dumps(page, separators=(",", ":")).encode(), stale=answer.stale)

    # -- paths-info -------------------------------------------------------------------
    async def paths_info(self, repo_type: str, repo_id: str, rev: str, paths: list[str], expand: bool) -> Answer:
        commit = await self.resolve_commit(repo_type, repo_id, rev)
        digest = hashlib.sha256(json.dumps(sorted(set(paths))).encode()).hexdigest()
        key = f"paths|{repo_type}|{repo_id}|{commit}|{int(expand)}|{digest}"
        form = [("paths", p) for p in paths] + [("expand", str(expand).lower())]
        try:
            return await self.cached(key, "POST", api_path(repo_type, repo_id, "paths-info", commit),
                                     immutable=True, data=form, what=f"paths-info of {repo_id} at {commit}")
        except HubError:
            local = await self._paths_from_tree(repo_type, repo_id, commit, paths, expand)
            if local is None:
                raise
            return local

    async def _paths_from_tree(self, repo_type: str, repo_id: str, commit: str, paths: list[str],
                               expand: bool) -> Answer | None:
        """paths-info computed from the commit's full listing, for when the upstream cannot answer.

        Exact without ``expand``; with it, the expanded fields are missing, so the answer is marked stale.
        """
        entries = await self._listing(repo_type, repo_id, commit)
        if entries is None:
            return None
        by_path = {e["path"]: e for e in entries}
        found = [by_path[p.strip("/")] for p in dict.fromkeys(paths) if p.strip("/") in by_path]
        return Answer(200, {"Content-Type": "application/json"}, json.dumps(found).encode(), stale=expand)

    # -- answers derived from a commit's full listing ---------------------------------
    # A commit never changes, so its full recursive listing (cached from the upstream, or written by
    # ``hubproxy sync import``) answers any folder listing and any paths-info at that commit, and says
    # for certain which files do not exist. These stand in when the upstream cannot answer.
    async def _listing(self, repo_type: str, repo_id: str, commit: str) -> list[dict[str, Any]] | None:
        """The commit's full recursive listing, if hubproxy holds it (parsed once, then kept in memory)."""
        key = tree_key(repo_type, repo_id, commit, "", True, False)
        entries = self._trees.get(key)
        if entries is None:
            hit = await self.index.get_meta(key)
            if hit is None or hit.status != 200:
                return None
            entries = without(json.loads(hit.body), await self.index.left_out_paths(repo_type, repo_id, commit))
            self._trees.put(key, entries)
        return entries

    async def listed_file(self, repo_type: str, repo_id: str, commit: str, path: str) -> FileInfo | None:
        """What ``path`` is at ``commit`` by the commit's full listing (``blob`` None: certainly missing);
        None if hubproxy does not hold that listing."""
        key = tree_key(repo_type, repo_id, commit, "", True, False)
        files = self._listed_files.get(key)
        if files is None:
            entries = await self._listing(repo_type, repo_id, commit)
            if entries is None:
                return None
            files = {e["path"]: e for e in entries if e.get("type") == "file"}
            self._listed_files.put(key, files)
        entry = files.get(path)
        if entry is None:
            return FileInfo(None, 0, False, "")
        lfs = entry.get("lfs")
        blob = lfs["oid"] if lfs else entry.get("oid")
        size = lfs["size"] if lfs else entry.get("size")
        if not isinstance(blob, str) or not isinstance(size, int):
            return None  # a listing without hashes or sizes cannot stand in for the upstream
        return FileInfo(blob, size, bool(lfs), blob)

    async def _plain_info(self, repo_type: str, repo_id: str, commit: str) -> CachedAnswer | None:
        """The commit's repo info without query parameters: a stand-in for any other variant of it."""
        hit = await self.index.get_meta(info_key(repo_type, repo_id, commit))
        return hit if hit is not None and hit.status == 200 else None

    async def _stand_in(self, repo_type: str, repo_id: str, commit: str,
                        query: list[tuple[str, str]]) -> Answer | None:
        """A variant of the commit's repo info made from what is cached, for when the upstream cannot answer.

        The plain info stands in for every variant; with ``blobs=true`` each sibling gets its size, blob id
        and LFS fields from the commit's full listing. Marked stale (``X-HF-Warning``) whenever it is not the
        plain answer itself.
        """
        plain = await self._plain_info(repo_type, repo_id, commit)
        if plain is None:
            return None
        answer = Answer.of(plain, stale=bool(query))
        wants_blobs = any(k in ("blobs", "files_metadata") and v.lower() in ("1", "true") for k, v in query)
        entries = await self._listing(repo_type, repo_id, commit) if wants_blobs else None
        if entries is not None:
            by_path = {e["path"]: e for e in entries if e.get("type") == "file"}
            info = answer.json()
            info["siblings"] = [_sibling_with_blobs(x, by_path.get(x.get("rfilename", "")))
                                for x in info.get("siblings", []) if isinstance(x, dict)]
            answer.body = json.dumps(info, separators=(",", ":")).encode()
        return answer

    async def _derived_tree(self, repo_type: str, repo_id: str, commit: str, path: str, recursive: bool,
                            expand: bool) -> tuple[Answer, list[dict[str, Any]] | None] | None:
        """A folder listing computed from the commit's full listing (as ``_full_tree`` returns it)."""
        entries = await self._listing(repo_type, repo_id, commit)
        if entries is None:
            return None
        view = tree_view(entries, path, recursive, expand)
        if view is None:
            message = f'{path} does not exist on "{commit}"'
            return Answer(404, {"Content-Type": "application/json", "X-Error-Code": "EntryNotFound",
                                "X-Error-Message": message}, json.dumps({"error": message}).encode()), None
        # With expand, the expanded fields are missing: say so with the stale warning.
        return Answer(200, {"Content-Type": "application/json"}, b"", stale=expand), view

    # -- refs and commits -------------------------------------------------------------
    async def refs(self, repo_type: str, repo_id: str, include_prs: bool) -> Answer:
        key = refs_key(repo_type, repo_id, include_prs)
        params = {"include_prs": "1"} if include_prs else None
        answer = await self.cached(key, "GET", api_path(repo_type, repo_id, "refs"), immutable=False,
                                   params=params, what=f"the refs of {repo_id}")
        if answer.status == 200 and not answer.stale:
            data = answer.json()
            for kind in ("branches", "tags"):
                for ref in data.get(kind, []):
                    if ref.get("name") and is_commit(ref.get("targetCommit")):
                        current = await self.index.get_ref(repo_type, repo_id, ref["name"])
                        if current is None or current.commit != ref["targetCommit"]:
                            await self.index.set_ref(repo_type, repo_id, ref["name"], ref["targetCommit"])
        return answer

    async def commits(self, repo_type: str, repo_id: str, rev: str, query: list[tuple[str, str]],
                      base_url: str) -> Answer:
        key = f"commits|{repo_type}|{repo_id}|{rev}|{query_key(query)}"
        answer = await self.cached(key, "GET", api_path(repo_type, repo_id, "commits", rev),
                                   immutable=is_commit(rev), params=query, what=f"the commits of {repo_id}")
        link = answer.headers.get("Link")
        if link:
            answer.headers["Link"] = self.rewrite_link(link, base_url)
        return answer

    def rewrite_link(self, link: str, base_url: str) -> str:
        """Point an upstream ``Link`` at hubproxy (G10, M8)."""
        return link.replace(self.upstream.base, base_url)


def _sibling_with_blobs(sibling: dict[str, Any], entry: dict[str, Any] | None) -> dict[str, Any]:
    """A repo-info sibling as ``blobs=true`` gives it, from the file's listing entry."""
    if entry is None:
        return sibling
    out = {**sibling, "size": entry.get("size"), "blobId": entry.get("oid")}
    lfs = entry.get("lfs")
    if isinstance(lfs, dict):
        out["lfs"] = {"sha256": lfs.get("oid"), "size": lfs.get("size"), "pointerSize": lfs.get("pointerSize")}
    return out


def without(entries: list[dict[str, Any]], paths: set[str]) -> list[dict[str, Any]]:
    """A full listing without some files, and without the folders that held only those."""
    if not paths:
        return entries
    kept = [e for e in entries if e.get("type") != "file" or e.get("path") not in paths]
    files = [e["path"] for e in kept if e.get("type") == "file"]
    return [e for e in kept if e.get("type") == "file" or any(f.startswith(e["path"] + "/") for f in files)]


def _age(ts: float) -> float:
    import time

    return time.time() - ts


def _sha_of(answer: Answer) -> str | None:
    try:
        sha = answer.json().get("sha")
    except (ValueError, AttributeError):
        return None
    return sha if is_commit(sha) else None


def _next_link(link: str) -> str | None:
    """The ``rel="next"`` URL of a Link header."""
    for part in link.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if start != -1 and end > start:
                return part[start + 1: end]
    return None
