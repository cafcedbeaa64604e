"""Blob bodies: async iterators of bytes that may also offer ``spans()``: the same bytes as pieces that can be
moved to a client without becoming Python objects.

``spans()`` yields the pieces in order, each as soon as it may be sent: ``(fd, start, end)`` of an open
file (a stored blob on local disk: one span, ``FileRange``; a blob being filled: the readable prefix as
it grows, ``cache.fill.FillBody``), or a ``SocketSpan``, bytes still arriving on another connection (an
object read from a plain-http S3 bucket, ``rawget.SocketBody``), or a ``LoanedSpan``, a file's bytes some of which
are still in the buffers they were written from (a fill written with direct I/O). Whoever sends the body to a client can
then hand those pieces to the kernel (``sendfile`` for a file, with no buffer per client; ``read``/``write``
through one buffer per answer for a socket) instead of iterating it. Every layer between the store and the answer wraps the body with
``WrappedBody``, which keeps ``spans`` reachable and adds its own closing work and error mapping.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SocketSpan:
    """A piece of a body still on a socket: ``head`` (bytes that came with the answer's headers), then the next
    ``count`` bytes arriving on ``sock``."""

    head: bytes
    sock: socket.socket
    count: int


class LoanReader(Protocol):
    """One reader's access to buffers holding bytes just written to a file (``cache.hashfeed.FeedReader``)."""

    def borrow(self, pos: int) -> tuple[int, memoryview] | None:
        """``(loan's offset, its bytes from pos)``, held until ``give_back``; None if no buffer holds ``pos``."""

    def give_back(self, offset: int, reached: int) -> None:
        """Done with the loan ``borrow`` gave; the reader's next byte is ``reached``."""

    def reached(self, pos: int) -> None:
        """The reader's next byte is ``pos``."""

    def close(self) -> None:
        """The reader is done."""


class Loans(Protocol):
    """Buffers holding bytes just written to a file (``cache.hashfeed.HashFeed``)."""

    def reader(self, pos: int, end: int | None = None) -> LoanReader:
        """Access for a reader of bytes ``[pos, end)``."""


@dataclass(frozen=True)
class LoanedSpan:
    """Bytes ``[start, end)`` of the open file ``fd``, to be sent through ``loans`` where a buffer still holds
    them (their pages were written past the page cache), else from the file."""

    fd: int
    start: int
    end: int
    loans: LoanReader


#: A piece ``spans()`` yields: bytes ``[start, end)`` of the open file ``fd``, a ``SocketSpan``, a ``LoanedSpan``, or
#: bytes already in memory (a part of a parallel read, ``parallelread.py``), sent as they are.
Span = tuple[int, int, int] | SocketSpan | LoanedSpan | bytes


class FileRange:
    """Bytes ``[start, end)`` of an open file descriptor, read in ``chunk``-sized pieces in worker threads.
    Owns the descriptor: ``aclose`` closes it."""

    def __init__(self, fd: int, start: int, end: int, chunk: int) -> None:
        self._fd = fd
        self._pos = start
        self._end = end
        self._chunk = chunk

    def __aiter__(self) -> FileRange:
        return self

    async def spans(self) -> AsyncIterator[tuple[int, int, int]]:
        if self._fd >= 0 and self._pos < self._end:
            yield self._fd, self._pos, self._end

    async def __anext__(self) -> bytes:
        if self._pos >= self._end or self._fd < 0:
            raise StopAsyncIteration
        data = await asyncio.to_thread(os.pread, self._fd, min(self._chunk, self._end - self._pos), self._pos)
        if not data:
            raise OSError("stored blob is shorter than its index entry")
        self._pos += len(data)
        return data

    async def aclose(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class WrappedBody:
    """``body`` with its errors mapped by ``errors`` (None: raised as they are), ``close`` run once at the end,
    and the inner body's ``spans`` (if any) still reachable for zero-copy sending."""

    def __init__(self, body: AsyncIterator[bytes], close: Callable[[], None] | None = None,
                 errors: Callable[[Exception], Exception | None] | None = None) -> None:
        self._body = body
        self._close = close
        self._errors = errors
        self._closed = False

    @property
    def spans(self) -> Callable[[], AsyncIterator[Span]] | None:
        return getattr(self._body, "spans", None)

    def __aiter__(self) -> WrappedBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._body.__anext__()
        except StopAsyncIteration:
            raise
        except Exception as exc:
            mapped = self._errors(exc) if self._errors is not None else None
            if mapped is None:
                raise
            raise mapped from exc
        return chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._body.aclose()  # type: ignore[attr-defined]
        finally:
            if self._close is not None:
                self._close()
