"""The blob cache: one call serves a range of a blob from wherever it is, and says where that was.

``serve`` decides, in this order: stored (``hit``); being filled here or by another process on the same
spool (``miss``: follow the growing fill); being filled by another replica (``relay`` its bytes, or take
the fill over if that replica is gone); not stored (start a fill, ``miss``); or, for what cannot be
cached (no content hash, no room, a range far beyond a fill), straight from the upstream
(``passthrough``). Handlers never touch fills, leases or stores themselves.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from math import ceil

import aiohttp

from hubproxy.cache.fill import Fill, FillManager
from hubproxy.cache.fillbody import FillBody
from hubproxy.cache.lease import Holder
from hubproxy.cache.spool import Spool
from hubproxy.cache.usage import Usage
from hubproxy.config import Settings
from hubproxy.hub.errors import HubError
from hubproxy.hub.relay import HEADER, PATH, sign
from hubproxy.store.base import BlobHasher, BlobStore, is_blob_key
from hubproxy.store.bodies import WrappedBody
from hubproxy.threads import run_in
from hubproxy.upstream.answers import unavailable_error
from hubproxy.upstream.client import UpstreamClient, UpstreamUnavailable, iter_body

log = logging.getLogger(__name__)

#: A range starting this far beyond what a one-stream fill has written is fetched from the upstream directly
#: (unless it reaches the blob's end); a parallel fill fetches the part holding it next instead.
FOLLOW_WINDOW = 16 * 1024 * 1024
#: A verified pass-through is hashed in a worker thread, in batches of this many bytes (never on the event loop).
HASH_BATCH_BYTES = 1024 * 1024
#: Free space a fill leaves on the spool's filesystem (the database and logs may live there too).
ROOM_MARGIN = 64 * 1024
#: errno values meaning the spool's filesystem has no room left.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Wanted:
    """A blob a request needs: its key and size, where the upstream serves it, and who may fetch it."""

    key: str
    size: int
    #: The upstream resolve path that serves the blob (at a commit).
    source_path: str
    #: What it is, for error messages ("config.json of acme/m at 1a2b...").
    what: str
    #: Raised instead of fetching from the upstream (the caller may read stored blobs only).
    pull_refusal: HubError | None = None


@dataclass
class Served:
    body: AsyncIterator[bytes]
    #: hit | miss | relay | passthrough
    origin: str


class BlobCache:
    """Stored blobs, fills in progress, relays between replicas and the upstream, behind one ``serve``."""

    def __init__(self, settings: Settings, store: BlobStore, spool: Spool, fills: FillManager,
                 upstream: UpstreamClient, usage: Usage, relay_secret: bytes = b"") -> None:
        self.settings = settings
        self.store = store
        self.spool = spool
        self.fills = fills
        self.upstream = upstream
        self.usage = usage
        self.relay_secret = relay_secret
        #: Blobs known to be stored (saves a stat per request); kept true by ``forget`` (cache events).
        self.present: set[str] = set()
        #: Blobs being read from the store right now (eviction keeps them).
        self.serving: dict[str, int] = {}

    # -- what is stored --------------------------------------------------------------------
    async def stored(self, key: str) -> bool:
        """Whether the blob is stored (remembered once seen, so the hot path asks the store once)."""
        if key in self.present:
            return True
        return await self.stored_now(key)

    async def stored_now(self, key: str) -> bool:
        """Whether the store has the blob at this moment (asked of the store, not of memory): for answers that
        send a client elsewhere, since another process may just have purged it."""
        if await run_in(self.store.pool, self.store.stat, key) is not None:
            self.present.add(key)
            return True
        self.present.discard(key)
        return False

    def forget(self, key: str) -> None:
        """The blob was deleted (here or by another process)."""
        self.present.discard(key)

    def protected(self) -> set[str]:
        """Blobs eviction must not touch: being filled or served in this process."""
        return set(self.fills.active) | set(self.serving)

    async def presign(self, key: str) -> str | None:
        """A URL on the store's own origin for a stored blob, if the store gives them and has the blob now."""
        if not await self.stored_now(key):
            return None
        return await asyncio.to_thread(self.store.presign, key)

    async def stored_body(self, key: str, start: int, end: int) -> AsyncIterator[bytes] | None:
        """Bytes of a stored blob, counted as a reader while they flow; None if it is no longer stored."""
        body = await self.store.read(key, start, end, self.settings.serve_chunk_size)
        if body is None:
            self.present.discard(key)
            return None
        return self._track(key, body)

    def _track(self, key: str, body: AsyncIterator[bytes]) -> WrappedBody:
        self.serving[key] = self.serving.get(key, 0) + 1

        def done() -> None:
            left = self.serving[key] - 1
            if left:
                self.serving[key] = left
            else:
                del self.serving[key]

        return WrappedBody(body, close=done)

    # -- serving ---------------------------------------------------------------------------
    async def serve(self, want: Wanted, start: int, end: int) -> Served:
        """Bytes ``[start, end)`` of a blob, and where they come from."""
        if not is_blob_key(want.key):
            # Not content-addressed upstream: nothing to verify against, so pass it through uncached.
            if want.pull_refusal is not None:
                raise want.pull_refusal
            return Served(await self.passthrough(want, start, end), "passthrough")
        self.usage.touch(want.key)
        if await self.stored(want.key):
            stored = await self.stored_body(want.key, start, end)
            if stored is not None:
                return Served(stored, "hit")
        if want.pull_refusal is not None:
            raise want.pull_refusal
        if self.fills.get(want.key) is None:
            if self.upstream.offline:
                raise unavailable_error(UpstreamUnavailable("offline", offline=True), want.what)
            wait = self.fills.mismatches.refill_wait(want.key)
            if wait:
                raise HubError(502, "UpstreamError", f"The upstream's bytes for {want.what} failed verification "
                               f"repeatedly; not fetched again for {wait:.0f}s", {"Retry-After": str(ceil(wait))})
            if not await self._room_for(want.size):
                log.warning("store full: serving %s straight from the upstream, uncached", want.what)
                return Served(await self.passthrough(want, start, end), "passthrough")
        fill = await self.fills.start(want.key, want.size, want.source_path)
        if isinstance(fill, Holder):
            return await self._relay_or_take_over(want, start, end, fill)
        if fill is None:  # another process stored it meanwhile
            stored = await self.stored_body(want.key, start, end)
            if stored is not None:
                return Served(stored, "hit")
            raise HubError(503, "CacheBusy", "the blob changed state while it was being opened; retry",
                           {"Retry-After": "1"})
        try:
            await fill.wait_answered()  # an upstream that cannot give the bytes is an error, not a cut answer
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise _fill_failure(exc, want.what) from None
            # The disk filled between the room check and the spool's reservation: like a blob too big.
            log.warning("store full (%s): serving %s straight from the upstream, uncached", exc, want.what)
            return Served(await self.passthrough(want, start, end), "passthrough")
        except Exception as exc:  # noqa: BLE001
            raise _fill_failure(exc, want.what) from None
        if start > fill.written + FOLLOW_WINDOW:
            if end < want.size and not (fill.ahead and fill.ahead.parallel):
                # Far ahead of a fill that comes in one stream: fetched on its own, unless it holds the blob's
                # last byte, which no answer gives before the whole blob is verified.
                return Served(await self.passthrough(want, start, end), "passthrough")
            if fill.ahead is not None:
                fill.ahead.want(start)  # its part next, before the answer even starts
        return Served(await FillBody.open(fill, start, end, self.settings.serve_chunk_size), "miss")

    async def _room_for(self, size: int) -> bool:
        """Whether the spool's filesystem can take a blob of ``size`` bytes (with a little to spare)."""
        return await asyncio.to_thread(self.spool.free_bytes) >= size + ROOM_MARGIN

    async def _relay_or_take_over(self, want: Wanted, start: int, end: int, holder: Holder) -> Served:
        """Another replica fills this blob: stream its bytes. If it is gone, at the start or midway, this
        replica takes the fill over and the same answer goes on from its own fill."""
        if not holder.url:  # the lease keeps changing hands: pass the bytes through
            return Served(await self.passthrough(want, start, end), "passthrough")
        try:
            relay = await self.passthrough(want, start, end, url=holder.url + PATH + want.key,
                                           headers={HEADER: sign(self.relay_secret, want.key)})
        except HubError as exc:
            if exc.status not in (403, 404, 502, 504):
                raise
            log.warning("fill lease holder %s cannot relay (%s); taking over %s", holder.url, exc.status, want.key)
            return await self._take_over(want, start, end, holder)

        async def body() -> AsyncIterator[bytes]:
            pos = start
            try:
                async for chunk in relay:
                    yield chunk
                    pos += len(chunk)
                return
            except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("relay from %s broke at byte %d (%s); taking over %s", holder.url, pos,
                            exc.__class__.__name__, want.key)
            rest = await self._take_over(want, pos, end, holder)
            async for chunk in rest.body:
                yield chunk

        return Served(body(), "relay")

    async def _take_over(self, want: Wanted, start: int, end: int, dead: Holder) -> Served:
        """Bytes ``[start, end)`` once the replica that held the fill lease is gone: fill here (or relay
        whoever took over first, or read what was stored meanwhile)."""
        fill = await self.fills.start(want.key, want.size, want.source_path, dead_owner=dead.owner)
        if isinstance(fill, Holder) and fill.url and fill.owner != dead.owner:
            return Served(await self.passthrough(want, start, end, url=fill.url + PATH + want.key,
                                                 headers={HEADER: sign(self.relay_secret, want.key)}), "relay")
        if isinstance(fill, Fill):
            return Served(await FillBody.open(fill, start, end, self.settings.serve_chunk_size), "miss")
        if fill is None:
            stored = await self.stored_body(want.key, start, end)
            if stored is not None:
                return Served(stored, "hit")
        return Served(await self.passthrough(want, start, end), "passthrough")

    async def passthrough(self, want: Wanted, start: int, end: int, url: str | None = None,
                          headers: dict[str, str] | None = None) -> AsyncIterator[bytes]:
        """Stream a range straight from the upstream, or from ``url`` (a replica filling it); nothing is stored.

        An answer from the upstream that reaches a blob's last byte is verified like a fill: it is fetched from
        the blob's first byte (those before ``start`` only hashed), and its last byte goes out only if the whole
        blob hashed to its name; otherwise the answer is cut. A replica's relay needs none of this: the
        replica's own fill holds the last byte back."""
        verify = url is None and end == want.size and is_blob_key(want.key)
        first = 0 if verify else start
        whole = first == 0 and end == want.size
        try:
            resp = await self.upstream.open_stream(url or want.source_path, first, None if whole else end - 1,
                                                   headers, direct=url is not None)
        except UpstreamUnavailable as exc:
            raise unavailable_error(exc, want.what) from None
        if resp.status not in (200, 206):
            resp.release()
            if url is not None and resp.status in (403, 404):  # a replica that no longer has it
                raise HubError(resp.status, None, f"the replica at {url} cannot relay {want.what}")
            raise HubError(502, "UpstreamError", f"Upstream answered {resp.status} for {want.what}")
        skip = first if resp.status == 200 else 0
        hasher = _BatchHasher(want.key, want.size) if verify else None
        last = end - 1 if verify else end  # with ``verify``, the last byte waits for the hash

        async def body() -> AsyncIterator[bytes]:
            pos, held = first, b""
            try:
                async for chunk in iter_body(resp, skip):
                    data = chunk[: end - pos]
                    if hasher is not None:
                        await hasher.add(data)
                    low, high = max(pos, start), min(pos + len(data), last)
                    if high > low:
                        yield data[low - pos: high - pos]
                    pos += len(data)
                    if pos >= end:
                        held = data[len(data) - (end - last):]
                        break
                if pos < end:
                    raise OSError("upstream ended the body early")
                if hasher is not None and await hasher.hexdigest() != want.key:
                    # Recorded as a failed fill's (``cache/mismatch.py``): the cut client's resume starts over.
                    self.fills.mismatches.remember(want.key)
                    await self.fills.mismatches.record(want.key)
                    raise OSError(f"the upstream's bytes of {want.what} failed verification")
                if held:
                    yield held
            finally:
                resp.release()

        return body()


class _BatchHasher:
    """The blob hash of a passed-through answer, computed in a worker thread a batch of chunks at a time."""

    def __init__(self, key: str, size: int) -> None:
        self._hasher = BlobHasher(key, size)
        self._batch: list[bytes] = []
        self._held = 0

    async def add(self, data: bytes) -> None:
        self._batch.append(data)
        self._held += len(data)
        if self._held >= HASH_BATCH_BYTES:
            await self._flush()

    async def hexdigest(self) -> str:
        await self._flush()
        return self._hasher.hexdigest()

    async def _flush(self) -> None:
        batch, self._batch, self._held = self._batch, [], 0
        if batch:  # (the end of an answer that ended on a full batch leaves nothing to hand over)
            await asyncio.to_thread(lambda: [self._hasher.update(b) for b in batch])


def _fill_failure(exc: BaseException, what: str) -> HubError:
    """The error answered for a fill that failed before the upstream gave any bytes."""
    cause = exc.__cause__ if isinstance(exc.__cause__, UpstreamUnavailable) else exc
    if isinstance(cause, UpstreamUnavailable):
        return unavailable_error(cause, what)
    return HubError(502, "UpstreamError", f"Upstream error: could not fetch {what}: {exc}")
