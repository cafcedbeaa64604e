"""Filling one blob: download it into its spool file (``parts.py``), hash it as it grows, verify it.

The download advances ``fill.written``, the prefix of the blob that is all on disk; a hashing task
follows that prefix, reading it back from the spool file in a worker thread, so sha256 runs on the
other core while bytes still arrive and the event loop never hashes. A filler that takes over a dead
one's spool file re-hashes the prefix it left and downloads only the rest. The last ``HOLDBACK`` bytes
reach readers only once the whole blob hashed to its name (``fill.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from hubproxy.cache.parts import FillError, PartedDownload
from hubproxy.cache.spool import SpoolFile
from hubproxy.store.base import BlobHasher
from hubproxy.upstream.client import UpstreamClient

if TYPE_CHECKING:
    from hubproxy.cache.fill import Fill

log = logging.getLogger(__name__)

#: Bytes per read when hashing the spool file.
HASH_READ_BYTES = 8 * 1024 * 1024

__all__ = ["BlobMismatch", "FillError", "Filler"]


class BlobMismatch(FillError):
    """The upstream's bytes do not hash to the expected key."""


class Filler:
    """Downloads a fill's bytes into its spool file and proves they hash to the blob's name."""

    def __init__(self, upstream: UpstreamClient, retries: int, connections: int = 1,
                 part_bytes: int = 16 * 1024 * 1024) -> None:
        self.upstream = upstream
        self.retries = retries
        self.connections = connections
        self.part_bytes = part_bytes

    async def fill(self, fill: Fill, spool: SpoolFile) -> None:
        """Every byte of the blob in ``spool``, hashed; raises ``BlobMismatch`` or ``FillError``."""
        held = spool.resume_from
        if held > fill.size:
            await asyncio.to_thread(spool.restart)
        elif held:
            fill.written = held
            fill.notify()
            log.info("continuing the fill of %s from the %d bytes a stopped filler left", fill.key, held)
        hashing = asyncio.create_task(_hash_prefix(fill, spool.path))
        try:
            download = PartedDownload(self.upstream, fill, spool, self.retries, self.connections, self.part_bytes)
            await download.run()
            if fill.written != fill.size:
                raise FillError(f"upstream sent {fill.written} bytes, expected {fill.size}")
            digest = await hashing
        finally:
            hashing.cancel()
        if digest != fill.key:
            raise BlobMismatch(f"blob {fill.key} failed verification (got {digest})")


async def _hash_prefix(fill: Fill, path: str) -> str:
    """Hash the spool file's bytes as the written prefix grows; the digest once all ``fill.size`` are hashed."""
    hasher = BlobHasher(fill.key, fill.size)
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    try:
        hashed = 0
        while hashed < fill.size:
            if fill.written > hashed:
                hashed = await asyncio.to_thread(_hash_range, fd, hasher, hashed, fill.written)
            else:
                await fill.changed()
        return hasher.hexdigest()
    finally:
        os.close(fd)


def _hash_range(fd: int, hasher: BlobHasher, start: int, end: int) -> int:
    """(In a thread.) Feed bytes ``[start, end)`` of the file to the hasher; returns ``end``."""
    buf = bytearray(min(HASH_READ_BYTES, end - start))
    view = memoryview(buf)
    pos = start
    while pos < end:
        n = os.preadv(fd, [view[: min(len(buf), end - pos)]], pos)
        if n <= 0:
            raise FillError("the spool file is shorter than it was")
        hasher.update(view[:n])
        pos += n
    return pos
