"""Blob bodies in-process: a file range iterates its bytes, and wrappers keep it sendable zero-copy."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from hubproxy.store.base import StoreUnavailable
from hubproxy.store.bodies import FileRange, WrappedBody


def _range(path: Path, start: int, end: int) -> FileRange:
    return FileRange(os.open(path, os.O_RDONLY), start, end, 4)


def test_a_file_range_iterates_its_bytes_and_names_its_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"0123456789")

    async def run() -> None:
        body = _range(path, 2, 9)
        assert body.file is not None and body.file[1:] == (2, 9)
        assert b"".join([chunk async for chunk in body]) == b"2345678"
        fd = body.file[0]
        await body.aclose()
        assert body.file is None
        with pytest.raises(OSError):
            os.fstat(fd)  # closed once, by the body

    asyncio.run(run())


def test_wrappers_keep_the_file_and_do_their_work(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"abcdefgh")
    seen: list[bytes] = []
    closed: list[str] = []

    async def run() -> None:
        inner = _range(path, 0, 8)
        body = WrappedBody(WrappedBody(inner, close=lambda: closed.append("inner")), each=seen.append,
                           close=lambda: closed.append("outer"))
        assert body.file == inner.file
        assert b"".join([chunk async for chunk in body]) == b"abcdefgh" and seen == [b"abcd", b"efgh"]
        await body.aclose()
        await body.aclose()
        assert closed == ["inner", "outer"]

    asyncio.run(run())


def test_a_wrapper_maps_errors() -> None:
    async def broken():  # noqa: ANN202
        raise KeyError("gone")
        yield b""

    async def run() -> None:
        body = WrappedBody(broken(), errors=lambda exc: StoreUnavailable(str(exc)))
        with pytest.raises(StoreUnavailable):
            await body.__anext__()

    asyncio.run(run())
