"""Single-flight fills: one upstream fetch per blob, readers follow the growing temp file.

A fill streams a blob from the upstream into a temp file of the store while hashing it.
Readers (the first client and any that join later) read the temp file up to what has
landed, minus the last ``HOLDBACK`` bytes, which are released only once the hash has been
checked. A blob that fails its check is deleted and every reader's connection is cut, so no
client ever receives a complete but wrong file. If the upstream drops the connection the
fill resumes with a Range request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator

import aiohttp

from hubproxy.cache.index import Index
from hubproxy.cache.lease import FillLeases, Holder
from hubproxy.cache.mismatch import Mismatches
from hubproxy.config import Settings
from hubproxy.observability import metrics
from hubproxy.store.base import BlobHasher, BlobStore, FillWriter
from hubproxy.upstream.client import UpstreamClient, UpstreamUnavailable, iter_body

log = logging.getLogger(__name__)

#: Bytes withheld from readers until the blob's hash is verified.
HOLDBACK = 1
#: Write to disk and hash in batches of this size (or every FLUSH_INTERVAL seconds).
FLUSH_BYTES = 4 * 1024 * 1024
FLUSH_INTERVAL = 0.05
#: Seconds between looks at another process's fill.
FOLLOW_POLL = 0.02
#: Batches received but not yet written (bounds a fill's memory to about 4 x FLUSH_BYTES).
QUEUE_BATCHES = 4
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)")


class FillError(Exception):
    """The fill failed; readers must cut their connection."""


class BlobMismatch(FillError):
    """The upstream's bytes do not hash to the expected key."""


