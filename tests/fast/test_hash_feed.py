"""Written batches lent to a fill's hasher (``hashfeed.py``): which loans are taken, that a buffer is never
changed while the hasher reads it, that a loan taken back unread is hashed from the spool, and that the
lanes' buffers stay few."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from hubproxy.cache import filler, hashfeed
from hubproxy.cache.filler import _hash_range
from hubproxy.cache.hashfeed import HashFeed
from hubproxy.cache.lanebuffers import LANE_BUFFERS, LaneBuffers
from hubproxy.store.base import BlobHasher

MIB = 1024 * 1024


def test_loans_are_taken_only_in_order_unless_every_byte_before_them_is_written() -> None:
    feed = HashFeed()
    assert feed.lend(0, b"a" * 10)
    assert not feed.lend(20, b"b" * 10)  # a gap nobody promised to fill: the hasher could wait on it forever
    assert feed.lend(10, b"c" * 10)  # continues the last loan
    assert feed.lend(30, b"d" * 10, after_written=True)  # bytes 20-30 are written: read from the spool
    assert not feed.lend(25, b"e" * 10, after_written=True)  # behind what is lent already
    assert not feed.lend(40, b"")
    assert [feed.holds(o) for o in (0, 10, 20, 30)] == [True, True, False, True]


def test_the_feed_lends_no_more_than_its_limit() -> None:
    feed = HashFeed(limit=25)
    assert feed.lend(0, b"x" * 10) and feed.lend(10, b"x" * 10)
    assert not feed.lend(20, b"x" * 10)
    feed.passed(10)  # the hasher read the first loan: room again
    assert not feed.holds(0)
    assert feed.lend(20, b"x" * 10)


def test_take_gives_the_loan_holding_a_position_or_where_the_next_starts() -> None:
    feed = HashFeed()
    feed.lend(0, b"0123456789")
    feed.lend(20, b"abcdefghij", after_written=True)
    offset, view = feed.take(4)
    assert offset == 0 and view is not None and bytes(view) == b"456789"
    feed.done()
    feed.passed(10)
    assert feed.take(12) == (20, None)  # bytes 10-20 come from the spool
    feed.passed(20)
    offset, view = feed.take(25)
    assert offset == 20 and view is not None and bytes(view) == b"fghij"
    feed.done()
    feed.passed(30)
    assert feed.take(30) == (-1, None)


def test_a_buffer_is_not_taken_back_while_the_hasher_reads_it() -> None:
    feed = HashFeed()
    feed.lend(0, bytearray(8))
    feed.take(0)  # the hasher is reading it
    back = threading.Event()
    writer = threading.Thread(target=lambda: (feed.reclaim(0, wait=0.0), back.set()))
    writer.start()
    time.sleep(0.2)
    assert not back.is_set()  # no deadline ends a read in progress
    feed.done()
    feed.passed(8)
    writer.join(5)
    assert back.is_set() and not feed.holds(0)


def test_a_loan_left_unread_is_taken_back_after_the_wait_and_hashed_from_the_spool(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)
    spool = tmp_path / "blob.part"
    spool.write_bytes(data)
    feed = HashFeed()
    lent = bytearray(data[MIB:2 * MIB])
    assert feed.lend(MIB, lent, after_written=True)
    started = time.monotonic()
    feed.reclaim(MIB, wait=0.1)
    assert 0.1 <= time.monotonic() - started < 2 and not feed.holds(MIB)
    lent[:] = bytes(MIB)  # the writer reuses its buffer: the hash must not see it
    assert _hashed(spool, feed, len(data)) == hashlib.sha256(data).hexdigest()


def test_the_hash_reads_loans_where_it_has_them_and_the_spool_between(tmp_path: Path) -> None:
    """Loans hold what was written at their offsets; to show which source the hash read, the spool here holds
    other bytes where loans are, and the digest is that of the loans' bytes."""
    data = os.urandom(4 * MIB)
    spool = tmp_path / "blob.part"
    on_disk = bytearray(data)
    on_disk[0:MIB] = bytes(MIB)
    on_disk[2 * MIB:3 * MIB] = bytes(MIB)
    spool.write_bytes(on_disk)
    feed = HashFeed()
    assert feed.lend(0, data[:MIB])
    assert feed.lend(2 * MIB, data[2 * MIB:3 * MIB], after_written=True)
    assert _hashed(spool, feed, len(data)) == hashlib.sha256(data).hexdigest()
    assert not feed.holds(0) and not feed.holds(2 * MIB)  # read, and given back


