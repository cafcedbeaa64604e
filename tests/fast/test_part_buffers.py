"""Parts of a spool file read for the store's upload (``cache/partbuffers.py``) and sent as views (``ViewBody``)."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from hubproxy.cache.lanebuffers import ALIGN
from hubproxy.cache.partbuffers import GROWTH, PartBuffers
from hubproxy.store.s3upload import ViewBody
from tests.fast.test_fill_helpers import resident
from tests.helpers import evict_from_page_cache

SIZE = 3 * GROWTH + 1234


def _file(tmp_path: Path, size: int = SIZE) -> tuple[str, bytes]:
    data = os.urandom(size)
    path = tmp_path / "spool.part"
    path.write_bytes(data)
    return str(path), data


def _direct_io_here(path: str) -> None:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        pytest.skip(f"the filesystem of {path} takes no direct I/O (tmpfs?)")


def _address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "paged"])
@pytest.mark.parametrize("offset,length", [(0, GROWTH), (GROWTH, 2 * GROWTH), (5, 9000), (ALIGN - 1, 2),
                                           (2 * GROWTH, GROWTH + 1234), (SIZE - 1, 1)])
def test_a_part_is_read_exactly_wherever_it_lies(tmp_path: Path, direct: bool, offset: int, length: int) -> None:
    path, data = _file(tmp_path)
    evict_from_page_cache(path)
    with PartBuffers(idle=2).read(path, offset, length, direct) as part:
        assert bytes(part) == data[offset:offset + length]


def test_a_direct_read_makes_no_page_cache_pages(tmp_path: Path) -> None:
    path, data = _file(tmp_path)
    _direct_io_here(path)
    evict_from_page_cache(path)
    assert resident(path, 0, SIZE) == 0
    with PartBuffers(idle=2).read(path, 0, SIZE, direct=True) as part:
        assert bytes(part) == data
    assert resident(path, 0, SIZE) == 0
    with PartBuffers(idle=2).read(path, 0, SIZE, direct=False) as part:  # the same read through the page cache
        assert bytes(part) == data
    assert resident(path, 0, SIZE) > 0.9


def test_a_direct_read_sees_bytes_still_only_in_the_page_cache(tmp_path: Path) -> None:
    path, data = _file(tmp_path)
    _direct_io_here(path)
    evict_from_page_cache(path)
    changed = os.urandom(3000)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, changed, GROWTH - 1000)  # a dirty span across a part's edge, not yet on the disk
    finally:
        os.close(fd)
    expected = data[:GROWTH - 1000] + changed + data[GROWTH + 2000:]
    with PartBuffers(idle=2).read(path, GROWTH - 5000, 10_000, direct=True) as part:
        assert bytes(part) == expected[GROWTH - 5000:GROWTH + 5000]


def test_a_part_past_the_end_of_the_file_is_an_error(tmp_path: Path) -> None:
    path, _ = _file(tmp_path)
    for direct in (True, False):
        with pytest.raises(OSError, match="holds 1233 of the part's 2000 bytes"), \
                PartBuffers(idle=2).read(path, 3 * GROWTH + 1, 2000, direct):
            pass


def test_buffers_are_reused_and_only_idle_ones_kept(tmp_path: Path) -> None:
    path, data = _file(tmp_path)
    buffers = PartBuffers(idle=1)
    with buffers.read(path, 0, GROWTH, True) as first:
        address = _address(first)
        with buffers.read(path, GROWTH, GROWTH, True) as second:  # a second part at the same time: a new buffer
            assert _address(second) != address
            assert bytes(second) == data[GROWTH:2 * GROWTH]
    assert buffers.kept_bytes() == GROWTH  # one of the two kept
    with buffers.read(path, 2 * GROWTH, GROWTH - ALIGN, True) as third:  # a part that fits the kept buffer
        assert bytes(third) == data[2 * GROWTH:3 * GROWTH - ALIGN]
        assert buffers.kept_bytes() == 0
    with buffers.read(path, 5, 2 * GROWTH, False) as bigger:  # one that does not: a larger buffer
        assert bytes(bigger) == data[5:5 + 2 * GROWTH]
    assert buffers.kept_bytes() == GROWTH  # still at most one


def test_a_view_body_reads_views_of_its_buffer_and_seeks() -> None:
    data = bytearray(os.urandom(10_000))
    body = ViewBody(memoryview(data))
    assert len(body) == 10_000 and body.seekable() and body.readable()
    chunk = body.read(4096)
    assert isinstance(chunk, memoryview) and _address(chunk) == _address(memoryview(data))  # no copy
    assert bytes(body.read(4096)) == data[4096:8192]
    assert body.tell() == 8192
    assert bytes(body.read()) == data[8192:]
    assert body.read(10) == b""
    assert body.seek(-10, 2) == 9990 and bytes(body.read(None)) == data[-10:]
    assert body.seek(100) == 100 and body.seek(50, 1) == 150
    with pytest.raises(ValueError):
        body.seek(-1)
