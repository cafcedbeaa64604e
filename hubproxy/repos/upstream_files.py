"""Mirrored repos' files: listings, folder views, single paths, paths-info and expanded fields.

A commit's complete listing (every page of its recursive tree) is fetched once and kept as rows; any
folder view, paths-info answer and "does this path exist" is then answered from it, online or not.
Without it, a folder view or a paths-info is asked of the upstream as such (a non-recursive listing of
a large dataset's root should not cost its whole tree), and what it answers is kept too.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urljoin

from hubproxy.hub.errors import HubError, entry_not_found
from hubproxy.hub.routing import resolve_url_path
from hubproxy.repos.model import FILE, LEFT_OUT, MISSING, Entry, Listing, RepoRef, entry_of
from hubproxy.upstream.answers import (
    api_path,
    as_error,
    from_upstream,
    tree_pages,
    unavailable_error,
)
from hubproxy.upstream.client import UpstreamUnavailable
from hubproxy.upstream.recent import Recent

if TYPE_CHECKING:
    from hubproxy.repos.upstream import UpstreamSource

#: Seconds a file the upstream's HEAD found counts as fetchable without asking again.
FOUND_SECONDS = 5.0
#: Fields only a listing with ``expand=true`` carries.
EXPANDED = "lastCommit"


def normalize_etag(value: str | None) -> str | None:
    """The client's normalization of an ETag: drop ``W/`` and quotes."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None


def _head_key(repo: RepoRef, commit: str, path: str) -> str:
    """The single flight of the upstream's HEAD of a file, and what is remembered of its answer."""
    return f"HEAD|{repo.type}|{repo.id}|{commit}|{path}"


