"""Reading a large range of an object store blob at the bucket's speed: several ranged GETs in flight.

One GET stream from S3 is limited per connection, like a CDN stream. A reader of a large range gets it
as pieces fetched by ``WINDOW`` concurrent ranged GETs (worker threads), yielded in order; a reader holds
at most ``WINDOW x PIECE_BYTES`` in memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

#: Bytes per ranged GET, and GETs in flight per reader.
PIECE_BYTES = 4 * 1024 * 1024
WINDOW = 4


async def windowed(fetch: Callable[[int, int], bytes], start: int, end: int, first: bytes | None = None,
                   piece: int = PIECE_BYTES, window: int = WINDOW) -> AsyncIterator[bytes]:
    """Bytes ``[start, end)`` in order, ``fetch(a, b)`` giving bytes ``[a, b)`` in a thread.

    ``first``: the first piece, already fetched (the caller checked the object exists with it).
    """
    pending: deque[asyncio.Task[bytes] | bytes] = deque()
    pos = start
    if first is not None:
        pending.append(first)
        pos += len(first)

    def launch() -> None:
        nonlocal pos
        a, pos = pos, min(pos + piece, end)
        pending.append(asyncio.ensure_future(asyncio.to_thread(fetch, a, pos)))

    try:
        while pos < end and len(pending) < window:
            launch()
        while pending:
            head = pending.popleft()
            data = head if isinstance(head, bytes) else await head
            if pos < end:
                launch()
            yield data
    finally:
        for task in pending:
            if not isinstance(task, bytes):
                task.cancel()
