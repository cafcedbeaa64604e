"""Blob access statistics: counted in memory on the hot path, written to the database in batches."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import text
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

_UPDATE = text(
    "UPDATE blobs SET hits = hits + :n, "
    "last_access = CASE WHEN last_access < :t THEN :t ELSE last_access END WHERE key = :k"
)


class Usage:
    """Hits and last access per blob, flushed by ``flush`` (never per request)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: dict[str, list[float]] = {}

    def touch(self, key: str) -> None:
        entry = self._pending.get(key)
        now = time.time()
        if entry is None:
            self._pending[key] = [1, now]
        else:
            entry[0] += 1
            entry[1] = now

    async def flush(self) -> int:
        """Write what was counted since the last flush; on failure keep it for the next one."""
        pending, self._pending = self._pending, {}
        if not pending:
            return 0
        rows = [{"k": k, "n": int(v[0]), "t": v[1]} for k, v in pending.items()]

        def write() -> None:
            with self.engine.begin() as conn:
                conn.execute(_UPDATE, rows)

        try:
            await asyncio.to_thread(write)
        except Exception as exc:  # noqa: BLE001 - statistics wait for the database to come back
            log.warning("could not write blob access statistics (%s); will retry", exc.__class__.__name__)
            for k, (n, t) in pending.items():
                entry = self._pending.setdefault(k, [0, t])
                entry[0] += n
                entry[1] = max(entry[1], t)
            return 0
        return len(rows)
