"""The server's periodic work, every ``maintenance_interval`` (or right after a fill is stored): access
statistics and token use written in one batch, old events pruned, the store evicted to its budget, and
(at most hourly) uploads that dead processes left unfinished in the store aborted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from hubproxy.audit import downloads as audit_downloads
from hubproxy.auth.authenticator import Authenticator
from hubproxy.background import wake_or_timeout
from hubproxy.cache import events as cache_events
from hubproxy.cache import manage
from hubproxy.cache.blobs import BlobCache
from hubproxy.cache.fill import FillManager
from hubproxy.config import Settings
from hubproxy.observability import metrics
from hubproxy.store.base import BlobStore

log = logging.getLogger(__name__)


#: Longest pause between two looks for abandoned uploads.
ABANDONED_CHECK_SECONDS = 3600.0


class AbandonedUploads:
    """Aborts the stores' uploads that no process will finish: seen unfinished for ``older_than`` seconds
    (``s3_abandoned_upload_seconds``; 0: never) and not of a blob being filled, here or, by its lease, on
    another replica. A fill's process killed mid-fill leaves its multipart upload behind; so does an ingest."""

    def __init__(self, stores: Sequence[BlobStore], older_than: float, fills: FillManager) -> None:
        self.stores = stores
        self.older_than = older_than
        self.fills = fills
        self.next_check = 0.0

    async def sweep(self) -> int:
        """Abort what is abandoned if a look is due; returns how many uploads were aborted."""
        if not self.older_than or time.monotonic() < self.next_check:
            return 0
        self.next_check = time.monotonic() + min(ABANDONED_CHECK_SECONDS, self.older_than)
        keep = set(self.fills.active)
        if self.fills.leases is not None:
            keep |= await asyncio.to_thread(self.fills.leases.live_keys)
        aborted = 0
        for store in self.stores:
            aborted += await asyncio.to_thread(store.abort_abandoned_uploads, self.older_than, keep)
        if aborted:
            log.warning("aborted %d uploads left unfinished in the store for over %.0f seconds", aborted,
                        self.older_than)
        return aborted


async def maintain(settings: Settings, engine: Engine, cache: BlobCache, auth: Authenticator,
                   stores: Sequence[BlobStore]) -> None:
    """Run the periodic work until cancelled; ``stores``: every store uploads go to (blobs, xorbs)."""
    fills = cache.fills
    abandoned = AbandonedUploads(stores, settings.s3_abandoned_upload_seconds, fills)
    while True:
        await wake_or_timeout(fills.committed, settings.maintenance_interval)
        fills.committed.clear()
        try:
            await cache.usage.flush()
            await auth.flush()
            await asyncio.to_thread(audit_downloads.prune, engine, settings.audit_retention_days)
            await asyncio.to_thread(cache_events.prune, engine)
            await asyncio.to_thread(fills.mismatches.prune)
            if settings.cache_max_bytes:
                evicted = await asyncio.to_thread(manage.evict, engine, cache.store, settings.cache_max_bytes,
                                                  cache.protected())
                for key in evicted:
                    cache.forget(key)
                if evicted:
                    metrics.EVICTIONS.inc(len(evicted))
                    log.info("evicted %d blobs to stay under %d bytes", len(evicted), settings.cache_max_bytes)
            metrics.CACHE_BYTES.set(await asyncio.to_thread(manage.total_size, engine))
            await abandoned.sweep()
        except Exception as exc:  # noqa: BLE001 - try again next round
            log.warning("cache maintenance failed: %s", exc)
