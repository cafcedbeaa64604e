"""Parallel parts held in their lanes' buffers until the hash and the readers passed them (``hashfeed.hold_parts``):
loans taken out of order, hashed in order, a batch not held read from the spool file, and the process's budget."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from hubproxy.cache import hashfeed
from hubproxy.cache.filler import _hash_range
from hubproxy.cache.hashfeed import HashFeed
from hubproxy.cache.lanebuffers import HELD_LANE_BUFFERS, LaneBuffers
from hubproxy.memory import ByteBudget
from hubproxy.store.base import BlobHasher

MIB = 1024 * 1024


def _held(limit: int = 64 * MIB, budget: ByteBudget | None = None) -> HashFeed:
    feed = HashFeed(budget=budget or ByteBudget(256 * MIB))
    assert feed.can_hold
    feed.hold_parts(limit)
    return feed


def _hash(feed: HashFeed, path: Path, size: int) -> str:
    """The hash over ``[0, size)`` as the fill's hasher takes it: loans where the feed holds them, else the file."""
    hasher = BlobHasher("ab" * 32, size)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert _hash_range((fd,), hasher, feed, 0, size, size) == size
    finally:
        os.close(fd)
    return hasher.hexdigest()


def test_parts_lent_out_of_order_are_hashed_in_order_from_their_buffers(tmp_path: Path) -> None:
    parts = [os.urandom(1000), os.urandom(1000), os.urandom(777)]
    feed = _held()
    # The file holds zeros where the loans are: a hash that read the file instead of a loan would not match.
    path = tmp_path / "spool"
    path.write_bytes(b"\0" * 2777)
    assert feed.lend(2000, parts[2]) and feed.lend(1000, parts[1]) and feed.lend(0, parts[0])
    assert _hash(feed, path, 2777) == hashlib.sha256(b"".join(parts)).hexdigest()
    reader = feed.reader(0)  # kept after the hash passed them: readers are sent from them too
    lent = reader.borrow(1500)
    assert lent is not None and lent[0] == 1000 and bytes(lent[1]) == parts[1][500:]
    reader.give_back(1000, 2000)
    reader.close()
    feed.release()


def test_a_batch_not_held_is_hashed_from_the_file_between_loans(tmp_path: Path) -> None:
    data = os.urandom(3000)
    path = tmp_path / "spool"
    path.write_bytes(b"\0" * 1000 + data[1000:2000] + b"\0" * 1000)  # only the middle is not lent
    feed = _held()
    assert feed.lend(2000, data[2000:]) and feed.lend(0, data[:1000])
    assert _hash(feed, path, 3000) == hashlib.sha256(data).hexdigest()
    feed.release()


def test_a_loan_behind_the_hash_is_refused() -> None:
    feed = _held()
    assert feed.lend(0, b"x" * 10)
    feed.passed(10)
    assert not feed.lend(5, b"y" * 3)
    feed.release()


def test_held_bytes_are_bounded_by_the_process_budget() -> None:
    budget = ByteBudget(2000)
    one, other = _held(budget=budget), _held(budget=budget)
    assert one.lend(0, b"a" * 1000) and other.lend(0, b"b" * 1000)
    assert not one.lend(1000, b"c" * 10)  # the budget is spent, by two fills together
    other.passed(1000)
    other.reclaim(0)  # hashed, no reader: taken back, its bytes go back to the budget
    assert budget.left == 1000 and one.lend(1000, b"c" * 1000)
    one.release()  # the fill is over: everything it held goes back, and it takes no more
    assert budget.left == 2000 and not one.lend(2000, b"d" * 10)
    assert budget.left == 2000
    assert not HashFeed(budget=ByteBudget(0)).can_hold and not HashFeed().can_hold  # fill_held_mib: 0


def test_a_held_ring_keeps_a_whole_part_before_reusing_a_buffer() -> None:
    feed = _held()
    ring = LaneBuffers(feed, 4096, aligned=True, in_order=lambda: True)
    buffers = []
    for i in range(HELD_LANE_BUFFERS):
        buf = ring.next()
        buffers.append(buf)
        ring.written(i * 4096, buf[:4096], after_written=False)
    assert len({id(b.obj) for b in buffers}) == HELD_LANE_BUFFERS  # none reused while they are lent
    feed.passed(HELD_LANE_BUFFERS * 4096)
    assert ring.next().obj is buffers[0].obj  # the ring is full: the oldest, hashed, is taken back and reused
    assert not feed.holds(0) and feed.reader(0).borrow(0) is None
    ring.close()
    feed.release()