class Fill:
    """A blob being filled; shared by every reader of it in this process."""

    def __init__(self, key: str, size: int, tmp_path: str, final_path: str | None, source_path: str = "") -> None:
        self.key = key
        self.size = size
        #: Where the upstream serves the blob (a resolve path), for whoever continues the fill.
        self.source_path = source_path
        self.tmp_path = tmp_path
        self.final_path = final_path
        self.written = 0
        self.queued = 0  # received, waiting to be written and hashed
        self.verified = False
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self._event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: What requests that join this fill get: the fill itself once it is sure to run here, or (with
        #: replicas) the replica holding the fill lease, or None if the blob turned out to be stored.
        self.decided: asyncio.Future[Fill | Holder | None] = asyncio.get_running_loop().create_future()

    @property
    def done(self) -> bool:
        return self.verified or self.error is not None

    def readable(self) -> int:
        """How many leading bytes readers may have now."""
        if self.verified:
            return self.size
        return max(0, min(self.written, self.size - HOLDBACK))

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_readable(self, offset: int) -> None:
        """Wait until byte ``offset`` may be read; raise if the fill failed."""
        while True:
            if self.error is not None:
                raise FillError(str(self.error))
            if self.readable() > offset or (self.verified and offset >= self.size):
                return
            await self._event.wait()

    def open_fd(self) -> int:
        """A descriptor on the bytes: the temp file, or the committed (verified) blob once renamed."""
        try:
            return os.open(self.tmp_path, os.O_RDONLY)
        except FileNotFoundError:
            if self.final_path is None:
                raise FillError(str(self.error or "fill vanished")) from None
            try:
                return os.open(self.final_path, os.O_RDONLY)
            except FileNotFoundError:
                raise FillError(str(self.error or "fill vanished")) from None


class FillManager:
    """Starts fills and lets requests join the one already running for a blob."""

    def __init__(self, settings: Settings, store: BlobStore, index: Index, upstream: UpstreamClient,
                 leases: FillLeases | None = None) -> None:
        self.settings = settings
        self.leases = leases
        self.store = store
        self.index = index
        self.upstream = upstream
        self.active: dict[str, Fill] = {}
        #: Blobs whose fills failed verification (resumed downloads of them restart).
        self.mismatches = Mismatches(index.engine)
        #: Blobs known to be in the store (saves a stat per request).
        self.present: set[str] = set()
        #: Blobs being read from the store right now (eviction keeps them).
        self.serving: dict[str, int] = {}
        #: Set when a blob is committed (wakes the maintenance loop).
        self.committed = asyncio.Event()

    async def has_blob(self, key: str) -> bool:
        """Whether the blob is stored (remembered once seen, so the hot path asks the store once)."""
        if key in self.present:
            return True
        if await asyncio.to_thread(self.store.has, key):
            self.present.add(key)
            return True
        return False

    async def stored_now(self, key: str) -> bool:
        """Whether the store has the blob at this moment (asked of the store, not of memory).

        For answers that send a client elsewhere (a presigned URL): after a purge or a quarantine in
        another process, memory may still believe the blob is there.
        """
        if await asyncio.to_thread(self.store.has, key):
            self.present.add(key)
            return True
        self.present.discard(key)
        return False

    async def stored_size(self, key: str) -> int | None:
        return await asyncio.to_thread(self.store.size, key)

    async def stored_body(self, key: str, start: int, end: int, chunk: int) -> AsyncIterator[bytes] | None:
        """Bytes of a stored blob, counted as a reader (eviction keeps it meanwhile); None if it is gone."""
        body = await self.store.reader(key, start, end, chunk)
        if body is None:
            self.present.discard(key)
            return None
        return self.track(key, body)

    def get(self, key: str) -> Fill | None:
        return self.active.get(key)

    async def track(self, key: str, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Count ``body`` as a reader of a stored blob while it runs."""
        self.serving[key] = self.serving.get(key, 0) + 1
        try:
            async for chunk in body:
                yield chunk
        finally:
            await body.aclose()  # type: ignore[attr-defined]
            left = self.serving[key] - 1
            if left:
                self.serving[key] = left
            else:
                del self.serving[key]

    def protected(self) -> set[str]:
        """Blobs eviction must not touch: being filled or served in this process."""
        return set(self.active) | set(self.serving)

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
        writer = self.store.begin_fill(key, resume=True)
        if writer is None:
            if key in self.present:
                return None
            fill = Fill(key, size, self.store.part_path(key), self.store.local_path(key), source_path)
            fill.task = asyncio.create_task(self._follow(fill), name=f"follow-{key[:12]}")
            self.active[key] = fill
            fill.decided.set_result(fill)
            return fill
        fill = Fill(key, size, writer.tmp_path, self.store.local_path(key), source_path)
        self.active[key] = fill
        if self.leases is not None:
            try:
                holder = await asyncio.to_thread(self.leases.acquire, key, dead_owner)
            except BaseException as exc:
                self.active.pop(key, None)
                await asyncio.to_thread(writer.abort)
                fill.decided.set_exception(exc if isinstance(exc, Exception) else FillError("cancelled"))
                fill.decided.exception()  # retrieved: joiners get it, nobody else needs to
                raise
            if holder is not None:
                self.active.pop(key, None)
                await asyncio.to_thread(writer.abort)
                outcome: Fill | Holder | None = None if await self.has_blob(key) else holder
                fill.decided.set_result(outcome)
                return outcome
        fill.task = asyncio.create_task(self._run(fill, writer, source_path), name=f"fill-{key[:12]}")
        fill.decided.set_result(fill)
        return fill

    async def _renew_lease(self, key: str) -> None:
        assert self.leases is not None
        while True:
            await asyncio.sleep(self.leases.ttl / 3)
            try:
                await asyncio.to_thread(self.leases.renew, key)
            except Exception as exc:  # noqa: BLE001 - keep filling; the lease is advisory
                log.warning("could not renew the fill lease of %s: %s", key, exc.__class__.__name__)

    async def _follow(self, fill: Fill) -> None:
        """Track another process's fill of the same blob through the store until it is committed.

        If that process dies, this one takes the fill over where it stopped: its readers read on.
        """
        missing_since: float | None = None
        taken_over = False
        try:
            while True:
                if await asyncio.to_thread(self.store.has, fill.key):
                    self.present.add(fill.key)
                    fill.written = fill.size
                    fill.verified = True
                    return
                written, alive = await asyncio.to_thread(self.store.fill_progress, fill.key)
                if written is not None and not alive:
                    writer = await asyncio.to_thread(self.store.begin_fill, fill.key, True)
                    if writer is None:
                        await asyncio.sleep(FOLLOW_POLL)  # another follower took it over first: follow that one
                        continue
                    log.warning("the process filling %s went away at %d bytes; continuing its fill here",
                                fill.key, written)
                    fill.task = asyncio.create_task(self._run(fill, writer, fill.source_path),
                                                    name=f"fill-{fill.key[:12]}")
                    taken_over = True
                    return
                if written is None:
                    missing_since = missing_since or time.monotonic()
                    if not alive and time.monotonic() - missing_since > 1.0:
                        raise FillError("the fill of this blob failed in another process")
                else:
                    missing_since = None
                    if written > fill.written:
                        fill.written = written
                        fill.notify()
                await asyncio.sleep(FOLLOW_POLL)
        except Exception as exc:  # noqa: BLE001
            fill.error = exc
        finally:
            if not taken_over:
                self.active.pop(fill.key, None)
                fill.notify()

    async def close(self) -> None:
        tasks = [f.task for f in self.active.values() if f.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, fill: Fill, writer: FillWriter, source_path: str) -> None:
        hasher = BlobHasher(fill.key, fill.size)
        renewer = asyncio.create_task(self._renew_lease(fill.key)) if self.leases is not None else None
        metrics.FILLS_IN_FLIGHT.inc()
        result = "error"
        try:
            await self._resume(fill, writer, hasher)
            await self._download(fill, writer, hasher, source_path)
            if fill.written != fill.size:
                raise FillError(f"upstream sent {fill.written} bytes, expected {fill.size}")
            digest = hasher.hexdigest()
            if digest != fill.key:
                raise BlobMismatch(f"blob {fill.key} failed verification (got {digest})")
            # The bytes are proven right: release the held-back tail now, then make the blob durable.
            fill.verified = True
            fill.notify()
            await asyncio.to_thread(writer.commit)
            self.present.add(fill.key)
            await self.index.add_blob(fill.key, fill.size)
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
                metrics.UPSTREAM_ERRORS.labels("mismatch").inc()
                try:
                    await self.mismatches.record(fill.key)
                except Exception as record_exc:  # noqa: BLE001 - still known in this process's memory
                    log.warning("could not record the failed verification of %s: %s", fill.key, record_exc)
            await asyncio.to_thread(writer.abort)
            if not isinstance(exc, Exception):
                raise
        finally:
            metrics.FILLS_IN_FLIGHT.dec()
            metrics.FILLS.labels(result).observe(time.monotonic() - fill.started)
            self.active.pop(fill.key, None)
            fill.notify()
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.leases.release, fill.key)  # type: ignore[union-attr]

    async def _resume(self, fill: Fill, writer: FillWriter, hasher: BlobHasher) -> None:
        """Take over the bytes a dead filler left in the spool file: hash them, continue after them."""
        held = getattr(writer, "resume_from", 0)
        if not held:
            return
        if held > fill.size:
            await asyncio.to_thread(writer.restart)
            return
        await asyncio.to_thread(_hash_prefix, writer.tmp_path, held, hasher)
        fill.written = held
        fill.notify()
        log.info("continuing the fill of %s from the %d bytes a stopped filler left", fill.key, held)

    async def _download(self, fill: Fill, writer: FillWriter, hasher: BlobHasher, source_path: str) -> None:
        attempts = 0
        while True:
            try:
                await self._download_once(fill, writer, hasher, source_path)
                if fill.written >= fill.size:
                    return
                raise FillError(f"upstream ended the body at {fill.written} of {fill.size} bytes")
            except (UpstreamUnavailable, aiohttp.ClientError, asyncio.TimeoutError, _Retryable) as exc:
                attempts += 1
                if attempts > self.settings.fill_retries or getattr(exc, "offline", False):
                    raise FillError(f"upstream failed after {attempts} attempts: {exc}") from exc
                log.info("fill of %s interrupted at %d bytes (%s); resuming", fill.key, fill.written, exc)
                await asyncio.sleep(min(0.2 * 2 ** (attempts - 1), 2.0))
            except FillError:
                raise

    async def _download_once(self, fill: Fill, writer: FillWriter, hasher: BlobHasher, source_path: str) -> None:
        start = fill.written
        resp = await self.upstream.open_stream(source_path, start=start)
        try:
            skip = 0
            if resp.status == 206:
                m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != start:
                    raise _Retryable(f"unexpected Content-Range {resp.headers.get('Content-Range')!r}")
            elif resp.status == 200:
                skip = start  # the upstream ignored our Range: drop what we already have
            elif resp.status in (408, 429) or resp.status >= 500:
                raise _Retryable(f"upstream answered {resp.status}")
            else:
                raise FillError(f"upstream answered {resp.status} for the blob")
            # Receiving and writing+hashing run as two tasks so the network never waits on the disk.
            queue: asyncio.Queue[bytearray | None] = asyncio.Queue(maxsize=QUEUE_BATCHES)
            consumer = asyncio.create_task(self._consume(queue, fill, writer, hasher))
            buf = bytearray()
            last_flush = time.monotonic()
            try:
                async for chunk in iter_body(resp, skip):
                    if fill.written + fill.queued + len(buf) + len(chunk) > fill.size:
                        raise FillError("upstream sent more bytes than the blob's size")
                    buf += chunk
                    now = time.monotonic()
                    if len(buf) >= FLUSH_BYTES or now - last_flush >= FLUSH_INTERVAL:
                        await _put(queue, consumer, buf, fill)
                        buf = bytearray()
                        last_flush = now
            finally:
                # Keep what arrived before a drop: the resume starts after it.
                if buf and not consumer.done():
                    await _put(queue, consumer, buf, fill)
                if not consumer.done():
                    await _put(queue, consumer, None, fill)
                await consumer
        finally:
            resp.release()

    async def _consume(self, queue: asyncio.Queue[bytearray | None], fill: Fill, writer: FillWriter,
                       hasher: BlobHasher) -> None:
        while (buf := await queue.get()) is not None:
            fill.queued -= len(buf)
            await self._flush(fill, writer, hasher, buf)

    async def _flush(self, fill: Fill, writer: FillWriter, hasher: BlobHasher, buf: bytearray) -> None:
        """Write and hash a batch at once, in two threads (both release the GIL)."""
        await asyncio.gather(asyncio.to_thread(writer.write, buf), asyncio.to_thread(hasher.update, buf))
        fill.written += len(buf)
        fill.notify()


async def _put(queue: asyncio.Queue[bytearray | None], consumer: asyncio.Task[None], item: bytearray | None,
               fill: Fill) -> None:
    """Queue a batch for the writer, or raise the writer's error if it has failed."""
    if item is not None:
        fill.queued += len(item)
    put = asyncio.ensure_future(queue.put(item))
    done, _ = await asyncio.wait({put, consumer}, return_when=asyncio.FIRST_COMPLETED)
    if put not in done:
        put.cancel()
        consumer.result()
        raise FillError("the blob writer stopped")


def _hash_prefix(path: str, length: int, hasher: BlobHasher) -> None:
    with open(path, "rb") as f:
        left = length
        while left > 0:
            data = f.read(min(left, FLUSH_BYTES))
            if not data:
                raise FillError("the spool file is shorter than it was")
            hasher.update(data)
            left -= len(data)


class _Retryable(Exception):
    """A transient upstream answer worth another (ranged) attempt."""


async def read_fill(fill: Fill, start: int, end: int, chunk_size: int) -> AsyncIterator[bytes]:
    """Yield bytes ``[start, end)`` of a fill as they become readable (verified at the tail)."""
    fd = fill.open_fd()
    try:
        pos = start
        while pos < end:
            await fill.wait_readable(pos)
            limit = min(end, fill.readable())
            n = min(limit - pos, chunk_size)
            data = await asyncio.to_thread(os.pread, fd, n, pos)
            if not data:
                raise FillError("fill data vanished")
            pos += len(data)
            yield data
        if end >= fill.size and not fill.verified:
            await fill.wait_readable(fill.size)
    finally:
        os.close(fd)
