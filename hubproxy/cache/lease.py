"""Fill leases in the shared database: one replica fills a blob, the others relay its bytes.

A lease names its owner (one process), the URL other replicas reach it at, and when it
expires. The owner renews it while it fills and deletes it when done. A lease that has
expired, or whose owner cannot be reached, is taken over: a dead replica never blocks a blob.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine

_INSERT = text("INSERT INTO fill_leases (key, owner, url, expires_at) VALUES (:k, :o, :u, :e) "
               "ON CONFLICT (key) DO NOTHING")
_TAKE = text("UPDATE fill_leases SET owner = :o, url = :u, expires_at = :e "
             "WHERE key = :k AND (owner = :o OR expires_at < :now OR owner = :dead)")


@dataclass(frozen=True)
class Holder:
    """Another replica filling the blob."""

    owner: str
    url: str


class FillLeases:
    """Acquire, renew and release fill leases (blocking; call from worker threads)."""

    def __init__(self, engine: Engine, owner: str, url: str, ttl: float) -> None:
        self.engine = engine
        self.owner = owner
        self.url = url.rstrip("/")
        self.ttl = ttl

    def acquire(self, key: str, dead_owner: str | None = None) -> Holder | None:
        """Take the lease (None), or say who holds it. ``dead_owner``: a holder found unreachable."""
        for _ in range(3):
            now = time.time()
            params = {"k": key, "o": self.owner, "u": self.url, "e": now + self.ttl, "now": now,
                      "dead": dead_owner or ""}
            with self.engine.begin() as conn:
                if conn.execute(_INSERT, params).rowcount or conn.execute(_TAKE, params).rowcount:
                    return None
                row = conn.execute(text("SELECT owner, url FROM fill_leases WHERE key = :k"), {"k": key}).first()
            if row is not None:
                return Holder(row[0], row[1])
        return Holder("", "")  # the lease keeps changing hands: let the caller pass the bytes through

    def renew(self, key: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(text("UPDATE fill_leases SET expires_at = :e WHERE key = :k AND owner = :o"),
                                  {"k": key, "o": self.owner, "e": time.time() + self.ttl})
            return bool(result.rowcount)

    def live_keys(self) -> set[str]:
        """The blobs some replica is filling now (its lease not yet expired)."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT key FROM fill_leases WHERE expires_at >= :now"), {"now": time.time()})
            return {row[0] for row in rows}

    def release(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM fill_leases WHERE key = :k AND owner = :o"), {"k": key, "o": self.owner})