@pytest.mark.parametrize("in_order", [True, False], ids=["in_order", "reordered"])
def test_a_full_held_ring_waits_for_the_hash_only_while_parts_come_in_order(in_order: bool) -> None:
    """In order, the hash is sure to reach the oldest buffer soon: the ring waits for it (a while). Once readers
    pull parts out of order it may not come for long: the buffer is taken back at once, hashed from the file."""
    feed = _held()
    ring = LaneBuffers(feed, 4096, aligned=True, in_order=lambda: in_order)
    for i in range(HELD_LANE_BUFFERS):
        ring.written(i * 4096, ring.next()[:4096], after_written=False)
    taken: list[bool] = []

    def hasher() -> None:  # reaches the oldest loan a little later
        time.sleep(0.05)
        offset, lent = feed.take(0)
        taken.append(lent is not None)
        if lent is not None:
            feed.done()
            time.sleep(0.05)  # (its hash is told a little after it let the buffer go)
            feed.passed(4096)

    thread = threading.Thread(target=hasher)
    thread.start()
    began = time.monotonic()
    ring.next()  # the ring is full: its oldest buffer, unhashed, is wanted again
    waited = time.monotonic() - began
    thread.join()
    assert taken == [in_order]  # hashed from the buffer, or taken back unread first (read from the file)
    assert waited < hashfeed.RECLAIM_WAIT_SECONDS  # woken by the hash passing it, not by the time running out
    ring.close()
    feed.release()


def test_a_reader_holds_up_only_the_loans_in_its_range() -> None:
    """``hf_transfer`` reads a blob as many ranges at once: a reader of one range must not hold the lanes writing
    another (each would wait for it, then let it go)."""
    feed = _held()
    assert feed.lend(100, b"x" * 100)
    feed.passed(200)
    near = feed.reader(0, 100)  # its range ends where the loan starts
    began = time.monotonic()
    feed.reclaim(100)
    assert time.monotonic() - began < hashfeed.RECLAIM_WAIT_SECONDS
    assert near.followed  # still followed: it was never in the way
    near.close()
    feed.release()


def test_a_finished_fill_keeps_only_its_tail_for_readers() -> None:
    """Once the fill is over its held parts go, but for the blob's last bytes (where its readers are): a slow reader
    must not keep hundreds of MiB alive. A loan a reader is sending from goes when it is given back."""
    feed = _held()
    for i in range(10):
        assert feed.lend(i * 1000, bytes([i]) * 1000)
    feed.passed(10_000)
    slow = feed.reader(0)
    lent = slow.borrow(1500)  # the slow reader is sending from the second loan
    assert lent is not None and lent[0] == 1000
    feed.release(keep=3000)
    assert slow.borrow(0) is None and slow.borrow(5500) is None  # gone: read from the file
    tail = slow.borrow(7000)
    assert tail is not None and bytes(tail[1][:1]) == b"\x07"  # the last 3,000 bytes stay
    slow.give_back(7000, 7000)
    other = feed.reader(1000)
    still = other.borrow(1200)
    assert still is not None  # still there: the slow reader sends from it
    other.give_back(still[0], 1200)
    slow.give_back(1000, 2000)
    assert other.borrow(1200) is None  # given back by the last reader sending from it: gone
    slow.close()
    other.close()


def test_a_reader_waiting_for_the_fill_stays_followed_when_a_buffer_ahead_is_taken_back() -> None:
    """A writer that cannot wait longer for a loan lets go only the readers behind the hash (slow ones); a reader
    that has sent all that is hashed waits for the fill itself, and stays followed (it reads only that loan's
    bytes from the file): letting it go sent whole GiBs from the disk."""
    feed = _held()
    assert feed.lend(0, b"a" * 1000) and feed.lend(2000, b"c" * 1000)  # bytes 1000-2000 still coming
    feed.passed(1000)
    waiting, slow = feed.reader(1000), feed.reader(0)
    feed.reclaim(2000, wait=0.05)
    assert waiting.followed and not slow.followed
    assert waiting.borrow(2500) is None  # that loan is gone: those bytes come from the file
    waiting.close()
    feed.release()


def test_a_writer_waits_for_a_hash_that_moves_and_not_for_one_that_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hash slower than the parts arrive is the fill's pace: a writer waits for it to reach its loan, however long
    that takes while it moves (taken back unread, the loan would be read back from the spool); a hash that stopped
    (a part before it still coming) is waited for only ``RECLAIM_WAIT_SECONDS``."""
    monkeypatch.setattr(hashfeed, "RECLAIM_WAIT_SECONDS", 0.1)
    feed = _held()
    for i in range(10):
        assert feed.lend(i * 4096, bytes(4096))

    hashed = [0]

    def slow_hash(upto: int) -> None:  # one loan every 60 ms
        for i in range(upto):
            offset, lent = feed.take(i * 4096)
            assert offset == i * 4096 and lent is not None
            time.sleep(0.06)
            feed.done()
            feed.passed((i + 1) * 4096)
            hashed.append((i + 1) * 4096)

    thread = threading.Thread(target=slow_hash, args=(8,))  # stops before the last two loans
    thread.start()
    began = time.monotonic()
    feed.reclaim(7 * 4096)  # the hash reaches it after ~0.48 s, moving all along
    waited = time.monotonic() - began
    assert hashed[-1] >= 8 * 4096, f"taken back unread after {waited:.2f} s while the hash moved"
    thread.join()
    began = time.monotonic()
    feed.reclaim(9 * 4096)  # the hash stopped at 8 * 4096: taken back unread, after the wait
    waited = time.monotonic() - began
    assert 0.09 <= waited < 0.5 and not feed.holds(9 * 4096)
    feed.release()
