"""Parallel fills in-process: how a blob is split into parts, the published prefix, the refill wait."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest

from hubproxy.cache import mismatch
from hubproxy.cache.fill import Fill
from hubproxy.cache.fillbody import FillBody
from hubproxy.cache.mismatch import Mismatches
from hubproxy.cache.parts import plan
from hubproxy.cache.spool import Spool

MIB = 1024 * 1024
KEY = "ab" * 32


def test_large_blobs_are_split_into_parts_and_small_ones_are_not() -> None:
    parts = plan(0, 40 * MIB + 1, 16 * MIB, 8)
    assert [(p.start, p.end) for p in parts] == [(0, 16 * MIB), (16 * MIB, 32 * MIB), (32 * MIB, 40 * MIB + 1)]
    assert all(p.pos == p.start for p in parts)
    assert [(p.start, p.end) for p in plan(0, 32 * MIB - 1, 16 * MIB, 8)] == [(0, 32 * MIB - 1)]
    assert [(p.start, p.end) for p in plan(0, 100 * MIB, 16 * MIB, 1)] == [(0, 100 * MIB)]
    resumed = plan(5 * MIB, 40 * MIB, 16 * MIB, 4)  # a take-over starts after the prefix it inherited
    assert resumed[0].start == 5 * MIB and resumed[-1].end == 40 * MIB


def test_the_published_prefix_not_the_file_size_is_what_followers_and_take_overs_see(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    filler = spool.begin(KEY)
    assert filler is not None
    # Published at once: the lock file's block is taken before the fill reserves its space, so a disk that
    # fills up mid-fill cannot fail the first publication.
    assert os.path.getsize(spool.lock_path(KEY)) == 20 and spool.progress(KEY) == (0, True)
    filler.write_at([b"b" * 10], 20)  # a later part lands first: the file is 30 bytes, the prefix 0
    assert os.path.getsize(spool.part_path(KEY)) == 30
    assert spool.progress(KEY) == (0, True)
    filler.write_at([b"a" * 5, bytearray(b"a" * 15)], 0)
    filler.publish(30)
    assert spool.progress(KEY) == (30, True)
    assert Path(spool.part_path(KEY)).read_bytes() == b"a" * 20 + b"b" * 10
    os.close(filler._lock_fd)  # the filler dies without finishing: the kernel drops its lock
    filler._lock_fd = -1
    assert spool.progress(KEY) == (30, False)
    heir = spool.begin(KEY, resume=True)
    assert heir is not None and heir.resume_from == 30
    heir.finish()


@pytest.mark.parametrize("when", ["before_the_lock_file_opens", "before_the_lock_is_tried"])
def test_a_filler_that_finishes_between_a_followers_looks_is_not_taken_for_dead(tmp_path: Path, when: str,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower looks for the spool file, then at the lock. A filler that stores its blob (the file renamed into
    the store) and lets go of the lock between the two looks must not read as a dead filler at its last published
    prefix: the follower would take the fill over and fetch the tail again (seen once in CI, two replicas on one
    folder: 504 KiB fetched twice, a client cut one byte short)."""
    spool = Spool(tmp_path)
    filler = spool.begin(KEY)
    assert filler is not None
    filler.write_at([b"a" * 30], 0)
    filler.publish(20)  # the last prefix published before the fill's end
    stored = tmp_path / "stored"

    def finish() -> None:
        if filler._lock_fd >= 0:
            filler.close()
            os.replace(spool.part_path(KEY), stored)  # the store takes the file (``LocalBlobStore.ingest``)
            filler.finish()  # then the lock goes

    if when == "before_the_lock_file_opens":
        real_open = os.open

        def open_after(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if str(path) == spool.lock_path(KEY):
                finish()
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_after)
    else:
        real_flock = fcntl.flock

        def flock_after(fd: int, op: int) -> None:
            finish()
            real_flock(fd, op)

        monkeypatch.setattr(fcntl, "flock", flock_after)
    assert spool.progress(KEY) == (None, False)  # no fill left to take over: the follower looks in the store
    assert stored.read_bytes() == b"a" * 30


def test_a_blob_that_keeps_failing_is_not_refetched_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(mismatch.time, "monotonic", lambda: now[0])
    known = Mismatches(engine=None)  # type: ignore[arg-type]  # remember/refill_wait never touch the database
    known.remember(KEY)
    assert known.refill_wait(KEY) == 0  # one failure may be a transient one: retried at once
    known.remember(KEY)
    assert known.refill_wait(KEY) == 2
    now[0] += 2
    assert known.refill_wait(KEY) == 0
    for _ in range(20):
        known.remember(KEY)
    assert known.refill_wait(KEY) == mismatch.REFILL_MAX_SECONDS
    known.verified(KEY)
    assert known.refill_wait(KEY) == 0


def test_a_fill_offers_its_readable_prefix_as_spans_and_the_last_byte_only_once_verified(tmp_path: Path) -> None:
    part = tmp_path / "blob.part"
    part.write_bytes(b"0123456789")

    async def run() -> None:
        fill = Fill(KEY, 10, str(part), "/resolve", store=None)  # type: ignore[arg-type]
        fill.written = 6
        body = await FillBody.open(fill, 0, 10, 4)
        spans = body.spans()
        assert (await spans.__anext__())[1:] == (0, 6)
        fill.written = 10
        fill.notify()
        assert (await spans.__anext__())[1:] == (6, 9)  # all but the held-back last byte
        last = asyncio.ensure_future(spans.__anext__())
        await asyncio.sleep(0.01)
        assert not last.done()  # not before the hash matched
        fill.verified = True
        fill.notify()
        fd, start, end = await last
        assert (start, end) == (9, 10) and os.pread(fd, 1, 9) == b"9"
        await spans.aclose()
        await body.aclose()

    asyncio.run(run())
