"""Filling one blob: download it into its spool file while hashing it, verify it, hand it to the store.

The network and the disk never wait on each other: receiving and writing+hashing run as two tasks
with a bounded queue between them (a fill's memory stays near ``QUEUE_BATCHES x FLUSH_BYTES``). A
dropped upstream connection is resumed with a Range request; an upstream that ignores the Range is
answered by skipping what is already held. The last ``HOLDBACK`` bytes reach readers only once the
whole blob hashed to its name (``fill.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING

import aiohttp

from hubproxy.cache.spool import SpoolFile
from hubproxy.store.base import BlobHasher
from hubproxy.upstream.client import UpstreamClient, UpstreamUnavailable, iter_body

if TYPE_CHECKING:
    from hubproxy.cache.fill import Fill

log = logging.getLogger(__name__)

#: Write to disk and hash in batches of this size (or every FLUSH_INTERVAL seconds).
FLUSH_BYTES = 4 * 1024 * 1024
FLUSH_INTERVAL = 0.05
#: Batches received but not yet written (bounds a fill's memory to about 4 x FLUSH_BYTES).
QUEUE_BATCHES = 4
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)")


class FillError(Exception):
    """The fill failed; readers must cut their connection."""


class BlobMismatch(FillError):
    """The upstream's bytes do not hash to the expected key."""


class _Retryable(Exception):
    """A transient upstream answer worth another (ranged) attempt."""


class Filler:
    """Downloads a fill's bytes into its spool file and proves they hash to the blob's name."""

    def __init__(self, upstream: UpstreamClient, retries: int) -> None:
        self.upstream = upstream
        self.retries = retries

    async def fill(self, fill: Fill, spool: SpoolFile) -> None:
        """Every byte of the blob in ``spool``, hashed; raises ``BlobMismatch`` or ``FillError``."""
        hasher = BlobHasher(fill.key, fill.size)
        await self._resume(fill, spool, hasher)
        await self._download(fill, spool, hasher)
        if fill.written != fill.size:
            raise FillError(f"upstream sent {fill.written} bytes, expected {fill.size}")
        digest = hasher.hexdigest()
        if digest != fill.key:
            raise BlobMismatch(f"blob {fill.key} failed verification (got {digest})")

    async def _resume(self, fill: Fill, spool: SpoolFile, hasher: BlobHasher) -> None:
        """Take over the bytes a dead filler left in the spool file: hash them, continue after them."""
        held = spool.resume_from
        if not held:
            return
        if held > fill.size:
            await asyncio.to_thread(spool.restart)
            return
        await asyncio.to_thread(_hash_prefix, spool.path, held, hasher)
        fill.written = held
        fill.notify()
        log.info("continuing the fill of %s from the %d bytes a stopped filler left", fill.key, held)

    async def _download(self, fill: Fill, spool: SpoolFile, hasher: BlobHasher) -> None:
        attempts = 0
        while True:
            try:
                await self._download_once(fill, spool, hasher)
                if fill.written >= fill.size:
                    return
                raise FillError(f"upstream ended the body at {fill.written} of {fill.size} bytes")
            except (UpstreamUnavailable, aiohttp.ClientError, asyncio.TimeoutError, _Retryable) as exc:
                attempts += 1
                # An upstream that cannot be reached at all gets one more try: a client waits on the first byte.
                unreached = isinstance(exc, UpstreamUnavailable) and not fill.answered
                limit = min(self.retries, 1) if unreached else self.retries
                if attempts > limit or getattr(exc, "offline", False):
                    raise FillError(f"upstream failed after {attempts} attempts: {exc}") from exc
                log.info("fill of %s interrupted at %d bytes (%s); resuming", fill.key, fill.written, exc)
                await asyncio.sleep(min(0.2 * 2 ** (attempts - 1), 2.0))

    async def _download_once(self, fill: Fill, spool: SpoolFile, hasher: BlobHasher) -> None:
        start = fill.written
        resp = await self.upstream.open_stream(fill.source_path, start=start)
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
            fill.answered = True
            fill.notify()
            queue: asyncio.Queue[bytearray | None] = asyncio.Queue(maxsize=QUEUE_BATCHES)
            consumer = asyncio.create_task(self._consume(queue, fill, spool, hasher))
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

    async def _consume(self, queue: asyncio.Queue[bytearray | None], fill: Fill, spool: SpoolFile,
                       hasher: BlobHasher) -> None:
        while (buf := await queue.get()) is not None:
            fill.queued -= len(buf)
            # Write and hash a batch at once, in two threads (both release the GIL).
            await asyncio.gather(asyncio.to_thread(spool.write, buf), asyncio.to_thread(hasher.update, buf))
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
