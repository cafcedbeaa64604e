"""What a filler shares with the processes following its fill: the parts file, the want file, their clean-up."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from hubproxy.cache.sharedparts import FollowedParts, Wants, announce, read_parts, write_parts
from hubproxy.cache.spool import Spool

KEY = "cd" * 32


def test_the_parts_file_is_read_whole_or_not_at_all(tmp_path: Path) -> None:
    path = str(tmp_path / "x.parts")
    assert read_parts(path) is None
    write_parts(path, True, [(40, 45), (10, 20)])
    assert read_parts(path) == (True, [(10, 20), (40, 45)])
    write_parts(path, False, [])
    assert read_parts(path) == (False, [])
    Path(path).write_bytes(b"parallel\n10 20\n40 4")  # cut short: not a list to trust
    assert read_parts(path) is None
    Path(path).write_bytes(b"sideways\n")
    assert read_parts(path) is None
    assert [p.name for p in tmp_path.iterdir()] == ["x.parts"]  # no temp file left behind
    write_parts(str(tmp_path / "gone" / "x.parts"), True, [])  # cannot be written: a hint, not an error


def test_wants_are_taken_once_and_only_as_whole_lines(tmp_path: Path) -> None:
    path = str(tmp_path / "x.want")
    wants = Wants(path)
    assert not wants.followed() and wants.new() == []
    announce(path, str(tmp_path / "x.part"))  # the fill has ended: nothing is left behind
    assert not wants.followed()
    (tmp_path / "x.part").touch()
    announce(path, str(tmp_path / "x.part"))
    assert wants.followed() and wants.new() == []
    with open(path, "ab") as f:
        f.write(b"100\n200\n30")  # the last line is still being written
    assert wants.new() == [100, 200]
    with open(path, "ab") as f:
        f.write(b"0\n")
    assert wants.new() == [300] and wants.new() == []


def test_a_follower_reaches_through_parts_written_back_to_back(tmp_path: Path) -> None:
    async def run() -> None:
        path = str(tmp_path / "x.want")
        Path(path).touch()
        parts = FollowedParts(path)
        assert parts.parallel  # until the filler says otherwise
        assert parts.update((True, [(10, 20), (20, 25), (40, 50)]))
        assert not parts.update((True, [(10, 20), (20, 25), (40, 50)]))
        assert parts.extent(12) == 25 and parts.extent(30) == 30 and parts.extent(45) == 50
        parts.want(31)
        parts.want(31)
        await asyncio.sleep(0.2)  # appended by a worker thread
        assert Path(path).read_bytes() == b"31\n"
        assert parts.update((False, []))
        assert not parts.parallel

    asyncio.run(run())


def test_a_finished_or_dead_fill_leaves_no_shared_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    filler = spool.begin(KEY)
    assert filler is not None
    write_parts(spool.parts_path(KEY), True, [(5, 6)])
    announce(spool.want_path(KEY), spool.part_path(KEY))
    assert spool.clean() == 0 and Path(spool.parts_path(KEY)).exists()  # a live fill keeps them
    filler.finish()
    assert list(spool.folder.iterdir()) == []
    # A filler that died: its part, lock and shared files all go at the next start.
    dead = spool.begin(KEY)
    assert dead is not None
    write_parts(spool.parts_path(KEY), True, [(5, 6)])
    announce(spool.want_path(KEY), spool.part_path(KEY))
    Path(spool.parts_path(KEY) + ".1234.parts").touch()  # a temporary parts file its death left
    os.close(dead._lock_fd)  # as if its process were gone: the kernel dropped its lock
    os.close(dead._fd)
    assert spool.clean() == 1
    assert list(spool.folder.iterdir()) == []


def test_a_filler_taking_over_keeps_the_ranges_its_predecessor_shared(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first = spool.begin(KEY)
    assert first is not None
    first.write_at([b"a" * 100], 0)
    first.write_at([b"b" * 50], 300)
    first.publish(100)
    write_parts(spool.parts_path(KEY), True, [(300, 350), (900, 1000)])  # the second lies past the file's end
    os.close(first._lock_fd)  # the filler dies
    os.close(first._fd)
    second = spool.begin(KEY, resume=True)
    assert second is not None
    assert second.resume_from == 100 and second.left_ahead == [(300, 350)]
    second.restart()  # its bytes cannot be used after all: nothing is kept
    assert second.left_ahead == [] and not Path(spool.parts_path(KEY)).exists()
    second.finish()
    write_parts(spool.parts_path(KEY), True, [(300, 350)])
    fresh = spool.begin(KEY)  # a new fill from byte 0 trusts nothing left over
    assert fresh is not None and fresh.left_ahead == [] and not Path(spool.parts_path(KEY)).exists()
    fresh.finish()
