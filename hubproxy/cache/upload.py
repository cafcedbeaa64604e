"""Uploading a blob to the store while it fills (S3): each part goes up as soon as the fill's prefix holds it.

The upload starts beside the fill, not before it: a client's first byte never waits for the store's answer
to "start an upload" (a round trip to the bucket, tens of milliseconds on a cloud store). Parts are read back
from the spool file (the very bytes the hash runs over; past the page cache where the fill wrote it so, into
buffers reused from part to part: ``partbuffers.py``) and sent by a few worker threads. The upload is only
completed by the fill once the whole blob is verified, and aborted otherwise, so the store never holds a blob
that failed verification, not even for a moment.

The upload is background work: what a client waits for (the fill's receiving, hashing and sending) comes
first. Its threads run at the lowest CPU priority (nice 19; on Linux a thread's own), so they take the
CPU the fill leaves idle: all of it behind a slow upstream, little while a fast fill keeps the cores busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from hubproxy.cache.partbuffers import PartBuffers
from hubproxy.store.base import BlobStore, Upload
from hubproxy.threads import run_in

if TYPE_CHECKING:
    from hubproxy.cache.fill import Fill

log = logging.getLogger(__name__)

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
#: The buffers parts are read into (one fill's worth kept between parts).
part_buffers = PartBuffers(idle=CONCURRENT_PARTS)


def upload_part(upload: Upload, number: int, path: str, offset: int, length: int, direct: bool) -> None:
    """(In an upload thread.) Read part ``number`` (``[offset, offset + length)``) of the spool file at ``path``
    and upload it; ``direct``: the fill wrote the file past the page cache."""
    with part_buffers.read(path, offset, length, direct) as data:
        upload.put_part(number, data)


async def feed_upload(fill: Fill, upload: Upload, path: str, direct: bool = False) -> None:
    """Upload every part of ``fill`` from ``path`` as its bytes arrive; returns once all are uploaded.
    ``direct``: the fill writes the file past the page cache (its parts are read so too)."""
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
                uploaders, upload_part, upload, number, path, offset, length, direct)))
            number, offset = number + 1, offset + length
        for task in asyncio.as_completed(running):
            await task
    finally:
        for task in running:
            task.cancel()


class FillUpload:
    """The store's copy of one fill's blob, made while it fills (``BlobStore.start_upload``).

    Started beside the fill; ``uploaded()`` (once the blob is verified) gives the upload holding every part, ready
    to be completed, or None when the blob is to be stored whole instead; ``abandon()`` stops it and drops every
    part sent, so the store holds the blob complete or not at all."""

    def __init__(self, fill: Fill, store: BlobStore, path: str, direct: bool = False) -> None:
        self.fill = fill
        self.store = store
        self.path = path
        #: Whether the fill writes the spool file past the page cache.
        self.direct = direct
        #: The store's upload once it has started (so that it can be aborted whatever happens after).
        self.upload: Upload | None = None
        self._task = asyncio.create_task(self._run(), name=f"upload-{fill.key[:12]}")

    async def _run(self) -> Upload | None:
        """The upload with every part sent, or None (no upload, or it failed: told here, once)."""
        upload = await self._start()
        if upload is None:
            return None
        try:
            await feed_upload(self.fill, upload, self.path, self.direct)
        except Exception as exc:  # noqa: BLE001 - the verified file is stored whole instead; abandon() aborts this
            log.warning("uploading %s while filling failed (%s); uploading the verified file instead",
                        self.fill.key, exc)
            return None
        return upload

    async def _start(self) -> Upload | None:
        starting = asyncio.ensure_future(run_in(self.store.pool, self.store.start_upload, self.fill.key,
                                                self.fill.size))
        try:
            self.upload = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # The store may be starting the upload right now: learn of it, so that ``abandon`` aborts it.
            with contextlib.suppress(Exception):
                self.upload = await starting
            raise
        except Exception as exc:  # noqa: BLE001 - the blob is stored whole once verified instead
            log.warning("could not start uploading %s while filling (%s); uploading it afterwards", self.fill.key, exc)
        return self.upload

    async def uploaded(self) -> Upload | None:
        """(Once the blob is verified.) The upload with every part sent; None if the blob must be stored whole
        (the store makes no uploads, or starting or feeding this one failed)."""
        return await self._task

    async def abandon(self) -> None:
        """Stop sending parts and abort the upload: nothing of it is kept."""
        self._task.cancel()
        await asyncio.wait([self._task])
        if self.upload is not None:
            upload, self.upload = self.upload, None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(upload.abort)
