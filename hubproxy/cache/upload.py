"""Uploading a blob to the store while it fills (S3): each part goes up as soon as the fill's prefix holds it.

Parts are read back from the spool file (the very bytes the hash runs over) and sent by a few worker
threads. The upload is only completed by the fill once the whole blob is verified, and aborted
otherwise, so the store never holds a blob that failed verification, not even for a moment.

The upload is background work: what a client waits for (the fill's receiving, hashing and sending) comes
first. Its threads run at the lowest CPU priority (nice 19; on Linux a thread's own), so they take the
CPU the fill leaves idle: all of it behind a slow upstream, little while a fast fill keeps the cores busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from hubproxy.store.base import Upload

if TYPE_CHECKING:
    from hubproxy.cache.fill import Fill

#: Parts uploaded at once.
CONCURRENT_PARTS = 4
#: CPU priority (nice) of the threads that upload parts.
UPLOAD_NICE = 19


def _lower_priority() -> None:
    """(In each new upload thread.) Give this thread, not the process, the upload's priority."""
    with contextlib.suppress(OSError):  # not permitted, or no per-thread priorities: run at the usual one
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), UPLOAD_NICE)


#: The threads every fill's parts go up in (each fill uploads at most ``CONCURRENT_PARTS`` at once).
UPLOAD_THREADS = CONCURRENT_PARTS * 4
uploaders = ThreadPoolExecutor(UPLOAD_THREADS, "hubproxy-upload", initializer=_lower_priority)


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
            running.add(asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(
                uploaders, upload.put_part, number, path, offset, length)))
            number, offset = number + 1, offset + length
        for task in asyncio.as_completed(running):
            await task
    finally:
        for task in running:
            task.cancel()
