"""Reading a large stored object faster than one connection carries it: ranged GETs in parallel when one is slow.

A bucket may hold each connection to a fraction of what it serves in all (AWS S3 gives one GET of a large object
about 100 MB/s and advises ranged GETs in parallel). A read of at least ``PARALLEL_MIN_BYTES`` starts as one GET
of the whole range, as every read does, and its first ``JUDGE_BYTES`` are timed from their first byte (and, if
they were slow, the next ``JUDGE_BYTES`` too: a stream is slow only if both were, so that a moment in which the
machine was busy does not split a fast bucket's read):

- faster than ``s3_read_single_stream_mbps``: that stream carries the rest (relayed socket to socket where the
  endpoint allows, ``rawget.py``). A fast endpoint is never split: some S3-compatible servers (moto, some
  gateways) read the whole object for every range they answer;
- slower: the rest is fetched in parts of ``PART_BYTES``, by up to ``s3_read_connections`` GETs at once, each
  part handed on as soon as the ones before it have been: the first stream carries the first part (then it is
  closed), ranged GETs the others.

A part's bytes stay in memory until they are handed on: one read holds at most ``s3_read_connections`` parts,
and the process's reads at most ``PARTS_BUDGET_BYTES`` in all (a read that finds the budget spent fetches one part
at a time). A part whose connection fails is asked for again from the byte it had reached, up to
``PART_ATTEMPTS`` times; then the read fails, and its client's answer is cut short as for any failed read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from hubproxy.memory import ByteBudget
from hubproxy.observability import metrics
from hubproxy.store.bodies import Span
from hubproxy.store.readahead import read_ahead
from hubproxy.threads import run_in

#: Reads shorter than this are one GET, however slow.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024
#: Bytes of the first stream timed before it is judged (twice over if they came slowly).
JUDGE_BYTES = 1024 * 1024
#: Bytes per ranged GET once the read goes parallel (boto3's own parallel downloads use 8 MiB).
PART_BYTES = 8 * 1024 * 1024
#: Bytes all parallel reads of the process may hold at once (beyond it, a read fetches one part at a time).
PARTS_BUDGET_BYTES = 256 * 1024 * 1024
#: Times a part is asked for before the read fails.
PART_ATTEMPTS = 3


class FirstStream(Protocol):
    """The one GET a read starts with (``rawget.SocketBody`` or ``BotoBody``)."""

    def take(self, size: int) -> bytes:
        """(Blocking.) The body's next ``size`` bytes (fewer only at its end)."""

    def close_now(self) -> None:
        """(Blocking.) Close the stream (only read with ``take``)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class BotoBody:
    """A boto3 GET's streaming body as a ``FirstStream`` (no spans: it is read in Python)."""

    def __init__(self, body: Any, pool: Executor | None) -> None:
        self._body = body
        self._pool = pool
        self._rest: AsyncIterator[bytes] | None = None

    def take(self, size: int) -> bytes:
        return self._body.read(size)

    def close_now(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._rest is None:
            self._rest = read_ahead(self._body, pool=self._pool)
        return self._rest

    async def aclose(self) -> None:
        if self._rest is not None:
            await self._rest.aclose()  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            self._body.close()


#: Bytes of parts held by the process's parallel reads.
budget = ByteBudget(PARTS_BUDGET_BYTES)


class AdaptiveRead:
    """Bytes ``[start, end)`` of an object: ``first``'s stream if it is fast, else parts from ``fetch_part(a, b)``
    (blocking: the bytes ``[a, b)``, asked for again on a failure as the function sees fit), run in ``pool``.
    An async iterator of bytes; ``spans()`` too where ``first`` has them."""

    def __init__(self, first: FirstStream, fetch_part: Callable[[int, int], bytes], start: int, end: int, *,
                 connections: int, single_stream_mbps: float, pool: Executor | None) -> None:
        self._first: FirstStream | None = first
        self._fetch_part = fetch_part
        self._start = start
        self._end = end
        self._connections = connections
        self._fast_bps = single_stream_mbps * 1e6
        self._pool = pool
        self._pieces: AsyncIterator[bytes] | None = None
        #: Whether the read went parallel (None: not judged yet).
        self.parallel: bool | None = None
        if getattr(first, "spans", None) is not None:
            self.spans = self._spans

    async def _judge(self) -> bytes:
        """Read and time the first stream's first bytes (two looks if the first was slow); ``parallel`` says how
        the read goes on."""
        assert self._first is not None
        data = b""
        for _ in range(2):
            want = min(JUDGE_BYTES, self._end - self._start - len(data))
            look, seconds = await run_in(self._pool, _timed_take, self._first, want)
            if len(look) < want:
                raise OSError(f"the object's body ended {self._end - self._start - len(data) - len(look)} bytes early")
            data += look
            self.parallel = seconds > 0 and len(look) / seconds < self._fast_bps
            if not self.parallel:
                break
        metrics.STORE_LARGE_READS.labels("parallel" if self.parallel else "stream").inc()
        return data

    def _spans(self) -> AsyncIterator[Span]:
        return self._read(spans=True)

    def __aiter__(self) -> AdaptiveRead:
        return self

    async def __anext__(self) -> bytes:
        if self._pieces is None:
            self._pieces = self._read(spans=False)  # type: ignore[assignment]
        return await self._pieces.__anext__()

    async def _read(self, spans: bool) -> AsyncIterator[Span]:
        """The judged bytes, then the rest: parts, or the first stream's spans (``spans``) or pieces."""
        data = await self._judge()
        yield data
        if self.parallel:
            async for part in self._parts(self._start + len(data)):
                yield part
        elif self._first is not None:
            rest: AsyncIterator[Any] = self._first.spans() if spans else self._first  # type: ignore[attr-defined]
            async for piece in rest:
                yield piece

    async def _parts(self, pos: int) -> AsyncIterator[bytes]:
        """Bytes ``[pos, end)`` part by part, in order, with up to ``connections`` parts fetched at once."""
        loop = asyncio.get_running_loop()
        running: collections.deque[tuple[asyncio.Future[bytes], int]] = collections.deque()
        lead, self._first = self._first, None
        try:
            while running or pos < self._end:
                while pos < self._end and len(running) < self._connections:
                    size = min(PART_BYTES, self._end - pos)
                    held = size if budget.take(size) else 0
                    if not held and running:
                        break  # the budget is spent: one part at a time
                    if lead is not None:  # the first part: the rest of the first stream's
                        future = loop.run_in_executor(self._pool, self._lead_part, lead, pos, pos + size)
                        lead = None
                    else:
                        future = loop.run_in_executor(self._pool, self._fetch_part, pos, pos + size)
                    running.append((future, held))
                    pos += size
                future, held = running[0]
                try:
                    part = await future
                finally:
                    running.popleft()
                    budget.give(held)
                yield part
        finally:
            for future, held in running:  # wanted by nobody now (a part being fetched is dropped when it ends)
                budget.give(held)
                future.cancel()
            if lead is not None:
                lead.close_now()

    def _lead_part(self, lead: FirstStream, start: int, end: int) -> bytes:
        """(Blocking.) Bytes ``[start, end)`` from the first stream, which is then closed; what it fails to carry
        is fetched as any part is."""
        try:
            data = lead.take(end - start)
        except Exception:  # noqa: BLE001 - the stream failed (a socket or boto3 error): a ranged GET takes over
            data = b""
        finally:
            lead.close_now()
        return data if len(data) == end - start else data + self._fetch_part(start + len(data), end)

    async def aclose(self) -> None:
        if self._pieces is not None:
            await self._pieces.aclose()  # type: ignore[attr-defined]
        if self._first is not None:
            first, self._first = self._first, None
            await first.aclose()


def _timed_take(first: FirstStream, size: int) -> tuple[bytes, float]:
    """(Blocking.) ``size`` bytes of ``first`` and the seconds they took from their first byte (0: all came
    at once)."""
    head = first.take(1)
    began = time.monotonic()
    rest = first.take(size - 1) if head and size > 1 else b""
    return head + rest, time.monotonic() - began
