"""A reader of a fill: the bytes of a range as they become readable, in chunks or as pieces of the spool file."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable

from hubproxy.cache.fill import Fill
from hubproxy.cache.parts import FillError
from hubproxy.descriptors import open_for_reading
from hubproxy.store.bodies import LoanedSpan, LoanReader, Span


class FillBody:
    """Bytes ``[start, end)`` of a fill as they become readable (the tail only once verified): iterated in chunks,
    or as ``spans()`` of the spool file for zero-copy sending (``store/bodies.py``).

    A fill already verified and handed to the store may have left the spool: then the store serves it
    (and there are no spans).
    """

    def __init__(self, fill: Fill, start: int, end: int, chunk_size: int, fd: int) -> None:
        self.fill = fill
        self.start = start
        self.end = end
        self.chunk_size = chunk_size
        self._fd = fd
        #: This reader's access to the fill's kept buffers, once it has them (``hashfeed.py``).
        self._reader: LoanReader | None = None
        self._chunks = self._read()

    @classmethod
    async def open(cls, fill: Fill, start: int, end: int, chunk_size: int) -> FillBody:
        """The body, with the spool file opened in a worker thread (the spool may be on NFS; a request cancelled
        meanwhile leaves no descriptor behind)."""
        try:
            fd = await open_for_reading(fill.spool_path)
        except FileNotFoundError:
            fd = -1
        return cls(fill, start, end, chunk_size, fd)

    @property
    def spans(self) -> Callable[[], AsyncIterator[Span]] | None:
        """The readable prefix as pieces of the spool file; None once the blob left the spool."""
        return self._spans if self._fd >= 0 else None

    def __aiter__(self) -> FillBody:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def _spans(self) -> AsyncIterator[Span]:
        fill, pos = self.fill, self.start
        while pos < self.end:
            await fill.wait_readable(pos)
            limit = min(self.end, fill.readable_from(pos))
            if fill.loans is not None and self._reader is None:
                self._reader = fill.loans.reader(pos, self.end)
            yield (self._fd, pos, limit) if self._reader is None else LoanedSpan(self._fd, pos, limit, self._reader)
            pos = limit
        if self.end >= fill.size and not fill.verified:
            await fill.wait_readable(fill.size)

    async def _read(self) -> AsyncIterator[bytes]:
        if self._fd < 0:
            await self.fill.wait_readable(self.fill.size)  # raises if it failed; returns once verified
            body = await self.fill.store.read(self.fill.key, self.start, self.end, self.chunk_size)
            if body is None:
                raise FillError("the blob left the spool and is not in the store")
            try:
                async for data in body:
                    yield data
            finally:
                await body.aclose()  # type: ignore[attr-defined]
            return
        async with contextlib.aclosing(self._spans()) as pieces:  # the pieces zero-copy sending gets, in chunks
            async for piece in pieces:
                if isinstance(piece, LoanedSpan):
                    fd, pos, limit, loans = piece.fd, piece.start, piece.end, piece.loans
                else:
                    (fd, pos, limit), loans = piece, None
                while pos < limit:
                    data = await asyncio.to_thread(_read_chunk, fd, pos, min(limit - pos, self.chunk_size), loans)
                    if not data:
                        raise FillError("fill data vanished")
                    pos += len(data)
                    yield data

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_chunk(fd: int, pos: int, size: int, loans: LoanReader | None) -> bytes:
    """(In a thread.) Up to ``size`` bytes of the fill from ``pos``: copied from the buffer holding them if
    ``loans`` has one, else read from the spool file; the reader's progress is reported to ``loans`` either way
    (a followed reader that never reported it would hold the fill's writer up)."""
    lent = loans.borrow(pos) if loans is not None else None
    if lent is None:
        data = os.pread(fd, size, pos)
        if loans is not None:
            loans.reached(pos + len(data))
        return data
    data = b""
    try:
        data = bytes(lent[1][:size])
    finally:
        loans.give_back(lent[0], pos + len(data))  # type: ignore[union-attr]
    return data

