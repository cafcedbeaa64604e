"""The blob store protocol, and the hashes that name blobs.

A blob is named by its content hash: the sha256 of an LFS file (64 hex) or the git blob
sha1 of a regular file (40 hex). Nothing else is a valid key, so a key can never name a
path outside the store.

Fills always land in a local spool first (``tmp/<key>.part`` under the data dir), where
readers follow them while they grow; ``commit`` makes the verified blob durable in the store
(a rename on local disk, an upload to S3).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterator
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


class FillWriter(Protocol):
    """An in-progress blob: bytes are appended, then committed (verified) or aborted.

    ``resume_from``: bytes already in ``tmp_path`` from a filler that died (continued, after re-hashing).
    """

    tmp_path: str
    resume_from: int

    def restart(self) -> None: ...

    def write(self, data: bytes | bytearray) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    """Where verified blobs live. Blocking methods are called from worker threads."""

    def has(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None: ...

    def local_path(self, key: str) -> str | None:
        """The blob's file, for stores on a filesystem (None for object stores)."""

    async def reader(self, key: str, start: int, end: int, chunk: int) -> AsyncIterator[bytes] | None:
        """Bytes ``[start, end)`` of a stored blob, or None if it is not (or no longer) there."""

    def presign(self, key: str) -> str | None:
        """A short-lived URL on another origin that serves the blob, if the store can give one."""

    def part_path(self, key: str) -> str: ...

    def begin_fill(self, key: str, resume: bool = False) -> FillWriter | None: ...

    def fill_progress(self, key: str) -> tuple[int | None, bool]: ...

    def clean_tmp(self) -> int: ...

    def free_bytes(self) -> int: ...

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store can be read and written now (readiness)."""

    def delete(self, key: str) -> None: ...

    def list_blobs(self) -> Iterator[str]: ...

    def hash_blob(self, key: str) -> str:
        """Re-read a stored blob and return the hash it has now."""

    def quarantine(self, key: str) -> None:
        """Move a damaged blob out of the store (kept for inspection)."""
