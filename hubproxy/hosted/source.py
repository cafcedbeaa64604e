"""The repo source of hosted repos: every answer from the rows a commit wrote, never from the upstream."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timezone
from html import escape
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import Engine

from hubproxy.cache.blobs import BlobCache
from hubproxy.hosted import rows
from hubproxy.hosted.rows import CommitRow, HostedRepo
from hubproxy.hub.errors import HubError, entry_not_found, revision_not_found
from hubproxy.hub.routing import is_commit
from hubproxy.repos import rows as repo_rows
from hubproxy.repos.index import RepoIndex
from hubproxy.repos.model import Entry, Listing, RepoRef, Resolved
from hubproxy.repos.rows import Ref
from hubproxy.upstream.answers import Answer, api_path

DEFAULT_BRANCH = "main"
COMMITS_PAGE = 50
MAX_COMMITS_PAGE = 1000


def iso(ts: float) -> str:
    """A time as the Hub writes it: UTC with milliseconds and ``Z``."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def missing_blob(what: str) -> HubError:
    return HubError(500, "BlobMissing", f"the bytes of {what} are missing from hubproxy's store; "
                                        "an operator must restore them (hosted files have no other copy)")


class HostedSource:
    """Answers about hosted repos (see ``repos/source.py``); ``repo.id`` is the hosted repo's own id."""

    def __init__(self, engine: Engine, index: RepoIndex, cache: BlobCache, xet: bool = True) -> None:
        self.engine = engine
        self.index = index
        self.cache = cache
        #: Whether files uploaded through Xet are shown with their Xet hash (clients then download through Xet).
        self.xet = xet

    async def _read(self, fn: Any) -> Any:
        def run() -> Any:
            with self.engine.connect() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    async def repo(self, repo: RepoRef) -> HostedRepo:
        found = await self._read(lambda c: rows.find_repo(c, repo.type, repo.id))
        if found is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return found

    # -- revisions ------------------------------------------------------------------------
    async def resolve(self, repo: RepoRef, revision: str | None) -> Resolved:
        """Branch, tag, full commit id, or a commit id prefix of at least 7 characters; read afresh every time
        (another replica may just have committed)."""
        name = revision or DEFAULT_BRANCH
        found = await self._read(lambda c: _resolve(c, repo, name))
        if found is None:
            raise revision_not_found(name)
        return Resolved(found)

    async def commit(self, repo: RepoRef, commit: str) -> CommitRow:
        found = await self._read(lambda c: rows.commit_row(c, repo.type, repo.id, commit))
        if found is None:
            raise revision_not_found(commit)
        return found

    async def info(self, repo: RepoRef, commit: str, props: set[str]) -> tuple[dict[str, Any], bool]:
        hosted = await self.repo(repo)
        static = await self.index.commit_info(repo.type, repo.id, commit) or {}
        row = await self.commit(repo, commit)
        info: dict[str, Any] = {
            "_id": f"{repo.type}:{hosted.id}", "id": hosted.id, "author": hosted.id.split("/")[0], "sha": commit,
            "lastModified": iso(row.created_at), "createdAt": iso(hosted.created_at),
            "private": hosted.visibility != "public", "visibility": hosted.visibility,
            "gated": hosted.gated or False, "disabled": False, "downloads": 0, "likes": 0, "xetEnabled": False,
        }
        info.update(static)
        info["tags"] = list(static.get("tags", []))
        return info, False

    # -- files ----------------------------------------------------------------------------
    async def listing(self, repo: RepoRef, commit: str, fetch: bool = True) -> Listing | None:
        listing = await self.index.listing(repo.type, repo.id, commit)
        if listing is None:
            raise revision_not_found(commit)
        return listing

    async def view(self, repo: RepoRef, commit: str, folder: str, recursive: bool) -> tuple[list[Entry] | None, bool]:
        listing = await self.listing(repo, commit)
        assert listing is not None
        return self._shown(listing.view(folder, recursive)), False

    async def expanded(self, repo: RepoRef, commit: str, folder: str, recursive: bool,
                       shown: list[Entry]) -> tuple[list[Entry], bool]:
        return shown, False

    async def entry(self, repo: RepoRef, commit: str, path: str) -> Entry:
        listing = await self.listing(repo, commit)
        assert listing is not None
        return listing.file(path) or Entry(path, "missing")

    async def fetchable(self, repo: RepoRef, commit: str, path: str) -> None:
        entry = await self.entry(repo, commit, path)
        if not entry.is_file:
            raise entry_not_found(commit)
        if entry.blob is None or not await self.cache.stored_now(entry.blob):
            raise missing_blob(f"{path} of {repo.id}")

    async def paths(self, repo: RepoRef, commit: str, paths: list[str], expand: bool) -> tuple[list[Entry], bool]:
        listing = await self.listing(repo, commit)
        assert listing is not None
        return self._shown([listing.by_path[p] for p in dict.fromkeys(paths) if p in listing.by_path]) or [], False

    def _shown(self, entries: list[Entry] | None) -> list[Entry] | None:
        """Entries as clients see them: without Xet hashes when Xet is off here."""
        if self.xet or entries is None:
            return entries
        return [replace(e, extra={k: v for k, v in e.extra.items() if k != "xetHash"} or None)
                if e.extra and "xetHash" in e.extra else e for e in entries]

    async def refs(self, repo: RepoRef) -> tuple[list[Ref], bool]:
        known, _ = await self.index.refs(repo.type, repo.id)
        return known, False

    async def history(self, repo: RepoRef, revision: str, query: list[tuple[str, str]], base_url: str) -> Answer:
        """A page of the commits reachable from the revision, newest first, with ``Link`` to the next."""
        head = (await self.resolve(repo, revision)).commit
        params = dict(query)
        try:
            page = max(0, int(params.get("p", "0")))
            limit = min(MAX_COMMITS_PAGE, max(1, int(params.get("limit", str(COMMITS_PAGE)))))
        except ValueError:
            raise HubError(400, "BadRequest", "p and limit must be whole numbers") from None
        formatted = "formatted" in {v for k, v in query if k in ("expand", "expand[]")}
        found = await self._read(lambda c: rows.history(c, repo.type, repo.id, head))
        shown = found[page * limit:(page + 1) * limit]
        headers = {}
        if (page + 1) * limit < len(found):
            nxt = urlencode([(k, v) for k, v in query if k != "p"] + [("p", str(page + 1))])
            headers["Link"] = f'<{base_url}{api_path(repo.type, repo.id, "commits", revision)}?{nxt}>; rel="next"'
        return Answer.of_json([_commit_json(c, formatted) for c in shown], headers=headers)