class UpstreamFiles:
    def __init__(self, source: UpstreamSource) -> None:
        self.source = source
        self.index = source.index
        self.upstream = source.upstream
        #: Files the upstream's HEAD has just found (``upstream/recent.py``).
        self._headed: Recent[bool] = Recent(FOUND_SECONDS)

    def _tree_path(self, repo: RepoRef, commit: str, folder: str) -> str:
        return api_path(repo.type, repo.id, "tree", commit, *([folder] if folder else []))

    # -- listings and views ----------------------------------------------------------------
    async def listing(self, repo: RepoRef, commit: str, fetch: bool = True) -> Listing | None:
        listing = await self.index.listing(repo.type, repo.id, commit)
        if listing is not None or not fetch:
            return listing

        async def fetch() -> Listing:
            found = await tree_pages(self.upstream, self._tree_path(repo, commit, ""), {"recursive": "true", "expand": "false"})
            return await self.index.put_listing(repo.type, repo.id, commit, [entry_of(e) for e in found or []])

        try:
            return await self.source.flights.run(f"listing|{repo.type}|{repo.id}|{commit}", fetch)
        except UpstreamUnavailable:
            return None
        except HubError as exc:
            if exc.status >= 500:
                return None
            raise

    async def view(self, repo: RepoRef, commit: str, folder: str, recursive: bool) -> tuple[list[Entry] | None, bool]:
        listing = await self.index.listing(repo.type, repo.id, commit)
        if listing is None and not folder and recursive:
            listing = await self.listing(repo, commit)
            if listing is None:
                raise unavailable_error(UpstreamUnavailable("no listing", offline=self.upstream.offline),
                                        f"the tree of {repo.id} at {commit}")
        if listing is not None:
            return listing.view(folder, recursive), False
        key = f"view|{repo.type}|{repo.id}|{commit}|{folder}|{int(recursive)}"
        hit = await self.index.answer(key)
        if hit is not None:
            paths = json.loads(hit[2])
            if paths is None:
                return None, False
            shown = [await self.index.entry(repo.type, repo.id, commit, p) for p in paths]
            if all(e is not None for e in shown):
                return [e for e in shown if e is not None], False

        async def fetch() -> list[Entry] | None:
            found = await tree_pages(self.upstream, self._tree_path(repo, commit, folder),
                                      {"recursive": str(recursive).lower(), "expand": "false"})
            shown = [entry_of(e) for e in found] if found is not None else None
            await self.index.put_entries(repo.type, repo.id, commit, shown or [])
            await self.index.put_answer(key, 200, {}, json.dumps([e.path for e in shown]
                                                                if shown is not None else None).encode())
            return shown

        try:
            return await self.source.flights.run(key, fetch), False
        except UpstreamUnavailable as exc:
            raise unavailable_error(exc, f"the tree of {repo.id} at {commit}") from None

    async def expanded(self, repo: RepoRef, commit: str, folder: str, recursive: bool,
                       shown: list[Entry]) -> tuple[list[Entry], bool]:
        """``shown`` with its expanded fields; stale (fields missing) if the upstream cannot give them now."""
        if all(e.extra and EXPANDED in e.extra for e in shown):
            return shown, False

        async def fetch() -> dict[str, Entry]:
            found = await tree_pages(self.upstream, self._tree_path(repo, commit, folder),
                                      {"recursive": str(recursive).lower(), "expand": "true"})
            entries = [entry_of(e) for e in found or []]
            await self.index.put_entries(repo.type, repo.id, commit, entries)
            return {e.path: e for e in entries}

        try:
            by_path = await self.source.flights.run(f"expand|{repo.type}|{repo.id}|{commit}|{folder}|{recursive}",
                                                    fetch)
        except (UpstreamUnavailable, HubError):
            return shown, True
        return [by_path.get(e.path, e) for e in shown], False

    # -- single paths ----------------------------------------------------------------------
    async def entry(self, repo: RepoRef, commit: str, path: str) -> Entry:
        found = self.index.peek_entry(repo.type, repo.id, commit, path)
        if found is None:
            found = await self.index.entry(repo.type, repo.id, commit, path)
        if found is not None and found.kind != LEFT_OUT:
            return found
        if found is None:
            listing = await self.index.listing(repo.type, repo.id, commit)
            if listing is not None:  # a complete listing knows every file, and that no other exists
                return listing.file(path) or Entry(path, MISSING)
        key = _head_key(repo, commit, path)
        return await self.source.flights.run(key, lambda: self._head(key, repo, commit, path, found))

    async def _head(self, key: str, repo: RepoRef, commit: str, path: str, known: Entry | None) -> Entry:
        try:
            resp = await self.upstream.head_file(resolve_url_path(repo.type, repo.id, commit, path))
        except UpstreamUnavailable as exc:
            if known is not None and known.kind == LEFT_OUT:
                raise entry_not_found(commit, f"{path} was left out of the bundle imported at this site, "
                                              "and the upstream cannot be asked") from None
            raise unavailable_error(exc, f"{path} of {repo.id} at {commit}") from None
        code = resp.headers.get("X-Error-Code")
        if resp.status == 404 and code == "EntryNotFound":
            found = Entry(path, MISSING)
        elif resp.status >= 500:
            raise HubError(502, code or "UpstreamError", f"Upstream answered {resp.status} for {path}")
        elif resp.status >= 400:
            raise HubError(resp.status, code, resp.headers.get("X-Error-Message", f"Upstream answered {resp.status}"))
        else:
            linked = normalize_etag(resp.headers.get("X-Linked-Etag"))
            etag = linked or normalize_etag(resp.headers.get("ETag"))
            size_text = resp.headers.get("X-Linked-Size") or (
                resp.headers.get("Content-Length") if resp.status < 300 else None)
            if not etag or size_text is None or not size_text.isdigit():
                raise HubError(502, "UpstreamError", f"Upstream metadata for {path} lacks an ETag or a size")
            found = Entry(path, FILE, int(size_text), None if linked else etag, etag, linked is not None)
            location = resp.headers.get("Location")
            if linked and location and 300 <= resp.status < 400:  # where the fill of its bytes can go at once
                self.upstream.locations.put(linked, urljoin(resp.url, location))
            self._headed.put(key, True)
        await self.index.put_entry(repo.type, repo.id, commit, found)
        return found

    async def fetchable(self, repo: RepoRef, commit: str, path: str) -> None:
        """One upstream HEAD of the file: the error a download would meet now, if any (none if that HEAD has just
        found the file)."""
        if self._headed.get(_head_key(repo, commit, path)):
            return

        async def ask() -> None:
            try:
                resp = await self.upstream.head_file(resolve_url_path(repo.type, repo.id, commit, path))
            except UpstreamUnavailable as exc:
                raise unavailable_error(exc, f"{path} of {repo.id} at {commit}") from None
            if resp.status >= 400:
                raise as_error(from_upstream(resp))

        await self.source.flights.run(f"fetchable|{repo.type}|{repo.id}|{commit}|{path}", ask)

    async def paths(self, repo: RepoRef, commit: str, paths: list[str], expand: bool) -> tuple[list[Entry], bool]:
        """Paths-info: the entries of the asked paths that exist (and whether the answer is stale)."""
        asked = list(dict.fromkeys(paths))
        known = await self._known_paths(repo, commit, asked)
        if known is not None and (not expand or all(e.extra and EXPANDED in e.extra for e in known)):
            return known, False
        form = [("paths", p) for p in asked] + [("expand", str(expand).lower())]
        key = f"paths|{repo.type}|{repo.id}|{commit}|{int(expand)}|{urlencode([('p', p) for p in sorted(asked)])}"

        async def fetch() -> list[Entry]:
            answer = from_upstream(await self.upstream.fetch("POST", api_path(repo.type, repo.id, "paths-info", commit),
                                                             data=form))
            if answer.status != 200:
                raise as_error(answer)
            entries = [entry_of(e) for e in answer.json() if isinstance(e, dict) and isinstance(e.get("path"), str)]
            # The answer is definitive: an asked path it leaves out does not exist at the commit.
            returned = {e.path for e in entries}
            await self.index.put_entries(repo.type, repo.id, commit,
                                         entries + [Entry(p, MISSING) for p in asked if p not in returned])
            return entries

        try:
            return await self.source.flights.run(key, fetch), False
        except (UpstreamUnavailable, HubError) as exc:
            if known is not None and not (isinstance(exc, HubError) and exc.status < 500):
                return known, True
            if isinstance(exc, UpstreamUnavailable):
                raise unavailable_error(exc, f"paths-info of {repo.id} at {commit}") from None
            raise

    async def _known_paths(self, repo: RepoRef, commit: str, asked: list[str]) -> list[Entry] | None:
        """The existing entries among ``asked`` if hubproxy knows about every one of them, else None."""
        listing = await self.index.listing(repo.type, repo.id, commit)
        if listing is not None:
            return [listing.by_path[p] for p in asked if p in listing.by_path]
        found = [await self.index.entry(repo.type, repo.id, commit, p) for p in asked]
        if any(e is None or e.kind == LEFT_OUT for e in found):
            return None
        return [e for e in found if e is not None and e.exists]
