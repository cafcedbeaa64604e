"""Blob access statistics: counted in memory on the hot path, written to the database in batches."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.engine import Engine

from hubproxy.cache import records

log = logging.getLogger(__name__)

#: Seconds hits of a blob with no record yet are kept for (its fill may still be running).
UNRECORDED_KEEP = 3600.0


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

        def write() -> list[str]:
            with self.engine.begin() as conn:
                return records.touch(conn, rows)

        try:
            unknown = await asyncio.to_thread(write)
        except Exception as exc:  # noqa: BLE001 - statistics wait for the database to come back
            log.warning("could not write blob access statistics (%s); will retry", exc.__class__.__name__)
            for key, (n, t) in pending.items():
                self._merge(key, n, t)
            return 0
        # Hits of blobs with no record yet wait for the next flush, unless they are old (never stored).
        now = time.time()
        for key in unknown:
            n, t = pending[key]
            if now - t < UNRECORDED_KEEP:
                self._merge(key, n, t)
        return len(rows) - len(unknown)

    def _merge(self, key: str, hits: float, at: float) -> None:
        entry = self._pending.setdefault(key, [0, at])
        entry[0] += hits
        entry[1] = max(entry[1], at)
