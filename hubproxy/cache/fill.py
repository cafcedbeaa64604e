"""Single-flight fills: one upstream fetch per blob; readers follow the growing spool file.

The first request for a blob that is not stored starts its fill (``filler.py``) into the spool
(``spool.py``); every other request in this process joins that fill (reading it through ``fillbody.py``),
and processes sharing the data dir follow it through the spool file (and the parts it shares with them:
``sharedparts.py``). Readers get bytes as they land, minus the last ``HOLDBACK``,
released only once the blob is verified: on a mismatch every reader is cut, so no client receives a
complete wrong file. A verified blob is handed to the store; only then is it recorded. Replicas with
separate spools coordinate through a fill lease (``lease.py``): one fills, the others relay its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy.engine import Engine

from hubproxy.cache import records
from hubproxy.cache.filler import BlobMismatch, Filler, FillError
from hubproxy.cache.lease import FillLeases, Holder
from hubproxy.cache.mismatch import Mismatches
from hubproxy.cache.partmap import Ahead
from hubproxy.cache.sharedparts import FollowedParts, announce, read_parts
from hubproxy.cache.spool import Spool, SpoolFile
from hubproxy.cache.upload import FillUpload
from hubproxy.memory import release_free_memory
from hubproxy.observability import metrics, tracing
from hubproxy.store.base import BlobStore, Upload
from hubproxy.store.bodies import Loans
from hubproxy.threads import run_in

log = logging.getLogger(__name__)

#: Bytes withheld from readers until the blob's hash is verified.
HOLDBACK = 1
#: Seconds between looks at another process's fill.
FOLLOW_POLL = 0.02

__all__ = ["BlobMismatch", "Fill", "FillError", "FillManager"]



class Fill:
    """A blob being filled; shared by every reader of it in this process."""

    def __init__(self, key: str, size: int, spool_path: str, source_path: str, store: BlobStore) -> None:
        self.key = key
        self.size = size
        self.spool_path = spool_path
        #: Where the upstream serves the blob (a resolve path), for whoever continues the fill.
        self.source_path = source_path
        self.store = store
        #: Bytes from 0 that are all in the spool file.
        self.written = 0
        self.verified = False
        #: The upstream answered with the blob's bytes (a request may now promise them to its client).
        self.answered = False
        self.error: BaseException | None = None
        #: The download's parts while this process downloads it: bytes written ahead of the prefix.
        self.ahead: Ahead | None = None
        #: Buffers still holding bytes written past the page cache (direct I/O), for readers to send from.
        self.loans: Loans | None = None
        #: Where the spool takes direct I/O: the end of the last part written through the page cache (received on
        #: the event loop), up to which its pages are made ahead of the writes (``filler.warm_pages``).
        self.paged_end = 0
        self.started = time.monotonic()
        self._event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: What requests that join this fill get: the fill itself once it is sure to run here, or (with
        #: replicas) the replica holding the fill lease, or None if the blob turned out to be stored.
        self.decided: asyncio.Future[Fill | Holder | None] = asyncio.get_running_loop().create_future()

    @property
    def done(self) -> bool:
        return self.verified or self.error is not None

    def readable_from(self, pos: int) -> int:
        """Up to where bytes from ``pos`` may be read now: the prefix, or a part written ahead of it (the
        blob's last byte still only once it is verified)."""
        if self.verified:
            return self.size
        reach = self.written
        if pos >= reach and self.ahead is not None:
            reach = self.ahead.extent(pos)
        return max(0, min(reach, self.size - HOLDBACK))

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_readable(self, offset: int) -> None:
        """Wait until byte ``offset`` may be read; raise if the fill failed."""
        while True:
            if self.error is not None:
                raise FillError(str(self.error))
            if self.readable_from(offset) > offset or (self.verified and offset >= self.size):
                return
            if self.ahead is not None and offset >= self.written:
                self.ahead.want(offset)
            await self._event.wait()

    async def changed(self) -> None:
        """Wait for the next change (bytes written, answered, verified or failed)."""
        await self._event.wait()

    async def wait_answered(self) -> None:
        """Wait until the fill is sure to have bytes to give (the upstream answered with them, or some are
        held already); raise the fill's error if it failed before that."""
        while not (self.answered or self.written or self.verified):
            if self.error is not None:
                raise self.error
            await self._event.wait()


class FillManager:
    """Starts fills and lets requests join the one already running for a blob."""

    def __init__(self, store: BlobStore, spool: Spool, engine: Engine, filler: Filler,
                 leases: FillLeases | None = None) -> None:
        self.store = store
        self.spool = spool
        self.engine = engine
        self.filler = filler
        self.leases = leases
        self.active: dict[str, Fill] = {}
        #: Blobs whose fills failed verification (resumed downloads of them restart).
        self.mismatches = Mismatches(engine)
        #: Set when a blob is committed (wakes the maintenance loop).
        self.committed = asyncio.Event()

    def get(self, key: str) -> Fill | None:
        return self.active.get(key)

    async def start(self, key: str, size: int, source_path: str, dead_owner: str | None = None
                    ) -> Fill | Holder | None:
        """Join or start the fill of ``key``.

        Returns the fill to read (this process's, or another process's on the same spool folder), the
        replica that holds the fill lease (relay its bytes), or None if the blob is stored already.
        """
        fill = self.active.get(key)
        if fill is not None:
            # Requests arriving while the fill's lease is checked wait for that decision, then take the
            # same way as the first request: never a fill that is about to be dropped.
            return await asyncio.shield(fill.decided)
        spool_file = self.spool.begin(key, resume=True)
        fill = Fill(key, size, self.spool.part_path(key), source_path, self.store)
        if spool_file is None:  # another process on this data dir fills it: follow its spool file
            if await run_in(self.store.pool, self.store.stat, key) is not None:
                return None
            fill.task = asyncio.create_task(self._follow(fill), name=f"follow-{key[:12]}")
            self.active[key] = fill
            fill.decided.set_result(fill)
            return fill
        self.active[key] = fill
        if self.leases is not None:
            # Until the spool file is let go, requests for the blob join this fill's decision: one that
            # came in between would find the spool locked and take this process for another filler.
            try:
                holder = await asyncio.to_thread(self.leases.acquire, key, dead_owner)
            except BaseException as exc:
                await asyncio.to_thread(spool_file.finish)
                self.active.pop(key, None)
                fill.decided.set_exception(exc if isinstance(exc, Exception) else FillError("cancelled"))
                fill.decided.exception()  # retrieved: joiners get it, nobody else needs to
                raise
            # Holding the lease, the blob may be stored already: the replica that held it before stores a blob
            # before it lets the lease go, maybe after this request's caller looked for it in the store.
            stored = await run_in(self.store.pool, self.store.stat, key) is not None
            if holder is not None or stored:
                if holder is None:
                    await asyncio.to_thread(self.leases.release, key)
                await asyncio.to_thread(spool_file.finish)
                self.active.pop(key, None)
                fill.decided.set_result(None if stored else holder)
                return None if stored else holder
        fill.task = asyncio.create_task(self._run(fill, spool_file), name=f"fill-{key[:12]}")
        fill.decided.set_result(fill)
        return fill

    async def _run(self, fill: Fill, spool_file: SpoolFile) -> None:
        renewer = asyncio.create_task(self._renew_lease(fill.key)) if self.leases is not None else None
        metrics.FILLS_IN_FLIGHT.inc()
        result = "error"
        uploading: FillUpload | None = FillUpload(fill, self.store, spool_file.path, spool_file.direct)
        try:
            with tracing.span("fill", **{"hubproxy.blob": fill.key, "hubproxy.size": fill.size}):
                await self.filler.fill(fill, spool_file)
            # The bytes are proven right: release the held-back tail now, then make the blob durable.
            fill.verified = True
            fill.notify()
            self.mismatches.verified(fill.key)
            upload = await uploading.uploaded()
            if upload is not None:
                await run_in(self.store.pool, self._complete, fill, spool_file, upload)
                uploading = None
            else:
                await run_in(self.store.pool, self._store, fill, spool_file)
            self.committed.set()
            result = "ok"
            log.info("filled blob %s (%d bytes) in %.2fs", fill.key, fill.size, time.monotonic() - fill.started)
        except BaseException as exc:  # noqa: BLE001 - also on cancellation: never keep a partial blob
            if isinstance(exc, BlobMismatch):
                self.mismatches.remember(fill.key)  # before any reader is cut and comes back resuming
            if not fill.verified:  # once verified, readers may finish even if storing it failed
                fill.error = exc if isinstance(exc, Exception) else FillError("fill cancelled")
            log.warning("fill of blob %s failed: %s", fill.key, exc)
            if isinstance(exc, BlobMismatch):
                await self.mismatches.record(fill.key)
            await asyncio.to_thread(spool_file.finish)
            if not isinstance(exc, Exception):
                raise
        finally:
            if uploading is not None:  # not completed: the store must not keep any of it
                await uploading.abandon()
            metrics.FILLS_IN_FLIGHT.dec()
            metrics.FILLS.labels(result).observe(time.monotonic() - fill.started)
            self.active.pop(fill.key, None)
            fill.notify()
            # The fill's batch buffers are freed now; hand their pages back (not awaited: nothing depends on it).
            asyncio.get_running_loop().run_in_executor(None, release_free_memory)
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.leases.release, fill.key)  # type: ignore[union-attr]

    def _complete(self, fill: Fill, spool_file: SpoolFile, upload: Upload) -> None:
        """(In a thread.) The verified blob's uploaded parts become the stored blob, then its record."""
        try:
            upload.complete()
        finally:
            spool_file.finish()
        with self.engine.begin() as conn:
            records.add_blob(conn, fill.key, fill.size)

    def _store(self, fill: Fill, spool_file: SpoolFile) -> None:
        """(In a thread.) A verified spool file becomes the stored blob, then its record."""
        try:
            spool_file.close()
            self.store.ingest(fill.key, spool_file.path)
        finally:
            spool_file.finish()
        with self.engine.begin() as conn:
            records.add_blob(conn, fill.key, fill.size)

    async def _renew_lease(self, key: str) -> None:
        assert self.leases is not None
        while True:
            await asyncio.sleep(self.leases.ttl / 3)
            try:
                await asyncio.to_thread(self.leases.renew, key)
            except Exception as exc:  # noqa: BLE001 - keep filling; the lease is advisory
                log.warning("could not renew the fill lease of %s: %s", key, exc.__class__.__name__)

    async def _follow(self, fill: Fill) -> None:
        """Track another process's fill of the same blob until it is stored; if that process dies, take the
        fill over where it stopped (this process's readers read on)."""
        missing_since: float | None = None
        taken_over = False
        fill.ahead = followed = FollowedParts(self.spool.want_path(fill.key))
        try:
            await asyncio.to_thread(announce, followed.want_path, self.spool.part_path(fill.key))
            while True:
                if await run_in(self.store.pool, self.store.stat, fill.key) is not None:
                    fill.written = fill.size
                    fill.verified = True
                    return
                written, alive, published = await asyncio.to_thread(self._progress, fill.key)
                if written is not None and not alive:
                    spool_file = await asyncio.to_thread(self.spool.begin, fill.key, True)
                    if spool_file is None:
                        await asyncio.sleep(FOLLOW_POLL)  # another follower took it over first: follow that one
                        continue
                    log.warning("the process filling %s went away at %d bytes; continuing its fill here",
                                fill.key, written)
                    fill.task = asyncio.create_task(self._run(fill, spool_file), name=f"fill-{fill.key[:12]}")
                    taken_over = True
                    return
                if written is None:
                    missing_since = missing_since or time.monotonic()
                    if not alive and time.monotonic() - missing_since > 1.0:
                        raise FillError("the fill of this blob failed in another process")
                else:
                    missing_since = None
                    changed = followed.update(published or (True, []))
                    if written > fill.written or changed:
                        fill.written = max(fill.written, written)
                        fill.notify()
                await asyncio.sleep(FOLLOW_POLL)
        except Exception as exc:  # noqa: BLE001
            fill.error = exc
        finally:
            if not taken_over:
                fill.ahead = None
                self.active.pop(fill.key, None)
                fill.notify()

    def _progress(self, key: str) -> tuple[int | None, bool, tuple[bool, list[tuple[int, int]]] | None]:
        """(In a thread.) Another process's fill of ``key``: its prefix, whether it lives, the parts it shares."""
        written, alive = self.spool.progress(key)
        return written, alive, read_parts(self.spool.parts_path(key)) if alive else None

    async def close(self) -> None:
        tasks = [f.task for f in self.active.values() if f.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
