"""Downloading a blob's bytes into its spool file: one stream, or parts fetched by concurrent Range requests.

The first request (the probe) asks for the first part. If the upstream answers 206 and its stream is slower than
``fast_bps`` (a CDN limits each connection), more connections start and each takes the next part not yet taken, so the
bytes from 0 that are all written (the prefix, ``fill.written``) grow steadily and readers get them in order. A stream
faster than that (a nearby upstream, another hubproxy) keeps one connection: then the proxy's own CPU is the limit,
and more streams only cost more of it. If the upstream answers 200 (it ignores Range), that one answer streams the
whole blob and no other request is made. A part cut short resumes with a Range from its last written byte, so each
byte crosses the network about once. Later parts go to the URL the probe was redirected to (a CDN), as Hub clients do;
if that URL stops working they go through the upstream again. Once the probe has shown that the upstream serves
ranges, parts are received by worker threads on blocking connections (``upstream/ranged.py``) straight into batch
buffers, off the event loop, and so is the probe when it goes to the CDN URL the upstream's HEAD just gave (its speed
is then timed over its reads and over the whole stretch: ``probespeed.py``); an answer those connections cannot
take (a redirect, a proxy in the way) sends the fill back to the upstream client. Each part so received (the blob's
one stream after the probe, or each of many parts) is received and written by one thread of its own (``lane.py``)
that only reports its progress to the event loop (one batch costs no hand-offs between threads), and lends each
batch it wrote to the hasher, which follows the prefix (``hashfeed.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import aiohttp

from hubproxy.cache.hashfeed import HashFeed
from hubproxy.cache.lane import DIRECT_BATCH_BYTES, receive_part
from hubproxy.cache.lanebuffers import HELD_LANE_BUFFERS, KEPT_LANE_BUFFERS, LaneBuffers
from hubproxy.cache.partmap import Part, PartMap, plan
from hubproxy.cache.probespeed import StreamTimer
from hubproxy.cache.sharedparts import Wants, write_parts
from hubproxy.direct import route
from hubproxy.observability import metrics
from hubproxy.threads import submit_from_worker
from hubproxy.upstream.client import UpstreamClient, UpstreamUnavailable, iter_body
from hubproxy.upstream.ranged import RangeConnection, RangeFailed

if TYPE_CHECKING:
    from hubproxy.cache.fill import Fill
    from hubproxy.cache.spool import SpoolFile

log = logging.getLogger(__name__)

#: Write to disk in batches of this size, or every FLUSH_INTERVAL seconds (readers see bytes that soon).
FLUSH_BYTES = 4 * 1024 * 1024
FLUSH_INTERVAL = 0.05
#: Longest pause between looks at what other processes following a fill want.
SHARE_INTERVAL = 0.02
#: Threads receiving the parts of parallel fills, one per part being received (``fill_connections`` per
#: fill). Their own pool: a lane blocks on its socket for as long as the upstream is slow, and must neither
#: wait behind nor hold up the disk, hashing and database calls of the default executor. Idle threads stay.
_LANES = ThreadPoolExecutor(max_workers=512, thread_name_prefix="fill-lane")

_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)")


class FillError(Exception):
    """The fill failed; readers must cut their connection."""


class _Retryable(Exception):
    """A transient upstream answer worth another (ranged) attempt."""


class PartedDownload:
    """Fetches every part of one fill, ``connections`` at a time, advancing ``fill.written`` as the prefix grows."""

    def __init__(self, upstream: UpstreamClient, fill: Fill, spool: SpoolFile, retries: int,
                 connections: int, part_bytes: int, fast_bps: float, feed: HashFeed) -> None:
        self.upstream = upstream
        self.fill = fill
        self.spool = spool
        #: Where written batches are lent to the fill's hasher (which must read them, or their lanes wait).
        self.feed = feed
        self.fast_bps = fast_bps
        self.retries = retries
        self.parts = PartMap(plan(fill.written, fill.size, part_bytes, connections, spool.left_ahead), fill.size)
        self.connections = min(connections, len(self.parts))
        #: Set once the probe's answer says whether the upstream serves ranges.
        self._decided = asyncio.Event()
        #: Set when more connections should start (the probe's stream is slow), or nothing is left for them.
        self._widen = asyncio.Event()
        #: The probe's stream was timed: the fill either widened or keeps one stream for the rest.
        self._judged = False
        #: Where parts are requested: the CDN URL the upstream's HEAD of the file just redirected to, if it
        #: did (``upstream/recent.py``), else the upstream; later, the probe's final URL once known.
        self._located = upstream.locations.take(fill.key)
        self.url = self._located or fill.source_path
        #: The probe got a 206: later parts may come on blocking connections read by threads.
        self._ranged = False
        #: The prefix last written into the spool's lock file, and whether that writer should end.
        self._published = fill.written
        self._stopped = False
        #: Other processes following this fill: the offsets they want, and where this one's parts are shown.
        self._wants = Wants(spool.spool.want_path(fill.key))
        self._parts_path = spool.spool.parts_path(fill.key)
        #: Each connection's lane buffers, from part to part, where parallel parts are held (``hashfeed.py``).
        self._rings: dict[RangeConnection, LaneBuffers] = {}

    async def run(self) -> None:
        """Fetch every part; raises ``FillError`` (or a cancellation) and stops the other requests on failure."""
        workers = {asyncio.create_task(self._work(i == 0)) for i in range(self.connections)}
        publisher = asyncio.create_task(self._publish())
        self.fill.ahead = self
        try:
            pending = workers | {publisher}
            while pending - {publisher}:  # the publisher ends only when told to, or if it fails
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # the first failure (of a part, or of the publisher) ends the download
        finally:
            self.fill.ahead = None
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._stopped = True  # told, not cancelled: a write into the lock file is never left running
            self.fill.notify()
            await asyncio.wait([publisher])
            if not publisher.cancelled():
                publisher.exception()  # retrieved (raised above if it came first)

    async def _publish(self) -> None:
        """Write the prefix into the spool's lock file for followers whenever it grew (in a thread: the spool may
        be on NFS), the last one included once told to stop; prefixes that grow while one is written are
        published together. Any value published was a true prefix when it was read. Once another process
        follows, also the parts written beyond the prefix, and take the offsets its readers wait for
        (``sharedparts.py``), looking at least every ``SHARE_INTERVAL`` seconds."""
        shared: tuple[bool, list[tuple[int, int]]] | None = None
        followed, looked = False, 0.0
        while True:
            if self.fill.written > self._published:
                prefix = self.fill.written
                await asyncio.to_thread(self.spool.publish, prefix, followed)
                self._published = prefix
            elif self._stopped:
                return
            if time.monotonic() - looked >= SHARE_INTERVAL:
                looked = time.monotonic()
                followed = followed or await asyncio.to_thread(self._wants.followed)
                if followed:
                    for pos in await asyncio.to_thread(self._wants.new):
                        self.parts.want(pos)
                    now = (self.parallel, self.parts.written_ahead())
                    if now != shared:
                        await asyncio.to_thread(write_parts, self._parts_path, *now)
                        shared = now
            if self.fill.written == self._published and not self._stopped:
                if not followed:  # (one process alone: nothing to look at between changes)
                    await self.fill.changed()
                    continue
                with contextlib.suppress(asyncio.TimeoutError):  # not the builtin one before Python 3.11
                    await asyncio.wait_for(self.fill.changed(), SHARE_INTERVAL)

    async def _work(self, probe: bool) -> None:
        if not probe:
            await self._widen.wait()
        conn = self.upstream.range_connection()
        try:
            while (part := self.parts.take()) is not None:
                await self._fetch(part, conn)
                if probe and not self._widen.is_set() and self.parts.untaken():
                    # The probe's stream was fast: the rest of the blob comes in one more answer.
                    self.parts.join_untaken()
        finally:
            if probe:
                self._widen.set()  # the others start, or see that nothing is left
            if conn is not None:
                self._rings.pop(conn, None)  # (its loans stay for the readers sending from them)
                conn.close()

    async def _fetch(self, part: Part, conn: RangeConnection | None) -> None:
        """Every byte of ``part``, resuming after drops (on ``conn`` when it can take the request)."""
        attempts = 0
        while part.pos < part.end:
            before, tried = part.pos, self.url
            try:
                # The probe too, straight to the CDN URL the upstream's HEAD just gave (nothing to follow).
                probing = not self._decided.is_set() and self.url == self._located is not None
                on_thread = conn is not None and (self._ranged or probing) and \
                    route(self.upstream.absolute(self.url)) is not None
                metrics.FILL_REQUESTS.labels("thread" if on_thread else "event_loop").inc()
                if on_thread:
                    await self._fetch_on(conn, part)  # type: ignore[arg-type]
                else:
                    await self._fetch_once(part)
                # An open-ended answer (one stream for the whole blob) that stops short was cut.
                cut = not on_thread and part.end == self.fill.size and len(self.parts) == 1
                if part.pos < part.end and (part.pos == before or cut):
                    raise FillError(f"upstream ended the body at {part.pos} of {part.end} bytes")
                # A range answered shorter than asked (some servers cap ranges): ask for the rest.
            except (UpstreamUnavailable, aiohttp.ClientError, asyncio.TimeoutError, RangeFailed, _Retryable) as exc:
                if tried == self._located and not self.fill.answered:
                    # The remembered location did not answer with the bytes (expired, unreachable): not the
                    # upstream's failure; ask the upstream as a fill without one would, at once.
                    log.info("fill of %s: the CDN URL the upstream gave failed (%s); asking the upstream", self.fill.key, exc)
                    self.url, self._located = self.fill.source_path, None
                    continue
                attempts += 1
                if isinstance(exc, RangeFailed):  # the upstream client counts its own
                    metrics.UPSTREAM_ERRORS.labels("timeout" if exc.timeout else "unreachable").inc()
                # An upstream that cannot be reached at all gets one more try: a client waits on the first byte.
                unreached = isinstance(exc, UpstreamUnavailable) and not self.fill.answered
                limit = min(self.retries, 1) if unreached else self.retries
                if attempts > limit or getattr(exc, "offline", False):
                    raise FillError(f"upstream failed after {attempts} attempts: {exc}") from exc
                log.info("fill of %s interrupted at byte %d (%s); resuming", self.fill.key, part.pos, exc)
                await asyncio.sleep(min(0.2 * 2 ** (attempts - 1), 2.0))

    async def _fetch_once(self, part: Part) -> None:
        bounded = part.end < self.fill.size or len(self.parts) > 1
        url = self.url
        resp = await self.upstream.open_stream(url, start=part.pos, end=part.end - 1 if bounded else None)
        try:
            skip = 0
            if resp.status == 206:
                m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != part.pos:
                    raise _Retryable(f"unexpected Content-Range {resp.headers.get('Content-Range')!r}")
                if url in (self.fill.source_path, self._located):
                    # Asked through the upstream (the probe, or after a CDN link expired) or where it had just
                    # redirected: later parts go where this answer came from, and may come on blocking connections.
                    if str(resp.url) != self.upstream.absolute(url):
                        self.url = str(resp.url)
                    self._ranged = True
            elif resp.status == 200:
                skip = part.pos  # the whole blob from byte 0: drop what this part does not need
                if not self._decided.is_set():  # the probe: one stream takes the whole blob
                    self.parts.only(part)
            else:
                raise self._refusal(resp.status, url)
            measure = not self._decided.is_set() and len(self.parts) > 1
            self._decided.set()
            self.fill.answered = True
            self.fill.notify()
            await self._receive(resp, part, skip, measure)
        finally:
            if part.pos < part.end or resp.status == 200:
                resp.close()  # a cut or longer-than-needed answer: this connection cannot be reused
            else:
                resp.release()

    def _refusal(self, status: int, url: str) -> Exception:
        """What an answer other than the bytes means for the part: try again, or give up."""
        if status in (408, 429) or status >= 500:
            return _Retryable(f"upstream answered {status}")
        if url != self.fill.source_path:
            self.url = self.fill.source_path  # the CDN link expired: go through the upstream again
            return _Retryable(f"the redirected URL answered {status}")
        return FillError(f"upstream answered {status} for the blob")

    async def _fetch_on(self, conn: RangeConnection, part: Part) -> None:
        """One request for the rest of ``part`` on a blocking connection, its body received by worker threads. The
        request waits for its answer's head in a lane thread too: a CDN slow to answer must not hold the worker
        threads every disk, hash and database call shares (16 parts of each of a few fills would hold them all)."""
        url = self.url
        absolute = self.upstream.absolute(url)
        headers = self.upstream.range_headers(absolute)
        probe = not self._decided.is_set()
        whole = probe and part.pos == 0  # a probe from byte 0 takes the whole file if the Range is ignored
        asking = await submit_from_worker(_LANES, conn.request, absolute, part.pos, part.end - 1, headers, whole)
        status, content_range = await asyncio.wrap_future(asking)
        if status == 200 and whole:
            self.parts.only(part)  # one stream takes the whole blob
        elif status != 206:
            if status == 200 or 300 <= status < 400:  # a redirect, or Range ignored: the upstream client copes
                self._ranged = False
                raise _Retryable(f"a ranged part was answered {status}")
            if status >= 500:
                metrics.UPSTREAM_ERRORS.labels("status_5xx").inc()
            raise self._refusal(status, url)
        elif not (m := _CONTENT_RANGE.fullmatch(content_range)) or int(m.group(1)) != part.pos:
            conn.reset()
            raise _Retryable(f"unexpected Content-Range {content_range!r}")
        if probe:
            self._ranged = status == 206
            self._decided.set()
        self.fill.answered = True
        self.fill.notify()
        await self._receive_lane(conn, part, measure=probe and len(self.parts) > 1)

    async def _receive_lane(self, conn: RangeConnection, part: Part, measure: bool = False) -> None:
        """Receive the answer on ``conn`` into ``part`` in a lane thread (``lane.py``), which tells the event loop
        where the part got to. What arrived before a drop is kept. ``measure``: the probe's answer (``_judge``)."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        timer = StreamTimer(part.end - part.pos, self.fast_bps,
                            lambda *verdict: loop.call_soon_threadsafe(self._judge, *verdict)) if measure else None

        def landed(pos: int) -> None:
            metrics.UPSTREAM_BYTES.inc(pos - part.pos)
            self._advance(part, pos - part.pos)

        # With direct I/O every lane writes past the page cache; one stream keeps its last buffers for the readers,
        # parallel parts (once widened) are held until hashed and sent: no page-cache page is made (``hashfeed.py``).
        direct = self.spool.direct and not self.parallel
        ring = None
        if direct:
            self.feed.keep_for_readers(KEPT_LANE_BUFFERS * DIRECT_BATCH_BYTES)
            self.fill.loans = self.feed
        elif self.spool.direct and self._widen.is_set() and self.feed.can_hold:
            self.feed.hold_parts(self.connections * HELD_LANE_BUFFERS * DIRECT_BATCH_BYTES)
            self.fill.loans = self.feed
            ring = self._rings.setdefault(conn, LaneBuffers(self.feed, DIRECT_BATCH_BYTES, aligned=True,
                                                            in_order=lambda: not self.parts.reordered))
        lane = functools.partial(receive_part, conn, self.spool, self.feed, part.pos, part.end, direct=direct,
                                 unpaged=self.spool.direct and not direct,
                                 landed=lambda pos: loop.call_soon_threadsafe(landed, pos),
                                 prefix_reached=lambda: self.fill.written >= part.start, stop=stop,
                                 max_wait=FLUSH_INTERVAL, timer=timer, ring=ring)
        submitting = asyncio.ensure_future(submit_from_worker(_LANES, lane))
        running: Future[None] | None = None
        try:
            running = await asyncio.shield(submitting)
            await asyncio.wrap_future(running)
        finally:
            if running is None or not running.done():  # failed elsewhere or cancelled: stop the thread, wait
                stop.set()
                conn.close()
                with contextlib.suppress(BaseException):
                    running = running or await submitting
                    await asyncio.wrap_future(running)

    async def _receive(self, resp: aiohttp.ClientResponse, part: Part, skip: int, measure: bool = False) -> None:
        """Write the answer's body into ``part`` in batches; what arrived before a drop is kept. ``measure``: the
        probe's answer, whose speed decides whether more connections start (timed with the writes between)."""
        batch: list[bytes] = []
        held = 0
        last = time.monotonic()
        timer = StreamTimer(part.end - part.pos, self.fast_bps, self._judge) if measure else None
        try:
            async for chunk in iter_body(resp, skip):
                room = part.end - part.pos - held
                if len(chunk) > room:
                    if part.end == self.fill.size:
                        raise FillError("upstream sent more bytes than the blob's size")
                    chunk = chunk[:room]  # an answer longer than asked: keep this part's bytes
                batch.append(chunk)
                held += len(chunk)
                now = time.monotonic()
                if timer is not None:
                    timer.read(len(chunk), None)
                # The blob's first bytes are written at once: a client's first byte comes as soon as it can.
                if (held >= FLUSH_BYTES or now - last >= FLUSH_INTERVAL or held == part.end - part.pos
                        or not self.fill.written):
                    await self._write(part, batch, held)
                    batch, held, last = [], 0, now
                    if part.pos == part.end:
                        break
        finally:
            if held:
                await self._write(part, batch, held)
        if timer is not None:
            timer.read(0, None)  # the answer ended (a probe part shorter than the ramp: judged on all of it)

    def _judge(self, fast: bool, received: int, reading: float, elapsed: float) -> None:
        """Start the other connections if the probe's stream was judged slow (``probespeed.py``)."""
        self._judged = True
        log.debug("fill of %s: probe %d bytes, %.4f s of reads, %.4f s in all: %s", self.fill.key, received, reading,
                  elapsed, "one stream" if fast else "parts")
        if not fast:
            self._widen.set()

    async def _write(self, part: Part, batch: list[bytes], size: int) -> None:
        if part.end > self.fill.paged_end:
            self.fill.paged_end = part.end  # the page warmer makes this part's pages, if it was waiting for this
            self.fill.notify()
        await asyncio.to_thread(self.spool.write_at, batch, part.pos)
        self._advance(part, size)

    def _advance(self, part: Part, size: int) -> None:
        """``size`` more bytes of ``part`` are written: move the prefix if they extend it, and wake its followers
        (and the readers waiting on this part ahead of the prefix)."""
        watched = self.parts.advance(part, size)
        prefix = self.parts.prefix
        if prefix > self.fill.written:
            self.fill.written = prefix
            self.fill.notify()
        elif watched:
            self.fill.notify()

    @property
    def parallel(self) -> bool:
        """Whether parts may still be fetched out of order (several are planned, not one stream for the rest)."""
        return len(self.parts) > 1 and (self._widen.is_set() or not self._judged)

    def extent(self, pos: int) -> int:
        """Where the written bytes that run on from ``pos`` end (for readers ahead of the prefix)."""
        return self.parts.extent(pos)

    def want(self, pos: int) -> None:
        """A reader waits for byte ``pos`` ahead of the prefix: its part is fetched next."""
        self.parts.want(pos)
