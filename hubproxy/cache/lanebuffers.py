"""A fill writer's batch buffers (``LaneBuffers``): the one it receives into, and those it lent to the fill's hasher
(``hashfeed.py``) until the hasher, and where loans are kept, the fill's readers, are done with them."""

from __future__ import annotations

import collections
import mmap
from collections.abc import Callable

from hubproxy.cache.hashfeed import HashFeed

#: Most batch buffers one writer (a part's thread) keeps: the batches lent and the one being received. In a
#: prototype of a fill (1 MiB batches), 3 buffers gave 1.26-1.38 s per GiB, 4 gave 1.15-1.18 s, 6 gave 1.00-1.09 s
#: and 10 gave 1.03-1.05 s: the writer must be able to run a few batches ahead of the hasher.
LANE_BUFFERS = 6
#: Most buffers of a writer whose loans are kept for readers (``lane.DIRECT_BATCH_BYTES`` each, 32 MiB): the bytes
#: it wrote last, which the fill's readers, a few batches behind it, are sent from.
KEPT_LANE_BUFFERS = 8
#: Most buffers of a writer of parallel parts whose loans are held (``HashFeed.hold_parts``;
#: ``lane.DIRECT_BATCH_BYTES`` each, 16 MiB): one part, while the parts before it come.
HELD_LANE_BUFFERS = 4
#: Alignment of direct I/O (``O_DIRECT``): buffers, offsets and lengths in multiples of it.
ALIGN = 4096


class LaneBuffers:
    """The batch buffers of one part's thread: the one receiving, and those lent to the hasher until it has read
    them (``hashfeed.py``). A new buffer is made only while the oldest loan is unread, up to ``LANE_BUFFERS``;
    then the thread waits for the hasher to read it (or takes it back unread after a while). Where the feed keeps
    loans for readers, the ring grows to ``KEPT_LANE_BUFFERS`` and reuses the oldest only then.

    ``aligned``: page-aligned buffers one ``ALIGN`` longer than ``size``, for direct I/O (a batch written at
    ``offset`` is received at ``offset % ALIGN`` into its buffer, so its whole pages lie at aligned addresses)."""

    def __init__(self, feed: HashFeed, size: int, aligned: bool = False,
                 wait_written: Callable[[int], None] | None = None,
                 in_order: Callable[[], bool] | None = None) -> None:
        self.feed = feed
        self.size = size
        self.aligned = aligned
        #: Blocks until every byte before the given offset is in the file (batches written by another thread).
        self.wait_written = wait_written
        #: A held part's ring (``hold_parts``): whether parts are still fetched in the blob's order, so that the
        #: hash is sure to reach the oldest buffer soon and is worth a wait.
        self.in_order = in_order
        self.most = HELD_LANE_BUFFERS if in_order else KEPT_LANE_BUFFERS if feed.keep else LANE_BUFFERS
        #: Used buffers, oldest first, each with the offset of its loan (None: not lent) and its batch's end.
        self._ring: collections.deque[tuple[memoryview, int | None, int]] = collections.deque()
        self._current = memoryview(bytearray(0))

    def next(self) -> memoryview:
        """The buffer to receive the next batch into."""
        if self._ring:
            buf, loan, end = self._ring[0]
            unread = loan is not None and (self.feed.keep or self.feed.holds(loan))
            if not unread or len(self._ring) >= self.most:
                self._ring.popleft()
                if self.wait_written is not None:
                    self.wait_written(end)
                if loan is not None:  # at once if the hasher has read it and no reader sends from it; a held
                    # part's loan the hasher has not reached is not waited for once readers pull parts out of order
                    unreached = self.in_order is not None and not self.in_order() and self.feed.holds(loan)
                    self.feed.reclaim(loan, wait=0.0 if unreached else None)
                self._current = buf
                return buf
        # An anonymous mapping starts on a page boundary. Its pages are made now (``MAP_POPULATE``), not by the
        # first receive into each: the probe's stream is timed over its first reads, and on a VM whose host takes
        # back free memory, faulting new pages in took longer than receiving the bytes (a fast stream judged slow).
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
        self._current = memoryview(mmap.mmap(-1, self.size + (ALIGN if self.aligned else 0), flags=flags))
        return self._current

    def close(self) -> None:
        """The lane stopped short (a drop): take its loans back now, read or not (unread ones are hashed from the
        spool, and readers not past them are sent them from the file), so that the lane resuming the part
        finds room in the feed."""
        while self._ring:
            _, loan, _ = self._ring.popleft()
            if loan is not None:
                self.feed.reclaim(loan, wait=0)

    def finish(self) -> None:
        """The lane received its whole part: take its loans back once the hasher has read them (each waits as
        ``reclaim`` does). Left lent, they would hold room in the feed for good once a later lane's loans are kept
        for readers (the probe's part, before the one fast stream that follows it)."""
        while self._ring:
            _, loan, _ = self._ring.popleft()
            if loan is not None:
                self.feed.reclaim(loan)

    def written(self, offset: int, batch: memoryview, after_written: bool) -> None:
        """``batch``, received into the buffer ``next`` gave last, is written at ``offset``: lend it to the hasher
        (``after_written``: every byte before it is written)."""
        lent = self.feed.lend(offset, batch, after_written)
        self._ring.append((self._current, offset if lent else None, offset + len(batch)))
