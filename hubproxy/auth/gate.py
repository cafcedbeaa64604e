"""The check in front of every repo route: may this caller see the repo, and pull it from upstream?

Decisions are cached for ``cache_seconds`` (policy changes take effect within that time), so the
hot path does not query the database on every request.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.engine import Engine

from hubproxy.auth.identity import Authenticated
from hubproxy.auth.policy import Grant, decide
from hubproxy.hub.errors import HubError, repo_not_found
from hubproxy.repos import rows


class Gate:
    """Answers hidden repos like missing ones, and refuses pulls a policy does not allow."""

    def __init__(self, engine: Engine, anonymous_project: str | None, cache_seconds: float) -> None:
        self.engine = engine
        self.anonymous_project = anonymous_project
        self.cache_seconds = cache_seconds
        self._grants: dict[tuple[int | None, str, str], tuple[Grant, float]] = {}

    async def check(self, who: Authenticated | None, repo_type: str, repo_id: str) -> Grant:
        grant = await self.grant(who, repo_type, repo_id)
        if not grant.read:
            raise repo_not_found(authenticated=who is not None)
        if not grant.pull and not await self._holds(repo_type, repo_id):
            raise not_pullable(who, repo_type, repo_id)
        return grant

    async def visible(self, who: Authenticated | None, repo_type: str, repo_id: str) -> bool:
        """Whether the caller may know the repo exists (listings show only these)."""
        return (await self.grant(who, repo_type, repo_id)).read

    async def grant(self, who: Authenticated | None, repo_type: str, repo_id: str) -> Grant:
        """What the caller may do with the repo (cached for ``cache_seconds``)."""
        principal = who.principal if who else None
        key = (principal.id if principal else None, repo_type, repo_id)
        now = time.time()
        hit = self._grants.get(key)
        if hit is not None and hit[1] > now:
            grant = hit[0]
        else:
            grant = await asyncio.to_thread(decide, self.engine, principal, repo_type, repo_id,
                                            self.anonymous_project)
            if self.cache_seconds > 0:
                if len(self._grants) > 50_000:
                    self._grants.clear()
                self._grants[key] = (grant, now + self.cache_seconds)
        return grant

    async def _holds(self, repo_type: str, repo_id: str) -> bool:
        """Whether hubproxy stores content of the repo now (asked each time: a purge may just have removed it).

        Only callers who may not pull ask this, and a negative entry (a probe of a missing file) is no content.
        """

        def look() -> bool:
            with self.engine.connect() as conn:
                return rows.holds_content(conn, repo_type, repo_id)

        return await asyncio.to_thread(look)


def not_pullable(who: Authenticated | None, repo_type: str, repo_id: str) -> HubError:
    """A gated-like refusal: the repo exists for this caller; fetching it from the upstream is not allowed."""
    return HubError(403 if who else 401, "GatedRepo",
                    f"{repo_type} {repo_id} is not in hubproxy's cache, and your project's policy or role "
                    "does not allow pulling new repos from upstream")
