"""The revision index for the server: what refs, commits and paths are, with memory in front of the database.

Answers about a commit never change, so listings, entries and repo info are kept in memory (bounded
LRUs) after the first database read: the hot path (a HEAD of a cached file) does no database I/O.
Refs are mutable; a memory copy older than the caller's ``max_age`` is read again, since another
replica or a ``sync import`` may have written a newer one. Every database call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine

from hubproxy.lru import LRU
from hubproxy.repos import rows
from hubproxy.repos.model import Entry, Listing
from hubproxy.repos.rows import Ref

V = TypeVar("V")

class RepoIndex:
    """Refs, commit info, listings and entries of every repo hubproxy knows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._refs: dict[tuple[str, str, str], Ref] = {}
        self._entries: LRU[tuple[str, str, str, str], Entry] = LRU(200_000)
        self._listings: LRU[tuple[str, str, str], Listing] = LRU(64)
        self._infos: LRU[tuple[str, str, str], dict[str, Any]] = LRU(2_000)

    async def _read(self, fn: Callable[[Connection], Any]) -> Any:
        def run() -> Any:
            with self.engine.connect() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    async def _write(self, fn: Callable[[Connection], Any]) -> Any:
        def run() -> Any:
            with self.engine.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    async def _remembered(self, memory: LRU[Any, V], key: Any, build: Callable[[Any], V],
                          load: Callable[[Connection], Any]) -> V | None:
        """What memory holds under ``key``, else what the database has (``build`` from its rows, then kept)."""
        value = memory.get(key)
        if value is None:
            loaded = await self._read(load)
            if loaded is None:
                return None
            value = build(loaded)
            memory.put(key, value)
        return value

    def forget_repo(self, repo_type: str, repo_id: str) -> None:
        """Drop what memory holds about a repo (it was purged; the database no longer has it)."""
        self._entries.drop_where(lambda k: k[:2] == (repo_type, repo_id))
        self._listings.drop_where(lambda k: k[:2] == (repo_type, repo_id))
        self._infos.drop_where(lambda k: k[:2] == (repo_type, repo_id))
        for key in [k for k in self._refs if k[:2] == (repo_type, repo_id)]:
            del self._refs[key]

    # -- refs ---------------------------------------------------------------------------
    async def ref(self, repo_type: str, repo_id: str, name: str, max_age: float | None = None) -> Ref | None:
        """The last known target of a ref (re-read from the database when the memory copy is older than
        ``max_age``)."""
        key = (repo_type, repo_id, name)
        ref = self._refs.get(key)
        if ref is not None and (max_age is None or time.time() - ref.fetched_at < max_age):
            return ref
        stored = await self._read(lambda c: rows.get_ref(c, repo_type, repo_id, name))
        if stored is None or (ref is not None and ref.fetched_at >= stored.fetched_at):
            return ref
        self._refs[key] = stored
        return stored

    async def set_ref(self, repo_type: str, repo_id: str, name: str, commit: str, kind: str = "branch") -> None:
        ref = Ref(name, commit, "default" if name == "" else kind, time.time())
        self._refs[(repo_type, repo_id, name)] = ref
        await self._write(lambda c: rows.put_ref(c, repo_type, repo_id, ref))

    async def refs(self, repo_type: str, repo_id: str) -> tuple[list[Ref], float]:
        """Every ref of the repo, and when the upstream's list of them was read (0: never)."""
        return await self._read(lambda c: (rows.list_refs(c, repo_type, repo_id),
                                           rows.refs_fetched_at(c, repo_type, repo_id)))

    async def replace_listed_refs(self, repo_type: str, repo_id: str, listed: list[Ref]) -> None:
        now = time.time()
        await self._write(lambda c: rows.replace_listed_refs(c, repo_type, repo_id, listed, now))
        for ref in listed:
            self._refs[(repo_type, repo_id, ref.name)] = ref

    # -- commits ------------------------------------------------------------------------
    async def commit_info(self, repo_type: str, repo_id: str, commit: str) -> dict[str, Any] | None:
        return await self._remembered(self._infos, (repo_type, repo_id, commit), json.loads,
                                      lambda c: rows.get_commit_info(c, repo_type, repo_id, commit))

    async def put_commit_info(self, repo_type: str, repo_id: str, commit: str, info: dict[str, Any]) -> None:
        self._infos.put((repo_type, repo_id, commit), info)
        text = json.dumps(info, separators=(",", ":"))
        await self._write(lambda c: rows.put_commit_info(c, repo_type, repo_id, commit, text))

    # -- listings and entries -------------------------------------------------------------
    async def listing(self, repo_type: str, repo_id: str, commit: str) -> Listing | None:
        """The commit's complete listing, if hubproxy holds it (built once, then kept in memory)."""
        return await self._remembered(self._listings, (repo_type, repo_id, commit), lambda rows_: Listing(*rows_),
                                      lambda c: rows.load_listing(c, repo_type, repo_id, commit))

    async def put_listing(self, repo_type: str, repo_id: str, commit: str, listed: list[Entry]) -> Listing:
        await self._write(lambda c: rows.put_listing(c, repo_type, repo_id, commit, listed))
        self._listings.drop_where(lambda k: k == (repo_type, repo_id, commit))
        listing = await self.listing(repo_type, repo_id, commit)
        assert listing is not None
        return listing

    def peek_entry(self, repo_type: str, repo_id: str, commit: str, path: str) -> Entry | None:
        """Memory only: the hot path's first look."""
        return self._entries.get((repo_type, repo_id, commit, path))

    async def entry(self, repo_type: str, repo_id: str, commit: str, path: str) -> Entry | None:
        return await self._remembered(self._entries, (repo_type, repo_id, commit, path), lambda e: e,
                                      lambda c: rows.get_entry(c, repo_type, repo_id, commit, path))

    async def put_entry(self, repo_type: str, repo_id: str, commit: str, entry: Entry) -> None:
        self._entries.put((repo_type, repo_id, commit, entry.path), entry)
        await self._write(lambda c: rows.put_entry(c, repo_type, repo_id, commit, entry))

    async def put_entries(self, repo_type: str, repo_id: str, commit: str, found: list[Entry]) -> None:
        """Entries learned without the whole listing (paths-info answers, expanded fields)."""
        if not found:
            return
        await self._write(lambda c: rows.put_entries(c, repo_type, repo_id, commit, found))
        self._listings.drop_where(lambda k: k == (repo_type, repo_id, commit))
        for e in found:
            self._entries.put((repo_type, repo_id, commit, e.path), e)

    # -- names and replayed answers -------------------------------------------------------
    async def put_alias(self, repo_type: str, alias: str, canonical: str) -> None:
        await self._write(lambda c: rows.put_alias(c, repo_type, alias, canonical))

    async def stored_name(self, repo_type: str, typed: str) -> str | None:
        return await self._read(lambda c: rows.stored_name(c, repo_type, typed))

    async def answer(self, key: str) -> tuple[int, dict[str, str], bytes, float] | None:
        found = await self._read(lambda c: rows.get_answer(c, key))
        if found is None:
            return None
        status, headers, body, fetched_at = found
        return status, json.loads(headers), body, fetched_at

    async def put_answer(self, key: str, status: int, headers: dict[str, str], body: bytes) -> None:
        await self._write(lambda c: rows.put_answer(c, key, status, json.dumps(headers), body))

    async def holds_content(self, repo_type: str, repo_id: str) -> bool:
        return await self._read(lambda c: rows.holds_content(c, repo_type, repo_id))

    async def repos_holding_files(self, repo_type: str) -> list[tuple[str, str | None]]:
        return await self._read(lambda c: rows.repos_holding_files(c, repo_type))
