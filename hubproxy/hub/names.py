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

import time
from dataclasses import dataclass

from hubproxy.hub.errors import HubError, repo_not_found
from hubproxy.repos.model import RepoRef
from hubproxy.repos.upstream import UpstreamSource, sha_of
from hubproxy.upstream.answers import Answer, api_path, unavailable_error, upstream_failure
from hubproxy.upstream.client import UpstreamUnavailable


@dataclass(frozen=True)
class _Known:
    canonical: str | None  # None: the upstream said there is no such repo (for us)
    fetched_at: float


class RepoNames:
    """Maps what clients type to the repo the upstream means."""

    def __init__(self, source: UpstreamSource, ttl: float) -> None:
        self.source = source
        self.index = source.index
        self.ttl = ttl
        self._known: dict[tuple[str, str], _Known] = {}

    async def canonical(self, repo_type: str, typed: str, authenticated: bool) -> str:
        """The canonical id of ``typed``, or ``RepoNotFound`` as the caller would get it for a hidden repo."""
        key = (repo_type, typed.lower())
        known = self._known.get(key)
        if known is None or time.time() - known.fetched_at >= self.ttl:
            known = await self.source.flights.run(f"name|{repo_type}|{key[1]}",
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
        path = api_path(repo_type, typed)
        try:
            answer = await self.source.ask(f"GET {path}", "GET", path, stale_possible=last is not None)
        except UpstreamUnavailable as exc:
            return await self._fallback(repo_type, typed, last, exc)
        if answer.status in (401, 404) or answer.headers.get("X-Error-Code") == "RepoNotFound":
            known = _Known(None, time.time())
        elif answer.status >= 500 or answer.status == 429:
            if last is not None:
                return last
            stored = await self.index.stored_name(repo_type, typed)
            if stored is None:
                raise upstream_failure(answer)
            known = _Known(stored, time.time())
        elif answer.status != 200:
            raise HubError(answer.status, answer.headers.get("X-Error-Code"), f"Upstream answered {answer.status}")
        else:
            known = await self._learn(repo_type, typed, answer)
        self._known[key] = known
        return known

    async def _learn(self, repo_type: str, typed: str, answer: Answer) -> _Known:
        data = answer.json() if answer.body else {}
        canonical = data.get("id") if isinstance(data, dict) else None
        name = canonical if isinstance(canonical, str) and canonical else typed
        if sha_of(answer):
            # The same answer is the default branch's repo info: keep it, as resolving it would.
            await self.source.keep_revision(RepoRef(repo_type, name), "")(answer)
        await self.index.put_alias(repo_type, typed.lower(), name)
        return _Known(name, time.time())

    async def _fallback(self, repo_type: str, typed: str, last: _Known | None, exc: UpstreamUnavailable) -> _Known:
        if last is not None:
            return last
        stored = await self.index.stored_name(repo_type, typed)
        if stored is None:
            raise unavailable_error(exc, f"{repo_type} {typed}") from None
        known = _Known(stored, time.time() - self.ttl + min(self.ttl, 5.0))  # ask again in a few seconds
        self._known[(repo_type, typed.lower())] = known
        return known
