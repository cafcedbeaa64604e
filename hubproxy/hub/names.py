"""Which repo an id names: the upstream's canonical id, for policy, cache keys and audit alike.

Hub repo ids are case-insensitive (``acme/Secret-Model`` is ``acme/secret-model``) and renamed
repos answer under their old name with a redirect to the new one. A policy matched against the
id as a client typed it could therefore be dodged by another spelling. hubproxy instead asks the
upstream what the repo is (its plain repo info, following redirects; the answer's ``id`` is the
canonical id), remembers the answer for ``revision_ttl`` seconds in memory and for good in the
``repo_aliases`` table, and from then on knows the repo only by that id.

A missing repo is remembered too, for the same time, so that a hidden repo and a missing one
cost the same and answer the same: ``RepoNotFound`` with hubproxy's own message (401 for an
anonymous caller, 404 otherwise), never the upstream's words.

When the upstream cannot answer, the last known answer stands; with none, an id that matches a
repo hubproxy holds (whatever its case) names it, and anything else is the usual 502/504.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine

from hubproxy.hub.errors import HubError, repo_not_found
from hubproxy.hub.metadata import Metadata, api_path, info_key, unavailable_error, upstream_failure
from hubproxy.upstream.client import UpstreamUnavailable


@dataclass(frozen=True)
class _Known:
    canonical: str | None  # None: the upstream said there is no such repo (for us)
    fetched_at: float


class RepoNames:
    """Maps what clients type to the repo the upstream means."""

    def __init__(self, metadata: Metadata, engine: Engine, ttl: float) -> None:
        self.metadata = metadata
        self.engine = engine
        self.ttl = ttl
        self._known: dict[tuple[str, str], _Known] = {}

    async def canonical(self, repo_type: str, typed: str, authenticated: bool) -> str:
        """The canonical id of ``typed``, or ``RepoNotFound`` as the caller would get it for a hidden repo."""
        key = (repo_type, typed.lower())
        known = self._known.get(key)
        if known is None or time.time() - known.fetched_at >= self.ttl:
            known = await self.metadata.single_flight(f"name|{repo_type}|{key[1]}",
                                                      lambda: self._ask(repo_type, typed, known))
        if known.canonical is None:
            raise repo_not_found(authenticated)
        return known.canonical

    def forget(self, repo_type: str, repo_id: str) -> None:
        """Drop what is remembered about ids of this repo (a purge)."""
        for key in [k for k, v in self._known.items() if k[0] == repo_type
                    and (k[1] == repo_id.lower() or v.canonical == repo_id)]:
            self._known.pop(key, None)

    async def _ask(self, repo_type: str, typed: str, last: _Known | None) -> _Known:
        key = (repo_type, typed.lower())
        md = self.metadata
        path = api_path(repo_type, typed)
        try:
            answer = await md._fetch(f"GET {path}?", "GET", path, stale_possible=last is not None)
        except UpstreamUnavailable as exc:
            return await self._fallback(repo_type, typed, last, exc)
        if answer.status in (401, 404) or answer.headers.get("X-Error-Code") == "RepoNotFound":
            known = _Known(None, time.time())
        elif answer.status >= 500 or answer.status == 429:
            if last is not None:
                return last
            stored = await asyncio.to_thread(self._stored, repo_type, typed)
            if stored is None:
                raise upstream_failure(answer)
            known = _Known(stored, time.time())
        elif answer.status != 200:
            raise upstream_failure(answer) if answer.status >= 500 else HubError(
                answer.status, answer.headers.get("X-Error-Code"), f"Upstream answered {answer.status}")
        else:
            data = answer.json() if answer.body else {}
            canonical = data.get("id") if isinstance(data, dict) else None
            known = _Known(canonical if isinstance(canonical, str) and canonical else typed, time.time())
            sha = data.get("sha") if isinstance(data, dict) else None
            if isinstance(sha, str) and len(sha) == 40:
                # The same answer is the default branch's repo info: keep it, as a repo_info call would.
                await md.index.set_ref(repo_type, known.canonical or typed, "", sha)
                await md.index.put_meta(info_key(repo_type, known.canonical or typed, sha, ""), 200,
                                        answer.headers, answer.body)
            await asyncio.to_thread(self._remember, repo_type, key[1], known.canonical or typed)
        self._known[key] = known
        return known

    async def _fallback(self, repo_type: str, typed: str, last: _Known | None, exc: UpstreamUnavailable) -> _Known:
        if last is not None:
            return last
        stored = await asyncio.to_thread(self._stored, repo_type, typed)
        if stored is None:
            raise unavailable_error(exc, f"{repo_type} {typed}") from None
        known = _Known(stored, time.time() - self.ttl + min(self.ttl, 5.0))  # ask again in a few seconds
        self._known[(repo_type, typed.lower())] = known
        return known

    # -- the database's memory of names ---------------------------------------------
    def _remember(self, repo_type: str, alias: str, canonical: str) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO repo_aliases (repo_type, alias, canonical, fetched_at) "
                              "VALUES (:t, :a, :c, :f) ON CONFLICT (repo_type, alias) "
                              "DO UPDATE SET canonical = :c, fetched_at = :f"),
                         {"t": repo_type, "a": alias, "c": canonical, "f": now})

    def _stored(self, repo_type: str, typed: str) -> str | None:
        """The canonical id of ``typed`` by what hubproxy holds: a remembered alias, or a repo of that name."""
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT canonical FROM repo_aliases WHERE repo_type = :t AND alias = :a"),
                               {"t": repo_type, "a": typed.lower()}).first()
            if row is not None:
                return row[0]
            row = conn.execute(text("SELECT repo_id FROM refs WHERE repo_type = :t AND lower(repo_id) = :a "
                                    "UNION SELECT repo_id FROM files WHERE repo_type = :t AND lower(repo_id) = :a "
                                    "LIMIT 1"), {"t": repo_type, "a": typed.lower()}).first()
        return row[0] if row is not None else None
