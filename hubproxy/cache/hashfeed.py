"""Bytes a fill has just written, lent to its prefix hasher while they are still in the CPU's caches.

A fill's hash follows the written prefix (``filler.py``) and used to read every byte back from the spool
file's pages, by then long out of the caches: on the Intel VM of the benchmarks sha256 ran at 1.12 GiB/s over
memory the cache no longer held and at 1.7 GiB/s over a buffer that it did, and the hash is the one stage of
a fill that cannot be split across cores. So whoever writes a batch into the spool lends the batch to the
feed, and the hasher takes what it needs from there before it reads the spool. In a standalone prototype of a
fill (receive 1 GiB from a local socket, write it, hash it), lending cut the time from 1.24-1.37 s to
1.00-1.18 s and the CPU from 2.2 to 1.7-1.9 core-seconds.

A loan is accepted where it continues what is hashed or already lent, or where every byte before it is
written (the one stream after a probe's part that was not lent; a parallel part the prefix has reached), so
the loans are in order and the hasher meets each in turn without waiting for any other writer. A writer that
reuses its buffer takes the loan back first (``reclaim``): that waits while the hasher reads it, and for a
while for the hasher to reach it; a loan taken back unread is hashed from the spool, so nothing depends on the
hasher keeping up. The feed holds at most ``LENT_BYTES_LIMIT`` bytes.

What gains: one stream (a fast upstream), whose batches arrive in the blob's order. A parallel fill's parts
arrive side by side, and by the time the prefix reaches a part most of it was written long before: where they are
not held (below), those bytes are hashed from the spool. A probe received on the event loop (through the upstream
client) is not lent either; one received by a lane (to a known CDN URL) is.

Where the one stream's spool file is written with direct I/O (``spool.py``), its bytes never enter the page cache,
and the feed keeps its loans after the hash passed them (``keep_for_readers``), until their writer reuses the
buffer: the fill's readers send from them (``borrow``) instead of reading the bytes back from the disk. A loan a
reader borrowed is not taken back until the reader gives it back (a send step, a fraction of a second).

Where a parallel fill's parts are written with direct I/O, the feed holds them too (``hold_parts``): it takes a
loan anywhere ahead of the hash, keeps it for readers like one stream's, and its writer's ring grows to a whole
part before it waits for the hash to pass its oldest buffer. The hash and the readers then never read the parts
back from the spool's pages, which a VM makes dearly on first touch. Held bytes are bounded per fill and, over
all the fills of the process, by a budget (``fill_held_mib``, ``memory.ByteBudget``).
"""

from __future__ import annotations

import bisect
import collections
import threading
import time

from hubproxy.memory import ByteBudget

#: Most bytes lent at once (a writer that finds the feed full keeps its batch; it is hashed from the spool).
LENT_BYTES_LIMIT = 16 * 1024 * 1024
#: Longest a writer waits to take a loan back (for the hasher, and for readers behind it), and at least that long
#: after the hash's last step forward while the hash has not passed the loan: a hash that moves, however slowly, is
#: the fill's pace, and waiting for it costs no time and saves reading the bytes back.
RECLAIM_WAIT_SECONDS = 0.25
#: Bytes of loans a fill keeps for its readers once it is over (``release``): the blob's tail, where its readers
#: are (one fast stream's whole ring); the rest go once no reader sends from them, so that a slow reader does not
#: keep a held fill's hundreds of MiB alive (it reads the spool file or the store).
KEPT_AFTER_FILL_BYTES = 32 * 1024 * 1024


