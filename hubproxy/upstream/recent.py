"""What the upstream said a moment ago, kept for a few seconds so that the request right after need not ask again.

- **Where a blob's bytes are.** A client downloads a file in two requests, a HEAD of its resolve URL and a
  GET; the Hub answers the HEAD of an LFS file with a redirect to its CDN, and clients then fetch the CDN URL
  directly. hubproxy asks the upstream the same HEAD when it does not know the file yet, so the fill that the
  client's GET starts a moment later can go straight to that URL instead of asking the upstream's resolve
  endpoint again (``cache/parts.py``). The URLs are signed and expire: a fill that finds one refused or
  unreachable goes back through the upstream.
- **That a file can be fetched.** A HEAD answered by hubproxy for a file it does not hold checks with the
  upstream that a download would work; when the upstream's HEAD of that file has just answered, that is the
  check (``repos/upstream_files.py``).

Either way: one round trip to the Hub less per cold file.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

from hubproxy.lru import LRU

V = TypeVar("V")

#: Entries kept at most (the least recently used go first).
MAX_ENTRIES = 4096


class Recent(Generic[V]):
    """Key -> value, each for ``seconds`` after it was put."""

    def __init__(self, seconds: float, limit: int = MAX_ENTRIES) -> None:
        self.seconds = seconds
        self._values: LRU[str, tuple[V, float]] = LRU(limit)

    def put(self, key: str, value: V) -> None:
        self._values.put(key, (value, time.monotonic() + self.seconds))

    def get(self, key: str) -> V | None:
        """The value of ``key`` if it is recent enough."""
        found = self._values.get(key)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def take(self, key: str) -> V | None:
        """The value of ``key`` if it is recent enough, given once."""
        value = self.get(key)
        self._values.pop(key)
        return value
