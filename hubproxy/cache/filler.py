"""Filling one blob: download it into its spool file (``parts.py``), hash it as it grows, verify it.

The download advances ``fill.written``, the prefix of the blob that is all on disk, and the hash
follows that prefix on a worker thread of its own, never on the event loop: every byte is hashed once the
prefix reaches it, whichever connection brought it, from the buffer it was received into if its writer lent it
(``hashfeed.py``: one stream's batches, still in the CPU's caches), else from the spool file's cached pages
(``filehash.py``), so receiving, writing and hashing overlap without a hand-off per batch. Ahead of the
writers, the spool file's pages are made in advance (``warm_pages``). A filler that takes over a dead one's
spool file re-hashes the prefix it left and downloads only the rest. The last ``HOLDBACK`` bytes reach
readers only once the whole blob hashed to its name (``fill.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from hubproxy.cache.hashfeed import HashFeed
from hubproxy.cache.parts import FillError, PartedDownload
from hubproxy.cache.spool import SpoolFile
from hubproxy.descriptors import call_owning, duplicate, open_for_reading
from hubproxy.filehash import ShortFile, hash_file_range
from hubproxy.memory import ByteBudget
from hubproxy.observability import metrics
from hubproxy.store.base import BlobHasher
from hubproxy.upstream.client import UpstreamClient

if TYPE_CHECKING:
    from hubproxy.cache.fill import Fill

log = logging.getLogger(__name__)

__all__ = ["BlobMismatch", "FillError", "Filler"]


class BlobMismatch(FillError):
    """The upstream's bytes do not hash to the expected key."""


class Filler:
    """Downloads a fill's bytes into its spool file and proves they hash to the blob's name."""

    def __init__(self, upstream: UpstreamClient, retries: int, connections: int, part_bytes: int,
                 fast_stream_mbps: float, held_bytes: int = 0) -> None:
        self.upstream = upstream
        #: Bytes of parallel parts all this process's fills may hold in memory at once (``hashfeed.hold_parts``).
        self.held = ByteBudget(held_bytes)
        self.retries = retries
        self.connections = connections
        self.part_bytes = part_bytes
        self.fast_bps = fast_stream_mbps * 1e6

    async def fill(self, fill: Fill, spool: SpoolFile) -> None:
        """Every byte of the blob in ``spool``, hashed; raises ``BlobMismatch`` or ``FillError``."""
        held = spool.resume_from
        if held > fill.size:
            await asyncio.to_thread(spool.restart)
        elif held:
            fill.written = held
            fill.notify()
            log.info("continuing the fill of %s from the %d bytes a stopped filler left", fill.key, held)
        reserved = await asyncio.to_thread(spool.reserve, fill.size)
        feed = HashFeed(budget=self.held)
        hasher = PrefixHasher(fill, spool.path, feed)
        hashing = asyncio.create_task(hasher.run())
        lead = self.connections * self.part_bytes + WARM_AHEAD_BYTES
        local = reserved and not spool.spool.network_filesystem
        warming = asyncio.create_task(warm_pages(fill, spool.path, lead, spool.direct)) if local else None
        try:
            download = PartedDownload(self.upstream, fill, spool, self.retries, self.connections,
                                      self.part_bytes, self.fast_bps, feed)
            await download.run()
            if fill.written != fill.size:
                raise FillError(f"upstream sent {fill.written} bytes, expected {fill.size}")
            digest = await hashing
        finally:
            hashing.cancel()
            if warming is not None:
                warming.cancel()
            # Readers sending from the kept buffers keep them (``FeedReader``); later ones read the file.
            fill.loans = None
            feed.release()
        if digest != fill.key:
            raise BlobMismatch(f"blob {fill.key} failed verification (got {digest})")


#: How far ahead of the bytes being written ``warm_pages`` keeps the spool file's pages ready, and in what steps.
WARM_AHEAD_BYTES = 64 * 1024 * 1024
WARM_STEP_BYTES = 8 * 1024 * 1024
#: Threads making pages for every fill of the process: the work is CPU, more threads than cores gain nothing,
#: and in a pool of their own many fills at once never keep the shared worker threads from disk and database calls.
WARMER_THREADS = os.cpu_count() or 2
WARMERS = ThreadPoolExecutor(max_workers=WARMER_THREADS, thread_name_prefix="fill-warm")