class HashFeed:
    """Loans of written bytes, by offset, from the fill's writers to its hasher (and, kept, to its readers)."""

    def __init__(self, start: int = 0, limit: int = LENT_BYTES_LIMIT, budget: ByteBudget | None = None) -> None:
        #: The hasher waits on it for a loan; each writer taking a loan back waits on a condition of its own
        #: (``_reclaiming``), woken only by what concerns that loan: a held fill's sixteen writers woken by every
        #: change cost 11,600 wake-ups per GiB.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        #: offset -> (the end of that loan, the condition its writer waits on to take it back).
        self._reclaiming: dict[int, tuple[int, threading.Condition]] = {}
        #: offset -> the bytes written there, and their offsets in order (loans never overlap).
        self._loans: dict[int, memoryview] = {}
        self._offsets: list[int] = []
        #: Where the next loan must start: the end of the last loan, or where the hash got to.
        self._next = start
        #: Where the hash got to.
        self._hashed = start
        #: When the hash last moved forward (a writer waiting for it waits while it moves).
        self._hashed_at = time.monotonic()
        self._lent = 0
        #: The offset of the loan being hashed now (its buffer must not change meanwhile).
        self._busy: int | None = None
        #: offset -> how many readers are sending from that loan now.
        self._borrowed: collections.Counter[int] = collections.Counter()
        #: Readers following the loans, and the next byte each sends: a loan they have not sent yet is taken back
        #: only after ``RECLAIM_WAIT_SECONDS`` (then they are let go, and read the file).
        self._readers: dict[FeedReader, int] = {}
        #: Bytes before this were lent and taken back: a reader starting before it is not followed.
        self._floor = 0
        self.limit = limit
        #: Loans the hash passed stay until their writer takes them back (``keep_for_readers``).
        self.keep = False
        #: Loans are taken anywhere ahead of the hash, not only where they continue it (``hold_parts``).
        self.ahead = False
        #: The process's bytes of held parts (``fill_held_mib``; none: parts are never held), and the offsets of
        #: the loans counted against it.
        self.budget = budget
        self._held: set[int] = set()
        #: Once the fill is over, loans starting before this go as soon as no reader sends from them.
        self._keep_from = 0

    def keep_for_readers(self, limit: int) -> None:
        """Keep loans after they are hashed, for readers to ``borrow``, up to ``limit`` bytes lent."""
        with self._cond:
            self.keep = True
            self.limit = max(self.limit, limit)

    def hold_parts(self, limit: int) -> None:
        """Take loans anywhere ahead of the hash (parallel parts, written side by side) and keep them for readers
        after it passed them, up to ``limit`` bytes lent: the hash and the readers meet each part's bytes in its
        writer's buffers, and the spool file's pages are never made (see the module's docstring)."""
        self.keep_for_readers(limit)
        with self._cond:
            self.ahead = True

    @property
    def can_hold(self) -> bool:
        """Whether the process lets fills hold parts at all (``fill_held_mib`` is not 0)."""
        return self.budget is not None and self.budget.total > 0

    def lend(self, offset: int, data: bytes | bytearray | memoryview, after_written: bool = False) -> bool:
        """Lend ``data``, just written at ``offset``; True if the feed took it (the writer must then ``reclaim``
        it before changing the buffer). It is taken where it continues the last loan or the hash, or, if
        ``after_written`` (every byte before ``offset`` is written: the hasher reaches it without waiting for
        another writer), anywhere beyond them."""
        view = memoryview(data).cast("B")
        with self._cond:
            if not len(view) or self._lent + len(view) > self.limit:
                return False
            if self.ahead:
                if offset < self._hashed or self.budget is None or not self.budget.take(len(view)):
                    return False
                self._held.add(offset)
            elif offset != self._next and not (after_written and offset > self._next):
                return False
            self._loans[offset] = view
            bisect.insort(self._offsets, offset)
            self._next = max(self._next, offset + len(view))
            self._lent += len(view)
            self._cond.notify_all()
            return True

    def holds(self, offset: int) -> bool:
        """Whether the loan made at ``offset`` is still lent and the hasher has not read all of it."""
        with self._cond:
            return offset in self._loans and offset + len(self._loans[offset]) > self._hashed

    def reclaim(self, offset: int, wait: float | None = None) -> None:
        """Take back the loan made at ``offset``, if the feed still holds it: after the hasher is done with it, or
        unread (it is then hashed from the spool) after ``wait`` seconds, or by default once the hash has not moved
        for ``RECLAIM_WAIT_SECONDS`` (readers behind it are waited for until the same deadline); never while the
        hasher or a reader reads it."""
        deadline = time.monotonic() + (RECLAIM_WAIT_SECONDS if wait is None else wait)
        with self._cond:
            waiting: threading.Condition | None = None  # (made only if this writer has to wait)
            try:
                while offset in self._loans:
                    end = offset + len(self._loans[offset])
                    reading = self._busy == offset or self._borrowed[offset] > 0
                    behind = [reader for reader, pos in self._readers.items() if pos < end and reader.end > offset]
                    if wait is None and end > self._hashed:  # while the hash moves, this loan's turn is coming
                        deadline = max(deadline, self._hashed_at + RECLAIM_WAIT_SECONDS)
                    left = deadline - time.monotonic()
                    if not reading and ((end <= self._hashed and not behind) or left <= 0):
                        # Too slow to follow (behind what is hashed): they read the file from here on. One that
                        # waits for the fill itself (a part before this loan still coming) stays followed; it
                        # reads this loan's bytes from the file.
                        slow = [reader for reader in behind if self._readers[reader] < self._hashed]
                        for reader in slow:
                            del self._readers[reader]
                        if slow:  # (other writers may have been waiting for them too)
                            self._wake(upto=1 << 63)
                        self._drop(offset)
                        self._floor = max(self._floor, end)
                        return
                    waiting = waiting or threading.Condition(self._lock)
                    self._reclaiming[offset] = (end, waiting)
                    waiting.wait(None if reading else left)
            finally:
                self._reclaiming.pop(offset, None)

    def take(self, pos: int, wait: float = 0.0) -> tuple[int, memoryview | None]:
        """For the hasher at ``pos``: ``(offset, bytes from pos)`` of the loan holding ``pos`` (it is then busy until
        ``done``), or ``(where the next loan starts, None)``, ``(-1, None)`` if there is none after waiting up to
        ``wait`` seconds for one."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                if not self.keep:
                    self._forget_before(pos)
                first = self._find(pos)
                if 0 <= first <= pos:
                    self._busy = first
                    return first, self._loans[first][pos - first:]
                left = deadline - time.monotonic()
                if first >= 0 or left <= 0:
                    return first, None
                self._cond.wait(left)

    def done(self) -> None:
        """The hasher finished reading the loan ``take`` gave it (what it hashed is told by ``passed``)."""
        with self._cond:
            busy, self._busy = self._busy, None
            self._wake(offset=busy)

    def passed(self, pos: int) -> None:
        """The hash covers every byte before ``pos``: loans ending there are done, and the next may start at ``pos``."""
        with self._cond:
            if pos > self._hashed:
                self._hashed, self._hashed_at = pos, time.monotonic()
            if not self.keep:
                self._forget_before(pos)
            self._next = max(self._next, pos)
            self._wake(upto=pos)

    def reader(self, pos: int, end: int | None = None) -> FeedReader:
        """A reader of the fill's bytes ``[pos, end)`` (``end`` None: to the blob's end): followed (writers wait
        for it a while before reusing a buffer in its range that it has not sent) if ``pos`` is not before the
        loans already taken back."""
        reader = FeedReader(self, end)
        with self._cond:
            if pos >= self._floor:
                self._readers[reader] = pos
        return reader

    def _borrow(self, pos: int) -> tuple[int, memoryview] | None:
        with self._cond:
            first = self._find(pos)
            if not 0 <= first <= pos:
                return None
            self._borrowed[first] += 1
            return first, self._loans[first][pos - first:]

    def _give_back(self, offset: int | None, reader: FeedReader, reached: int) -> None:
        with self._cond:
            if offset is not None:
                self._borrowed[offset] -= 1
                if self._borrowed[offset] <= 0:
                    del self._borrowed[offset]
                    if offset < self._keep_from and offset in self._loans:  # (the fill is over)
                        self._drop(offset)
            if reader in self._readers:
                self._readers[reader] = reached
            self._wake(offset=offset, upto=reached)

    def _let_go(self, reader: FeedReader) -> None:
        with self._cond:
            self._readers.pop(reader, None)
            self._wake(upto=1 << 63)

    def _wake(self, offset: int | None = None, upto: int = -1) -> None:
        """(Holding the lock.) Wake the writers taking back the loan at ``offset`` or loans ending by ``upto``."""
        for start, (end, waiting) in self._reclaiming.items():
            if start == offset or end <= upto:
                waiting.notify()

    def _find(self, pos: int) -> int:
        """The offset of the loan holding ``pos``, else where the first loan after it starts, else -1."""
        i = bisect.bisect_right(self._offsets, pos) - 1
        if i >= 0 and self._offsets[i] + len(self._loans[self._offsets[i]]) > pos:
            return self._offsets[i]
        return self._offsets[i + 1] if i + 1 < len(self._offsets) else -1

    def _forget_before(self, pos: int) -> None:
        while self._offsets:
            first = self._offsets[0]
            if first + len(self._loans[first]) > pos:
                return
            self._drop(first)

    def release(self, keep: int = KEPT_AFTER_FILL_BYTES) -> None:
        """The fill is over: take no more loans, drop all but the last ``keep`` bytes of them (a loan a reader sends
        from goes once it is given back), and give what its loans held back to the process's budget."""
        with self._cond:
            self.limit = 0
            kept = 0
            for offset in reversed(self._offsets):
                kept += len(self._loans[offset])
                if kept > keep:
                    self._keep_from = offset + len(self._loans[offset])
                    break
            for offset in [o for o in self._offsets if o < self._keep_from]:
                if not self._borrowed[offset] and self._busy != offset:
                    self._drop(offset)
            for offset in self._held:
                self.budget.give(len(self._loans[offset]))  # type: ignore[union-attr] - held only with a budget
            self._held.clear()

    def _drop(self, offset: int) -> None:
        size = len(self._loans.pop(offset))
        self._lent -= size
        del self._offsets[bisect.bisect_left(self._offsets, offset)]
        if offset in self._held:
            self._held.discard(offset)
            self.budget.give(size)  # type: ignore[union-attr]
        self._wake(offset=offset)


class FeedReader:
    """One reader's view of a feed's kept loans (``store.bodies.LoanReader``)."""

    __slots__ = ("end", "feed")

    def __init__(self, feed: HashFeed, end: int | None = None) -> None:
        self.feed = feed
        #: Where the reader's range ends: loans from there on are none of its business.
        self.end = end if end is not None else 1 << 63

    def borrow(self, pos: int) -> tuple[int, memoryview] | None:
        """``(offset, bytes from pos)`` of the loan holding ``pos``, kept until ``give_back(offset, ...)``; None
        if no loan holds it (read it from the spool)."""
        return self.feed._borrow(pos)

    def give_back(self, offset: int, reached: int) -> None:
        """Done with the loan ``borrow`` gave; the reader's next byte is ``reached``."""
        self.feed._give_back(offset, self, reached)

    def reached(self, pos: int) -> None:
        """The reader's next byte is ``pos`` (it sent bytes from the file)."""
        self.feed._give_back(None, self, pos)

    @property
    def followed(self) -> bool:
        """Whether writers still keep the loans this reader has not passed (it was not let go, nor closed)."""
        return self in self.feed._readers

    def close(self) -> None:
        """The reader is done: writers wait for it no more."""
        self.feed._let_go(self)
