"""What changed in the cache, so that every process's memory of it stays true.

A server keeps answers in memory (which blobs are stored, what a path is at a commit, a repo's
refs and metadata). Whoever deletes (a purge or a verify from the command line or the admin API,
an eviction in any replica) records a ``cache_events`` row in the same transaction as the
deletion (``records.py``); every server reads new rows about once a second and forgets what they
name. Serving never depends on that second: a blob that is gone is found missing when it is opened
(and is filled again), and a redirect to an object store is only answered after the object is seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from hubproxy.cache import records

log = logging.getLogger(__name__)

#: Seconds between looks for new events.
POLL_SECONDS = 1.0
#: Events older than this are deleted (a server that was away longer starts from the newest one).
KEEP_SECONDS = 86400.0


@dataclass(frozen=True)
class CacheEvent:
    kind: str  # blob | repo
    repo_type: str | None
    repo_id: str | None
    blob: str | None


class CacheWatcher:
    """Reads new cache events and hands them to ``apply`` (on the event loop)."""

    def __init__(self, engine: Engine, apply: Callable[[CacheEvent], None]) -> None:
        self.engine = engine
        self.apply = apply
        self.last: int | None = None

    def _read(self) -> list[tuple[int, CacheEvent]]:
        with self.engine.connect() as conn:
            if self.last is None:
                self.last = records.last_event(conn)
                return []
            found = records.events_after(conn, self.last)
        return [(seq, CacheEvent(kind, t, r, b)) for seq, kind, t, r, b in found]

    async def poll(self) -> int:
        """Apply what happened since the last look; returns how many events."""
        events = await asyncio.to_thread(self._read)
        for seq, event in events:
            self.apply(event)
            self.last = seq
        return len(events)

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception as exc:  # noqa: BLE001 - the database is away: look again next round
                log.debug("cache events unreadable: %s", exc.__class__.__name__)
            await asyncio.sleep(POLL_SECONDS)


def prune(engine: Engine) -> None:
    with contextlib.suppress(Exception), engine.begin() as conn:
        records.prune_events(conn, time.time() - KEEP_SECONDS)