async def warm_pages(fill: Fill, path: str, lead: int, unless_unpaged: bool = False) -> None:
    """Put the spool file's pages in the page cache ahead of its writers, in the warming threads, up to ``lead`` bytes
    past the written prefix (parts in flight are written at most that far ahead). Only for a reserved
    (``fallocate``d) file on a local filesystem: its bytes read as zeros with no I/O, so the kernel just makes
    the pages (on NFS, which can allocate too, they would be read from the server).

    A page the kernel takes for the first time can cost far more than copying into it: on a VM whose host
    reclaims the guest's free memory (free page reporting, ballooning), each new page faults in the host, about
    2 s per GiB on our 2-core VM. Inside ``write`` those faults are taken one writer at a time (the file's lock);
    taken here, ahead, they overlap with the writes and the writers only copy (1 GiB written in 0.9 s, not 2.0 s).
    Stops once the fill writes with direct I/O (``fill.loans``): those writes skip the page cache. With
    ``unless_unpaged`` (the spool takes direct I/O, so its lanes skip the page cache) it makes only the pages of
    parts written through the page cache (received on the event loop: up to ``fill.paged_end``), and none while
    there are none: pages made for a lane's direct write are only dropped by it.
    """
    try:
        fd = await open_for_reading(path)
    except OSError as exc:
        log.debug("not warming the pages of %s: %s", path, exc)
        return
    warmed = fill.written
    try:
        while warmed < fill.size and fill.loans is None:  # a stream written past the page cache needs no pages
            if unless_unpaged:  # (it waited for a paged part: the pages behind the prefix are written by now)
                warmed = max(warmed, fill.written)
            target = min(fill.paged_end if unless_unpaged else fill.size, fill.written + lead)
            if warmed < target:
                step = min(WARM_STEP_BYTES, target - warmed)
                await call_owning(WARMERS, _advise, duplicate(fd), warmed, step)
                warmed += step
            else:
                await fill.changed()
    except (OSError, RuntimeError) as exc:  # a lost speed-up only (RuntimeError: the pool shut down at exit)
        log.debug("stopped warming the pages of %s: %s", path, exc)
    finally:
        os.close(fd)


def _advise(own: tuple[int, ...], start: int, length: int) -> None:
    """(In a thread.) Ask for the pages of bytes ``[start, start + length)`` now."""
    os.posix_fadvise(own[0], start, length, os.POSIX_FADV_WILLNEED)


class PrefixHasher:
    """Hashes the blob's prefix as it grows: from the batches its writers lend (``hashfeed.py``) while they are
    still in the CPU's caches, else reading it back from the spool file's cached pages."""

    def __init__(self, fill: Fill, path: str, feed: HashFeed) -> None:
        self.fill = fill
        self.path = path
        self.feed = feed
        self.hasher = BlobHasher(fill.key, fill.size)
        self.hashed = 0

    async def run(self) -> str:
        """Hash what the written prefix holds beyond what is hashed; the digest once the whole blob is. Each call
        reads a duplicate of the descriptor that it closes itself: a call left running by a cancelled fill never
        reads a number that is another file's or connection's by then."""
        fd = await open_for_reading(self.path)
        try:
            while self.hashed < self.fill.size:
                if self.fill.written > self.hashed:
                    self.hashed = await call_owning(None, _hash_range, duplicate(fd), self.hasher, self.feed,
                                                    self.hashed, self.fill.written, self.fill.size)
                else:
                    await self.fill.changed()
            return self.hasher.hexdigest()
        finally:
            os.close(fd)


#: How long a hash call that just hashed a loan waits for the next one before it returns to the event loop.
LOAN_LINGER_SECONDS = 0.02
_HASHED_FROM_BUFFER = metrics.FILL_HASHED_BYTES.labels("buffer")
_HASHED_FROM_SPOOL = metrics.FILL_HASHED_BYTES.labels("spool")


def _hash_range(own: tuple[int, ...], hasher: BlobHasher, feed: HashFeed, start: int, end: int, size: int) -> int:
    """(In a thread.) Feed bytes ``[start, end)`` of the blob to the hasher, from the feed's loans where it holds
    them, else from the spool file; then go on through loans that continue it: they are written bytes, and the
    written prefix the event loop knows of lags behind a fast stream. Returns where the hash got to (``end`` or
    beyond). A call that hashed a loan waits up to ``LOAN_LINGER_SECONDS`` for the next (short of the blob's
    ``size``), so a fast stream's hash keeps one thread close behind its writer instead of a round trip through
    the event loop per batch: behind that round trip, the hasher lagged more than the writer's six buffers and
    the writer waited 0.4 s per GiB for it."""
    pos, lending = start, False
    while True:
        offset, lent = feed.take(pos, LOAN_LINGER_SECONDS if lending and end <= pos < size else 0.0)
        if lent is None:
            if pos >= end:
                return pos
            stop = offset if pos < offset < end else end
            try:
                hash_file_range(own[0], hasher.update, pos, stop)
            except ShortFile as exc:
                raise FillError(f"the spool file is shorter than it was: {exc}") from exc
            _HASHED_FROM_SPOOL.inc(stop - pos)
            pos, lending = stop, False
        else:
            try:
                hasher.update(lent)
            finally:
                feed.done()
            _HASHED_FROM_BUFFER.inc(len(lent))
            pos, lending = pos + len(lent), True
        feed.passed(pos)
