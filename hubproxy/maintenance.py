"""The server's periodic work, every ``maintenance_interval`` (or right after a fill is stored): access
statistics and token use written in one batch, old events pruned, the store evicted to its budget."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.engine import Engine

from hubproxy.audit import downloads as audit_downloads
from hubproxy.auth.authenticator import Authenticator
from hubproxy.background import wake_or_timeout
from hubproxy.cache import events as cache_events
from hubproxy.cache import manage
from hubproxy.cache.blobs import BlobCache
from hubproxy.config import Settings
from hubproxy.observability import metrics

log = logging.getLogger(__name__)


async def maintain(settings: Settings, engine: Engine, cache: BlobCache, auth: Authenticator) -> None:
    fills = cache.fills
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
        except Exception as exc:  # noqa: BLE001 - try again next round
            log.warning("cache maintenance failed: %s", exc)
