"""Blob bodies in-process: a file range iterates its bytes or offers its span, and wrappers keep that reachable."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from hubproxy.store.base import StoreUnavailable
from hubproxy.store.bodies import FileRange, WrappedBody


def _range(path: Path, start: int, end: int) -> FileRange:
    return FileRange(os.open(path, os.O_RDONLY), start, end, 4)


def test_a_file_range_iterates_its_bytes_and_offers_its_span(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"0123456789")

    async def run() -> None:
        body = _range(path, 2, 9)
        [(fd, start, end)] = [span async for span in body.spans()]
        assert (start, end) == (2, 9) and os.pread(fd, end - start, start) == b"2345678"
        assert b"".join([chunk async for chunk in body]) == b"2345678"
        await body.aclose()
        assert [span async for span in body.spans()] == []
        with pytest.raises(OSError):
            os.fstat(fd)  # closed once, by the body

    asyncio.run(run())


def test_wrappers_keep_the_spans_and_close_once(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"abcdefgh")
    closed: list[str] = []

    async def run() -> None:
        inner = _range(path, 0, 8)
        body = WrappedBody(WrappedBody(inner, close=lambda: closed.append("inner")),
                           close=lambda: closed.append("outer"))
        assert body.spans == inner.spans
        assert b"".join([chunk async for chunk in body]) == b"abcdefgh"
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
