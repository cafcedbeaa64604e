"""Filling one blob: download it into its spool file (``parts.py``), hash it as it grows, verify it.

The download advances ``fill.written``, the prefix of the blob that is all on disk, and the hash
follows that prefix on a worker thread of its own, never on the event loop: every byte is hashed from the
spool file's cached pages (``filehash.py``) once the prefix reaches it, whichever connection brought it, so
receiving, writing and hashing overlap without a hand-off per batch. A filler that takes over a dead one's
spool file re-hashes the prefix it left and downloads only the rest. The last ``HOLDBACK`` bytes reach readers only once the whole blob hashed to its
name (``fill.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from hubproxy.cache.parts import FillError, PartedDownload
from hubproxy.cache.spool import SpoolFile
from hubproxy.filehash import ShortFile, hash_file_range
from hubproxy.store.base import BlobHasher
from hubproxy.upstream.client import UpstreamClient

if TYPE_CHECKING:
    from hubproxy.cache.fill import Fill

log = logging.getLogger(__name__)

__all__ = ["BlobMismatch", "FillError", "Filler"]


class BlobMismatch(FillError):
    """The upstream's bytes do not hash to the expected key."""


class Filler:
    """Downloads a fill's bytes into its spool file and proves they hash to the blob's name."""

    def __init__(self, upstream: UpstreamClient, retries: int, connections: int, part_bytes: int,
                 fast_stream_mbps: float) -> None:
        self.upstream = upstream
        self.retries = retries
        self.connections = connections
        self.part_bytes = part_bytes
        self.fast_bps = fast_stream_mbps * 1e6

    async def fill(self, fill: Fill, spool: SpoolFile) -> None:
        """Every byte of the blob in ``spool``, hashed; raises ``BlobMismatch`` or ``FillError``."""
        held = spool.resume_from
        if held > fill.size:
            await asyncio.to_thread(spool.restart)
        elif held:
            fill.written = held
            fill.notify()
            log.info("continuing the fill of %s from the %d bytes a stopped filler left", fill.key, held)
        await asyncio.to_thread(spool.reserve, fill.size)
        hasher = PrefixHasher(fill, spool.path)
        hashing = asyncio.create_task(hasher.run())
        try:
            download = PartedDownload(self.upstream, fill, spool, self.retries, self.connections,
                                      self.part_bytes, self.fast_bps)
            await download.run()
            if fill.written != fill.size:
                raise FillError(f"upstream sent {fill.written} bytes, expected {fill.size}")
            digest = await hashing
        finally:
            hashing.cancel()
        if digest != fill.key:
            raise BlobMismatch(f"blob {fill.key} failed verification (got {digest})")


class PrefixHasher:
    """Hashes the blob's prefix as it grows, reading it back from the spool file's cached pages."""

    def __init__(self, fill: Fill, path: str) -> None:
        self.fill = fill
        self.path = path
        self.hasher = BlobHasher(fill.key, fill.size)
        self.hashed = 0

    async def run(self) -> str:
        """Hash what the written prefix holds beyond what is hashed; the digest once the whole blob is."""
        fd = await asyncio.to_thread(os.open, self.path, os.O_RDONLY)
        try:
            while self.hashed < self.fill.size:
                if self.fill.written > self.hashed:
                    self.hashed = await asyncio.to_thread(_hash_range, fd, self.hasher, self.hashed,
                                                          self.fill.written)
                else:
                    await self.fill.changed()
            return self.hasher.hexdigest()
        finally:
            os.close(fd)


def _hash_range(fd: int, hasher: BlobHasher, start: int, end: int) -> int:
    """(In a thread.) Feed bytes ``[start, end)`` of the spool file to the hasher; returns ``end``."""
    try:
        return hash_file_range(fd, hasher.update, start, end)
    except ShortFile as exc:
        raise FillError(f"the spool file is shorter than it was: {exc}") from exc