def _hashed(path: Path, feed: HashFeed, size: int, step: int = 3 * MIB // 2) -> str:
    """The digest ``_hash_range`` gives over ``[0, size)`` in calls of ``step`` bytes (as the prefix grows)."""
    hasher = BlobHasher("ab" * 32, size)
    pos = 0
    while pos < size:
        fd = os.open(path, os.O_RDONLY)
        pos = _hash_range((fd,), hasher, feed, pos, min(size, pos + step), size)
        os.close(fd)
    return hasher.hexdigest()


def test_a_lane_keeps_few_buffers_and_never_reuses_one_the_hasher_has_not_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashfeed, "RECLAIM_WAIT_SECONDS", 0.05)
    feed = HashFeed()
    ring = LaneBuffers(feed, 16)
    seen = []
    for i in range(LANE_BUFFERS):  # nobody reads: every batch stays lent, and each needs a new buffer
        buf = ring.next()
        buf[:] = bytes([i]) * 16
        ring.written(16 * i, memoryview(buf), after_written=False)
        seen.append(id(buf))
    assert len(set(seen)) == LANE_BUFFERS
    assert all(feed.holds(16 * i) for i in range(LANE_BUFFERS))
    started = time.monotonic()
    reused = ring.next()  # no more buffers: the oldest, once taken back (it is then hashed from the spool)
    assert id(reused) == seen[0] and time.monotonic() - started >= 0.05 and not feed.holds(0)
    reused[:] = b"z" * 16
    ring.written(16 * LANE_BUFFERS, memoryview(reused), after_written=False)
    _, view = feed.take(16)
    assert view is not None and bytes(view) == bytes([1]) * 16  # the other loans are untouched
    feed.done()


def test_a_lane_whose_batches_the_hasher_reads_reuses_one_buffer() -> None:
    feed = HashFeed()
    ring = LaneBuffers(feed, 16)
    seen = set()
    for i in range(20):
        buf = ring.next()
        seen.add(id(buf))
        ring.written(16 * i, memoryview(buf), after_written=False)
        offset, view = feed.take(16 * i)
        assert offset == 16 * i and view is not None
        feed.done()
        feed.passed(16 * (i + 1))
    assert len(seen) <= 2


def test_the_hash_goes_on_through_loans_past_the_prefix_it_was_asked_for(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Loans are written bytes: the hash need not wait for the event loop to learn that the prefix grew. A call
    that hashed a loan waits briefly for the next (a writer lends one while it waits), and not at the blob's
    end."""
    monkeypatch.setattr(filler, "LOAN_LINGER_SECONDS", 2.0)
    data = os.urandom(4 * MIB)
    spool = tmp_path / "blob.part"
    spool.write_bytes(data)
    feed = HashFeed()
    feed.lend(0, data[:MIB])
    feed.lend(MIB, data[MIB:2 * MIB])
    hasher = BlobHasher("ab" * 32, len(data))
    later = threading.Timer(0.05, lambda: feed.lend(2 * MIB, data[2 * MIB:3 * MIB]))
    later.start()
    fd = os.open(spool, os.O_RDONLY)
    try:
        assert _hash_range((fd,), hasher, feed, 0, MIB // 2, len(data)) == 3 * MIB  # asked for half a MiB
        started = time.monotonic()
        assert feed.lend(3 * MIB, data[3 * MIB:])
        assert _hash_range((fd,), hasher, feed, 3 * MIB, 3 * MIB + 1, len(data)) == len(data)
        assert time.monotonic() - started < 1.0  # nothing to wait for at the end
    finally:
        os.close(fd)
        later.join()
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
