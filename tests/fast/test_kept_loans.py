"""A fast stream written past the page cache: its loans kept for the fill's readers (``hashfeed.py``), its whole
pages written with direct I/O (``spool.py``) by a thread of their own (``spoolwriter.py``)."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import mmap
import os
import threading
import time
from pathlib import Path

import pytest

from hubproxy.cache.fill import Fill
from hubproxy.cache.fillbody import FillBody
from hubproxy.cache.hashfeed import HashFeed
from hubproxy.cache.lanebuffers import ALIGN, KEPT_LANE_BUFFERS, LaneBuffers
from hubproxy.cache.spool import Spool
from hubproxy.cache.spoolwriter import SpoolWriter

MIB = 1024 * 1024
KEY = "ab" * 32


def _kept() -> HashFeed:
    feed = HashFeed()
    feed.keep_for_readers(64 * MIB)
    return feed


def test_kept_loans_stay_after_the_hash_passed_them_until_their_writer_takes_them_back() -> None:
    feed = _kept()
    assert feed.lend(0, b"0123456789") and feed.lend(10, b"abcdefghij")
    feed.passed(20)  # hashed
    assert not feed.holds(0)  # nothing left for the hasher: the writer may reuse the buffer at once
    reader = feed.reader(0)
    lent = reader.borrow(3)
    assert lent is not None and lent[0] == 0 and bytes(lent[1]) == b"3456789"
    reader.give_back(0, 10)
    feed.reclaim(0)  # the reader passed it: taken back at once
    assert reader.borrow(5) is None  # gone: the reader reads the file
    lent = reader.borrow(12)
    assert lent is not None and bytes(lent[1]) == b"cdefghij"
    reader.give_back(10, 20)
    reader.close()


def test_without_keeping_a_hashed_loan_is_gone_for_readers() -> None:
    feed = HashFeed()
    feed.lend(0, b"0123456789")
    feed.passed(10)
    assert feed.reader(0).borrow(2) is None


def test_a_borrowed_loan_is_not_taken_back_until_it_is_given_back() -> None:
    feed = _kept()
    feed.lend(0, b"x" * 10)
    feed.passed(10)
    reader = feed.reader(0)
    lent = reader.borrow(0)
    assert lent is not None
    taken = threading.Event()
    waiter = threading.Thread(target=lambda: (feed.reclaim(0, wait=0.01), taken.set()))
    waiter.start()
    time.sleep(0.2)  # far past the wait: a buffer being sent from is never reused
    assert not taken.is_set()
    reader.give_back(0, 10)
    waiter.join(5)
    assert taken.is_set()


def test_a_reader_behind_is_waited_for_a_while_then_let_go() -> None:
    feed = _kept()
    feed.lend(0, b"x" * 10)
    feed.lend(10, b"y" * 10)
    feed.passed(20)
    reader = feed.reader(0)  # has sent nothing yet
    started = time.monotonic()
    feed.reclaim(0, wait=0.2)
    assert time.monotonic() - started >= 0.2  # waited for the reader
    started = time.monotonic()
    feed.reclaim(10, wait=5)
    assert time.monotonic() - started < 1  # it was let go: nobody is waited for any more
    reader.close()


def test_a_reader_keeping_up_is_waited_for_until_it_passes() -> None:
    feed = _kept()
    feed.lend(0, b"x" * 10)
    feed.passed(10)
    reader = feed.reader(0)
    threading.Timer(0.1, lambda: reader.reached(10)).start()
    started = time.monotonic()
    feed.reclaim(0, wait=5)
    assert 0.05 < time.monotonic() - started < 2


def test_a_reader_starting_before_the_loans_taken_back_is_not_followed() -> None:
    feed = _kept()
    feed.lend(0, b"x" * 10)
    feed.lend(10, b"y" * 10)
    feed.passed(20)
    feed.reclaim(0, wait=0)
    late = feed.reader(0)  # bytes 0-10 are only in the file now
    started = time.monotonic()
    feed.reclaim(10, wait=5)
    assert time.monotonic() - started < 1
    late.close()


def test_a_kept_ring_grows_to_its_size_before_reusing_a_buffer_and_its_buffers_are_aligned() -> None:
    feed = _kept()
    ring = LaneBuffers(feed, 4096, aligned=True)
    buffers = []
    for i in range(KEPT_LANE_BUFFERS + 1):
        buf = ring.next()
        buffers.append(buf)
        assert len(buf) == 4096 + ALIGN
        assert ctypes.addressof(ctypes.c_char.from_buffer(buf)) % ALIGN == 0
        ring.written(i * 4096, buf[:4096], after_written=False)
        feed.passed((i + 1) * 4096)
    assert len({id(b.obj) for b in buffers[:KEPT_LANE_BUFFERS]}) == KEPT_LANE_BUFFERS
    assert buffers[KEPT_LANE_BUFFERS].obj is buffers[0].obj  # the oldest, once the ring is full


def _aligned(size: int) -> memoryview:
    return memoryview(mmap.mmap(-1, size + ALIGN))


@pytest.mark.parametrize("offset,length", [(0, 3 * ALIGN), (100, 3 * ALIGN), (ALIGN - 1, 2), (5000, 9000),
                                           (0, 10), (ALIGN, 1 << 20)])
def test_a_direct_write_puts_every_byte_where_it_belongs(tmp_path: Path, offset: int, length: int) -> None:
    spool = Spool(tmp_path, direct_writes=True)
    file = spool.begin(KEY)
    assert file is not None
    data = os.urandom(length)
    buf = _aligned(length)
    skew = offset % ALIGN
    buf[skew:skew + length] = data
    before = os.urandom(offset)
    file.write_at([before], 0)
    direct = file.direct
    file.write_aligned(buf[skew:skew + length], offset)
    assert file.direct == direct  # an aligned buffer never needs the page-cache fallback
    file.close()
    assert Path(file.path).read_bytes() == before + data
    file.finish()


def test_a_direct_write_the_filesystem_refuses_goes_through_the_page_cache(tmp_path: Path) -> None:
    spool = Spool(tmp_path, direct_writes=True)
    file = spool.begin(KEY)
    assert file is not None
    if not file.direct:
        pytest.skip("this filesystem takes no direct I/O")
    data = os.urandom(3 * ALIGN)
    unaligned = memoryview(bytearray(len(data) + 1))[1:]  # its address is not a page's: O_DIRECT says EINVAL
    unaligned[:] = data
    file.write_aligned(unaligned, 0)
    assert not file.direct
    file.close()
    assert Path(file.path).read_bytes() == data
    file.finish()


def test_direct_writes_are_off_unless_asked() -> None:
    assert not Spool(Path("/tmp")).direct_writes


def test_the_writer_writes_in_order_and_tells_each_end_once_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path, direct_writes=True)
    file = spool.begin(KEY)
    assert file is not None
    told: list[int] = []
    writer = SpoolWriter(file, 0, told.append)
    chunks = [os.urandom(n) for n in (ALIGN * 2, 777, ALIGN * 3 + 5, 1)]
    pos = 0
    for chunk in chunks:
        buf = _aligned(len(chunk))
        skew = pos % ALIGN
        buf[skew:skew + len(chunk)] = chunk
        writer.put(buf[skew:skew + len(chunk)], pos)
        pos += len(chunk)
    writer.wait_written(pos)
    writer.close(drain=True)
    ends = [sum(len(c) for c in chunks[:i + 1]) for i in range(len(chunks))]
    assert told == ends
    file.close()
    assert Path(file.path).read_bytes() == b"".join(chunks)
    file.finish()


def test_a_failed_write_reaches_the_lane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path, direct_writes=True)
    file = spool.begin(KEY)
    assert file is not None

    def full(data: memoryview, offset: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file, "write_aligned", full)
    told: list[int] = []
    writer = SpoolWriter(file, 0, told.append)
    writer.put(_aligned(ALIGN)[:ALIGN], 0)
    with pytest.raises(OSError):
        writer.wait_written(ALIGN)
    with pytest.raises(OSError):
        writer.put(_aligned(ALIGN)[:ALIGN], ALIGN)
    with pytest.raises(OSError):
        writer.close(drain=True)
    assert told == []
    file.finish()


def test_a_lane_stopped_short_gives_its_loans_back_so_the_resuming_lane_finds_room() -> None:
    feed = HashFeed(limit=2 * 4096)
    feed.keep_for_readers(0)
    ring = LaneBuffers(feed, 4096)
    reader = feed.reader(0)  # never sends: would hold each buffer a while
    for i in range(2):
        buf = ring.next()
        ring.written(i * 4096, buf[:4096], after_written=False)
    assert not feed.lend(2 * 4096, b"x" * 4096)  # full
    started = time.monotonic()
    ring.close()  # the drop: taken back at once, unread, the reader let go
    assert time.monotonic() - started < 0.2
    assert reader.borrow(0) is None
    assert feed.lend(2 * 4096, b"x" * 4096)


def test_a_reader_without_zero_copy_is_given_the_kept_bytes(tmp_path: Path) -> None:
    """The chunked path of a fill's reader (no ``sendfile`` extension: TLS, in-process clients) copies bytes from
    the kept buffers, and says where it got to, so the lane reusing a buffer does not wait for it."""
    size = 3 * 4096
    data = os.urandom(size)
    spooled = tmp_path / "blob.part"
    spooled.write_bytes(data[:4096] + bytes(size - 4096))  # the file holds zeros where only the buffer has the bytes

    async def run() -> bytes:
        fill = Fill(KEY, size, str(spooled), "/repo/resolve/main/file", None)  # type: ignore[arg-type]
        feed = _kept()
        assert feed.lend(4096, data[4096:], after_written=True)
        feed.passed(size)  # hashed
        fill.loans, fill.written, fill.verified = feed, size, True
        body = await FillBody.open(fill, 0, size, 4096)
        try:
            got = b"".join([chunk async for chunk in body])
        finally:
            await body.aclose()
        return got

    assert asyncio.run(run()) == data  # bytes 4096 on came from the buffer, not from the file's zeros


def test_the_chunked_reader_reports_its_progress_to_the_lane(tmp_path: Path) -> None:
    size = 2 * 4096
    data = os.urandom(size)
    spooled = tmp_path / "blob.part"
    spooled.write_bytes(data)
    feed = _kept()
    feed.lend(0, data[:4096])
    feed.lend(4096, data[4096:])
    feed.passed(size)

    async def run() -> float:
        fill = Fill(KEY, size, str(spooled), "/repo/resolve/main/file", None)  # type: ignore[arg-type]
        fill.loans, fill.written, fill.verified = feed, size, True
        body = await FillBody.open(fill, 0, size, 4096)
        chunks = aiter(body)
        assert await anext(chunks) == data[:4096]  # the reader is still open, past the first loan
        started = time.monotonic()
        await asyncio.to_thread(feed.reclaim, 0, 5.0)  # the lane reusing that buffer: not held up
        waited = time.monotonic() - started
        await body.aclose()
        return waited

    assert asyncio.run(run()) < 1


def test_a_finished_lane_takes_its_hashed_loans_back_so_a_kept_lane_after_it_finds_room() -> None:
    """The probe's part is received by a lane that lends to the hasher; the fast stream after it keeps its loans for
    readers. Loans the probe's lane left lent would hold the feed's room for good once loans are kept."""
    feed = HashFeed(limit=4 * 4096)
    ring = LaneBuffers(feed, 4096)
    for i in range(3):
        buf = ring.next()
        buf[:4096] = bytes([i]) * 4096
        ring.written(i * 4096, buf[:4096], after_written=False)
    hashed: list[bytes] = []

    def hasher() -> None:
        pos = 0
        while pos < 3 * 4096:
            offset, lent = feed.take(pos, 1.0)
            assert lent is not None
            hashed.append(bytes(lent))
            feed.done()
            pos += len(lent)
            feed.passed(pos)

    feed.keep_for_readers(4 * 4096)  # the next lane keeps its loans: hashed ones are no longer dropped by the hash
    reading = threading.Thread(target=hasher)
    reading.start()
    ring.finish()  # waits for the hasher to read each loan, then takes it back
    reading.join(5)
    assert b"".join(hashed) == b"".join(bytes([i]) * 4096 for i in range(3))  # every loan was read before it went
    assert feed.lend(3 * 4096, b"x" * 4096) and feed.lend(4 * 4096, b"y" * 4096)  # room for the next lane's loans
