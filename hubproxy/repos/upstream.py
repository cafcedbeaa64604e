"""Mirrored repos: what the upstream says, asked once, kept as rows, and stood in for when it cannot answer.

Answers about a commit never change and are kept for good. A branch or tag maps to a commit for
``revision_ttl`` seconds; after that the upstream is asked again, and when it is slow (``stale_timeout``),
down, or hubproxy is offline, the last known answer is served, marked stale. Errors are only ever the
upstream's own: ``RevisionNotFound`` and ``EntryNotFound`` are never made up from a cache miss, except
for what hubproxy knows for certain (a commit's complete listing says which paths do not exist).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from hubproxy.config import Settings
from hubproxy.hub.errors import HubError
from hubproxy.hub.routing import is_commit
from hubproxy.repos.index import RepoIndex
from hubproxy.repos.model import REF_KINDS, Entry, Listing, RepoRef, Resolved
from hubproxy.repos.rows import Ref
from hubproxy.repos.upstream_files import UpstreamFiles
from hubproxy.upstream.answers import (
    Answer,
    Flights,
    api_path,
    as_error,
    from_upstream,
    unavailable_error,
    upstream_failure,
)
from hubproxy.upstream.client import UpstreamClient, UpstreamUnavailable

#: Key under which repo info remembers the properties the upstream did not return when asked for them.
ABSENT = "__hubproxy_absent"


def sha_of(answer: Answer) -> str | None:
    try:
        sha = answer.json().get("sha")
    except (ValueError, AttributeError):
        return None
    return sha if is_commit(sha) else None


class UpstreamSource:
    """The repo source of mirrored repos (see ``source.py``)."""

    def __init__(self, settings: Settings, index: RepoIndex, upstream: UpstreamClient) -> None:
        self.settings = settings
        self.index = index
        self.upstream = upstream
        self.flights = Flights()
        self.files = UpstreamFiles(self)

    # -- plumbing -----------------------------------------------------------------------
    async def ask(self, key: str, method: str, path: str, *, params: Any = None, data: Any = None,
                  stale_possible: bool = False, persist: Callable[[Answer], Awaitable[None]] | None = None) -> Answer:
        """One upstream request for concurrent callers; ``persist`` stores the answer once, inside the flight.

        With ``stale_possible`` (a cached answer can stand in), a caller waits at most ``stale_timeout``.
        """

        async def go() -> Answer:
            answer = from_upstream(await self.upstream.fetch(method, path, params=params, data=data))
            if persist is not None:
                await persist(answer)
            return answer

        try:
            return await self.flights.run(key, go, self.settings.stale_timeout if stale_possible else None)
        except asyncio.TimeoutError:
            raise UpstreamUnavailable(f"no answer within {self.settings.stale_timeout}s", timeout=True) from None

    def fresh(self, fetched_at: float) -> bool:
        return time.time() - fetched_at < self.settings.revision_ttl

    # -- revisions ------------------------------------------------------------------------
    async def resolve(self, repo: RepoRef, revision: str | None) -> Resolved:
        if revision and is_commit(revision):
            return Resolved(revision)
        name = revision or ""
        ref = await self.index.ref(repo.type, repo.id, name, self.settings.revision_ttl)
        if ref is not None and self.fresh(ref.fetched_at):
            return Resolved(ref.commit)
        if ref is None and name == "":
            # The default branch was only ever asked for by name (snapshot_download asks for "main"): that
            # is what to show if the upstream cannot say which branch is the default.
            ref = await self.index.ref(repo.type, repo.id, "main")
        path = api_path(repo.type, repo.id, "revision", revision) if revision else api_path(repo.type, repo.id)
        what = f"{repo.type} {repo.id} at {name or 'the default branch'}"
        try:
            answer = await self.ask(f"GET {path}", "GET", path, stale_possible=ref is not None,
                                    persist=self.keep_revision(repo, name))
        except UpstreamUnavailable as exc:
            if ref is not None:
                return Resolved(ref.commit, stale=True)
            raise unavailable_error(exc, what) from None
        if answer.status >= 500 or answer.status == 429:
            if ref is not None:
                return Resolved(ref.commit, stale=True)
            raise upstream_failure(answer) if answer.status >= 500 else as_error(answer)
        if answer.status != 200:
            raise as_error(answer)
        sha = sha_of(answer)
        if sha is None:
            raise HubError(502, "UpstreamError", f"Upstream repo info for {repo.id}@{name} has no commit sha")
        return Resolved(sha)

    def keep_revision(self, repo: RepoRef, name: str) -> Callable[[Answer], Awaitable[None]]:
        """Store a repo info answer: the commit's info, and where the revision points now."""

        async def persist(answer: Answer) -> None:
            sha = sha_of(answer) if answer.status == 200 else None
            if sha:
                await self.index.put_commit_info(repo.type, repo.id, sha, answer.json())
                await self.index.set_ref(repo.type, repo.id, name, sha, "seen")

        return persist

    async def info(self, repo: RepoRef, commit: str, props: set[str]) -> tuple[dict[str, Any], bool]:
        info = await self.index.commit_info(repo.type, repo.id, commit)
        missing = set(props) - set(info or {}) - set((info or {}).get(ABSENT, [])) if info is not None else set()
        if info is not None and not missing:
            return info, False
        query = [("expand", p) for p in sorted(missing)]
        path = api_path(repo.type, repo.id, "revision", commit)
        try:
            answer = await self.ask(f"GET {path}?{urlencode(query)}", "GET", path, params=query or None,
                                    stale_possible=info is not None)
        except UpstreamUnavailable as exc:
            if info is not None:
                return info, True
            raise unavailable_error(exc, f"{repo.type} {repo.id} at {commit}") from None
        if answer.status != 200:
            if info is not None and (answer.status >= 500 or answer.status == 429):
                return info, True
            raise as_error(answer)
        fetched = answer.json()
        merged = {**(info or {}), **fetched}
        if missing:
            merged[ABSENT] = sorted(set((info or {}).get(ABSENT, [])) | (missing - set(fetched)))
        await self.index.put_commit_info(repo.type, repo.id, commit, merged)
        return merged, False

    # -- refs and history -----------------------------------------------------------------
    async def refs(self, repo: RepoRef) -> tuple[list[Ref], bool]:
        known, fetched_at = await self.index.refs(repo.type, repo.id)
        if fetched_at and self.fresh(fetched_at):
            return known, False
        path = api_path(repo.type, repo.id, "refs")
        try:
            answer = await self.ask(f"GET {path}", "GET", path, params={"include_prs": "1"},
                                    stale_possible=bool(fetched_at))
        except UpstreamUnavailable as exc:
            if fetched_at:
                return known, True
            raise unavailable_error(exc, f"the refs of {repo.id}") from None
        if answer.status != 200:
            if fetched_at and (answer.status >= 500 or answer.status == 429):
                return known, True
            raise as_error(answer)
        data = answer.json()
        listed = [Ref(r["name"], r["targetCommit"], kind, time.time())
                  for group, kind in REF_KINDS.items() for r in data.get(group) or []
                  if isinstance(r, dict) and isinstance(r.get("name"), str) and is_commit(r.get("targetCommit"))]
        await self.index.replace_listed_refs(repo.type, repo.id, listed)
        return (await self.index.refs(repo.type, repo.id))[0], False

    async def history(self, repo: RepoRef, revision: str, query: list[tuple[str, str]], base_url: str) -> Answer:
        """Commit history pages are replayed as the upstream gave them (hubproxy does not model them)."""
        key = f"commits|{repo.type}|{repo.id}|{revision}|{urlencode(sorted(query))}"
        hit = await self.index.answer(key)
        if hit is not None and (is_commit(revision) or self.fresh(hit[3])):
            answer = Answer(hit[0], hit[1], hit[2])
        else:
            path = api_path(repo.type, repo.id, "commits", revision)

            async def persist(answer: Answer) -> None:
                if answer.status == 200:
                    await self.index.put_answer(key, answer.status, answer.headers, answer.body)

            try:
                answer = await self.ask(f"GET {key}", "GET", path, params=query, stale_possible=hit is not None,
                                        persist=persist)
            except UpstreamUnavailable as exc:
                if hit is None:
                    raise unavailable_error(exc, f"the commits of {repo.id}") from None
                answer = Answer(hit[0], hit[1], hit[2], stale=True)
            if answer.status >= 500 and hit is not None:
                answer = Answer(hit[0], hit[1], hit[2], stale=True)
            elif answer.status >= 500:
                raise upstream_failure(answer)
        link = answer.headers.get("Link")
        if link:
            answer.headers = {**answer.headers, "Link": link.replace(self.upstream.base, base_url)}
        return answer

    # -- files (``upstream_files.py``) ----------------------------------------------------
    async def listing(self, repo: RepoRef, commit: str, fetch: bool = True) -> Listing | None:
        return await self.files.listing(repo, commit, fetch)

    async def view(self, repo: RepoRef, commit: str, folder: str, recursive: bool) -> tuple[list[Entry] | None, bool]:
        return await self.files.view(repo, commit, folder, recursive)

    async def expanded(self, repo: RepoRef, commit: str, folder: str, recursive: bool,
                       shown: list[Entry]) -> tuple[list[Entry], bool]:
        return await self.files.expanded(repo, commit, folder, recursive, shown)

    async def entry(self, repo: RepoRef, commit: str, path: str) -> Entry:
        return await self.files.entry(repo, commit, path)

    async def fetchable(self, repo: RepoRef, commit: str, path: str) -> None:
        await self.files.fetchable(repo, commit, path)

    async def paths(self, repo: RepoRef, commit: str, paths: list[str], expand: bool) -> tuple[list[Entry], bool]:
        return await self.files.paths(repo, commit, paths, expand)

