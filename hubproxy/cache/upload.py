"""Uploading a blob to the store while it fills (S3): each part goes up as soon as the fill's prefix holds it.

Parts are read back from the spool file (the very bytes the hash runs over) and sent by a few worker
threads. The upload is only completed by the fill once the whole blob is verified, and aborted
otherwise, so the store never holds a blob that failed verification, not even for a moment.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from hubproxy.store.base import Upload

if TYPE_CHECKING:
    from hubproxy.cache.fill import Fill

#: Parts uploaded at once.
CONCURRENT_PARTS = 4


async def feed_upload(fill: Fill, upload: Upload, path: str) -> None:
    """Upload every part of ``fill`` from ``path`` as its bytes arrive; returns once all are uploaded."""
    running: set[asyncio.Task[None]] = set()
    number, offset = 1, 0
    try:
        while offset < fill.size:
            length = min(upload.part_bytes, fill.size - offset)
            while fill.written < offset + length:
                await fill.changed()
            while len(running) >= CONCURRENT_PARTS:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            running.add(asyncio.create_task(asyncio.to_thread(upload.put_part, number, path, offset, length)))
            number, offset = number + 1, offset + length
        for task in asyncio.as_completed(running):
            await task
    finally:
        for task in running:
            task.cancel()
