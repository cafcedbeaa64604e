"""Hashing a file range from its mapped pages (``hubproxy/filehash.py``): exact bytes, short files, the fallback."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hubproxy import filehash
from hubproxy.filehash import ShortFile, hash_file_range


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[int, bytes]:
    data = os.urandom(3 * filehash.MAP_WINDOW + 12345)
    path = tmp_path / "blob"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


def _digest(fd: int, start: int, end: int) -> tuple[str, list[int]]:
    h = hashlib.sha256()
    sizes: list[int] = []

    def update(view: memoryview) -> None:
        sizes.append(len(view))
        h.update(view)

    assert hash_file_range(fd, update, start, end) == end
    return h.hexdigest(), sizes


@pytest.mark.parametrize("start,end", [(0, None), (1, None), (4097, 2 * filehash.MAP_WINDOW + 5), (7, 8), (100, 100)])
def test_any_range_hashes_to_the_bytes_it_holds(data_file: tuple[int, bytes], start: int, end: int | None) -> None:
    """Unaligned starts and ends, ranges across windows, empty ranges: the digest of exactly those bytes."""
    fd, data = data_file
    end = len(data) if end is None else end
    digest, sizes = _digest(fd, start, end)
    assert digest == hashlib.sha256(data[start:end]).hexdigest()
    assert sum(sizes) == end - start
    assert all(s <= filehash.MAP_WINDOW for s in sizes)


def test_a_range_beyond_the_end_of_the_file_is_an_error_not_a_crash(data_file: tuple[int, bytes]) -> None:
    """Mapped pages past the end would be a SIGBUS on access; populating them first makes it an exception."""
    fd, data = data_file
    with pytest.raises(ShortFile):
        _digest(fd, len(data) - 10, len(data) + 3 * 4096 * 1024)


def test_without_the_populate_advice_the_range_is_read(data_file: tuple[int, bytes],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that does not know MADV_POPULATE_READ (EINVAL): read with preadv, same digest, same errors."""
    fd, data = data_file
    monkeypatch.setattr(filehash, "MADV_POPULATE_READ", 0x7FFF)  # advice no kernel knows: EINVAL
    monkeypatch.setattr(filehash, "_can_populate", True)
    digest, _ = _digest(fd, 5, len(data))
    assert digest == hashlib.sha256(data[5:]).hexdigest()
    assert filehash._can_populate is False  # noqa: SLF001 - the fallback is remembered
    with pytest.raises(ShortFile):
        _digest(fd, 0, len(data) + 1)


def test_the_mapped_path_is_the_one_taken(data_file: tuple[int, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """On this kernel the range is mapped, never read with preadv (else the test above is all that runs)."""
    fd, data = data_file
    monkeypatch.setattr(filehash, "_can_populate", True)

    def no_reads(*_a: object) -> int:
        raise AssertionError("read with preadv")

    monkeypatch.setattr(filehash.os, "preadv", no_reads)
    digest, _ = _digest(fd, 3, len(data))
    assert digest == hashlib.sha256(data[3:]).hexdigest()