def _resolve(conn: Any, repo: RepoRef, name: str) -> str | None:
    """The commit a name is, in the Hub's order: branch or tag (also spelled ``refs/heads/..``, ``refs/tags/..``),
    then a full commit id or an unambiguous prefix of at least 7 hex digits; one connection for all."""
    for candidate in dict.fromkeys((name, name.removeprefix("refs/heads/"), name.removeprefix("refs/tags/"))):
        ref = _ref(conn, repo, candidate)
        if ref is not None:
            return ref
    lowered = name.lower()
    if is_commit(lowered) or (7 <= len(lowered) < 40 and all(ch in "0123456789abcdef" for ch in lowered)):
        found = rows.commits_by_prefix(conn, repo.type, repo.id, lowered)
        if len(found) == 1:
            return found[0]
    return None


def _ref(conn: Any, repo: RepoRef, name: str) -> str | None:
    ref = repo_rows.get_ref(conn, repo.type, repo.id, name)
    return ref.commit if ref is not None and ref.kind in ("branch", "tag") else None


def _commit_json(c: CommitRow, formatted: bool) -> dict[str, Any]:
    body = c.message[len(c.title):].strip() if c.message.startswith(c.title) else c.message
    out: dict[str, Any] = {"id": c.id, "title": c.title, "message": body, "authors": [{"user": c.author}],
                           "date": iso(c.created_at)}
    if formatted:
        out["formatted"] = {"title": escape(c.title), "message": escape(body)}
    return out
