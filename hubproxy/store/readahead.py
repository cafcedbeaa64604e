"""Streaming a stored object at the bucket's speed: a reader thread keeps a window of pieces ahead of the client.

Reading an S3 body in the event loop's rhythm (one piece, send it, the next piece) leaves the
connection to S3 idle while the client is sent to, and the other way round. Here one GET is read by a
worker task, ``PIECE_BYTES`` at a time, up to ``WINDOW`` pieces ahead of what the client has taken;
a reader holds at most ``WINDOW x PIECE_BYTES`` in memory. One GET, not several ranged ones: S3-compatible
servers (moto, some gateways) answer every range by reading the whole object.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Any

from hubproxy.threads import run_in

#: Bytes per read from the body, and pieces read ahead of the client.
PIECE_BYTES = 4 * 1024 * 1024
WINDOW = 4


async def read_ahead(body: Any, piece: int = PIECE_BYTES, window: int = WINDOW,
                     pool: Executor | None = None) -> AsyncIterator[bytes]:
    """The bytes of ``body`` (a file-like object with a blocking ``read``), read ahead in a thread of ``pool`` (the
    default pool if None)."""
    pieces: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=window)

    async def fill() -> None:
        try:
            while data := await run_in(pool, body.read, piece):
                await pieces.put(data)
            await pieces.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the reader, raised there
            await pieces.put(exc)

    reader = asyncio.create_task(fill())
    try:
        while (item := await pieces.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        with contextlib.suppress(Exception):
            body.close()
