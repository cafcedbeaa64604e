"""Who is calling: ``Authorization: Bearer hf_...`` checked against the token table.

Answers are cached for ``token_cache_seconds`` (so the hot path does not query the database on
every request; a revoked token stops working within that time), and last use is written in
batches by the maintenance loop.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.engine import Engine

from hubproxy.auth.identity import Authenticated, authenticate, hash_token, record_use


class Authenticator:
    """Token checks with a short cache and batched last-use records."""

    def __init__(self, engine: Engine, cache_seconds: float) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Authenticated | None, float]] = {}
        self._used: dict[int, float] = {}

    async def authenticate(self, token: str) -> Authenticated | None:
        key = hash_token(token)
        now = time.time()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            who = hit[0]
        else:
            who = await asyncio.to_thread(authenticate, self.engine, token)
            if self.cache_seconds > 0:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (who, now + self.cache_seconds)
        if who is not None:
            self._used[who.token_id] = now
        return who

    async def flush(self) -> None:
        used, self._used = self._used, {}
        try:
            await asyncio.to_thread(record_use, self.engine, used)
        except Exception:  # noqa: BLE001 - keep them for the next round
            for k, v in used.items():
                self._used.setdefault(k, v)
