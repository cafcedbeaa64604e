"""Blobs whose fill failed verification, and what that means for downloads that resume them.

When an upstream sends wrong bytes, hubproxy cuts every reader before the last byte, so no client
gets a complete wrong file in one answer. But a client that then resumes (``Range: bytes=N-``) would
put the rest of a correct fill behind the wrong bytes it already holds. So for a blob that failed:

- an open-ended range (a resume) is answered ``200`` with the whole file: huggingface_hub (2.x and
  0.36 alike) then truncates what it has and starts over;
- a closed range (``bytes=a-b``: parallel downloaders such as hf_transfer assemble files from these)
  is refused for ``CLOSED_RANGE_SECONDS`` with a 503: such a client must not complete a file that
  mixes the failed fill's chunks with correct ones.

Failures are recorded in the database (``blob_mismatches``), so a client resuming at another replica,
or days later from an old client's ``.incomplete`` file, is treated the same.

An upstream that keeps sending wrong bytes would otherwise be asked for the whole blob again by every
retry of every client (huggingface_hub retries without end while bytes keep arriving). After a second
failure in a row a new fill of that blob waits: 2 s, then twice as long after each further failure,
at most ``REFILL_MAX_SECONDS``; requests meanwhile get a 502 with ``Retry-After``. A verified fill ends
the streak. The streak lives in each process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy.engine import Engine

from hubproxy.cache import records
from hubproxy.observability import metrics

log = logging.getLogger(__name__)

#: How long closed ranges of a blob are refused after a failed fill.
CLOSED_RANGE_SECONDS = 600.0
#: How long a failure is remembered for resumes.
KEEP_SECONDS = 30 * 86400.0
#: How often the memory of failures is refreshed from the database (only when a range asks).
REFRESH_SECONDS = 0.5
#: The longest wait before a blob that keeps failing verification is fetched again.
REFILL_MAX_SECONDS = 300.0


class Mismatches:
    """The record of failed verifications, with a memory that asks the database at most twice a second."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._known: dict[str, float] = {}
        self._read_at = 0.0
        #: key -> (failures in a row, when the last one happened; monotonic)
        self._streak: dict[str, tuple[int, float]] = {}

    def remember(self, key: str) -> None:
        """Note a failure in this process's memory at once (and count it)."""
        metrics.UPSTREAM_ERRORS.labels("mismatch").inc()
        self._known[key] = time.time()
        count, _ = self._streak.get(key, (0, 0.0))
        self._streak[key] = (count + 1, time.monotonic())

    def verified(self, key: str) -> None:
        """A fill of ``key`` verified: the streak of failures is over."""
        self._streak.pop(key, None)

    def refill_wait(self, key: str) -> float:
        """Seconds before ``key`` may be fetched again (0: now)."""
        count, at = self._streak.get(key, (0, 0.0))
        if count < 2:
            return 0.0
        return max(0.0, at + min(2.0 ** (count - 1), REFILL_MAX_SECONDS) - time.monotonic())

    async def record(self, key: str) -> None:
        """Remember that a fill of ``key`` failed verification now (in memory at once, then in the database; if
        the database cannot take it, this process still knows)."""
        now = time.time()
        self._known[key] = now
        try:
            await asyncio.to_thread(self._write, key, now)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not record the failed verification of %s: %s", key, exc)

    def _write(self, key: str, now: float) -> None:
        with self.engine.begin() as conn:
            records.record_mismatch(conn, key, now)

    async def failed_at(self, key: str) -> float | None:
        """When a fill of ``key`` last failed verification, if it ever did (recently enough to matter)."""
        if time.monotonic() - self._read_at >= REFRESH_SECONDS:
            self._read_at = time.monotonic()
            with contextlib.suppress(Exception):  # keep what is known: the database may be away
                self._known = await asyncio.to_thread(self._read)
        return self._known.get(key)

    def _read(self) -> dict[str, float]:
        with self.engine.connect() as conn:
            known = records.mismatches_since(conn, time.time() - KEEP_SECONDS)
        known.update({k: v for k, v in self._known.items() if v > known.get(k, 0.0)})
        return known

    def prune(self) -> None:
        with self.engine.begin() as conn:
            records.prune_mismatches(conn, time.time() - KEEP_SECONDS)
