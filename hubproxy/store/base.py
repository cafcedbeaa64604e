"""The blob store interface, and the hashes that name blobs.

A blob is named by its content hash: the sha256 of an LFS file (64 hex) or the git blob sha1 of a
regular file (40 hex). Nothing else is a valid key, so a key can never name a path outside the store.

A store driver is small: it stats, reads ranges, ingests a verified local file, deletes, quarantines,
lists, presigns and answers a readiness probe. Everything else (filling, verifying, following fills,
deciding where bytes come from) belongs to the cache (``hubproxy/cache``). Drivers are wrapped once
(``instrumented.py``) for error mapping and metrics.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Collection, Iterator
from concurrent.futures import Executor
from typing import Protocol

_KEY = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class StoreUnavailable(OSError):
    """The blob store cannot be reached or refused the operation (answered as a 503)."""


def is_blob_key(key: str | None) -> bool:
    """A sha256 (LFS) or git-sha1 (regular file) hex digest."""
    return bool(key) and bool(_KEY.fullmatch(key or ""))


class BlobHasher:
    """Computes the hash that names a blob: sha256, or git's ``blob <size>\\0`` sha1."""

    def __init__(self, key: str, size: int) -> None:
        if len(key) == 64:
            self._h = hashlib.sha256()
        else:
            self._h = hashlib.sha1()
            self._h.update(b"blob %d\0" % size)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class Upload(Protocol):
    """A blob being uploaded while it is filled: parts in any order, then ``complete`` (only once verified) or
    ``abort``. Until ``complete`` the blob does not exist in the store."""

    #: Bytes per part (every part but the last has exactly this size).
    part_bytes: int

    def put_part(self, number: int, data: memoryview) -> None:
        """Upload ``data`` as part ``number`` (from 1). ``data`` is the caller's again once this returns."""

    def complete(self) -> None:
        """Make the uploaded parts the stored blob."""

    def abort(self) -> None:
        """Drop every uploaded part; nothing is stored."""


class BlobStore(Protocol):
    """Where verified blobs live. Blocking methods are called from worker threads: those of ``pool`` for what a
    client or a fill waits on (reads, ``stat``, storing a blob), where the store has threads of its own for them
    (None: the default pool)."""

    pool: Executor | None

    def stat(self, key: str) -> int | None:
        """The stored blob's size, or None if it is not stored."""

    async def read(self, key: str, start: int, end: int, chunk: int) -> AsyncIterator[bytes] | None:
        """Bytes ``[start, end)`` of a stored blob, or None if it is not (or no longer) there."""

    def ingest(self, key: str, path: str) -> None:
        """Make the verified file at ``path`` the stored blob ``key`` (the file may be moved away)."""

    def start_upload(self, key: str, size: int) -> Upload | None:
        """An upload to feed while the blob fills, for stores where storing a file costs a copy (S3); None
        where ``ingest`` is cheap (a rename on local disk)."""

    def quarantine(self, key: str) -> None:
        """Move a blob that no longer matches its name out of the blob namespace, kept for inspection."""

    def abort_abandoned_uploads(self, older_than: float, keep: Collection[str] = ()) -> int:
        """Abort uploads of this store's blobs seen unfinished (their process died) for at least ``older_than``
        seconds, counted from this process's first look, except those of the keys in ``keep``; returns how many."""

    def delete(self, key: str) -> None:
        """Delete a stored blob (nothing if it is not stored)."""

    def list(self) -> Iterator[str]:
        """Every stored blob's key."""

    def presign(self, key: str) -> str | None:
        """A short-lived URL on another origin that serves the blob, if the store can give one."""

    def ping(self) -> None:
        """Raise unless the store can be read and written now (readiness)."""
