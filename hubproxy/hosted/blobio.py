"""Hosted files' bytes in the shared blob store: stored once, verified, read back whole when small."""

from __future__ import annotations

import asyncio
import os
import tempfile

from sqlalchemy.engine import Engine

from hubproxy.cache import records
from hubproxy.cache.blobs import BlobCache
from hubproxy.hosted import rows
from hubproxy.hub.errors import HubError
from hubproxy.repos.model import RepoRef


class HostedBlobs:
    """Puts verified files into the store (the same content-addressed store cached files use) and reads
    small ones back."""

    def __init__(self, cache: BlobCache, engine: Engine, tmp_dir: str) -> None:
        self.cache = cache
        self.engine = engine
        self.tmp_dir = tmp_dir
        os.makedirs(tmp_dir, exist_ok=True)
        for name in os.listdir(tmp_dir):  # bodies and files of uploads a previous run did not finish
            if name.startswith(("upload-", "commit-")):
                os.unlink(os.path.join(tmp_dir, name))

    def put_file(self, path: str, key: str, size: int, owner: tuple[RepoRef, str] | None = None,
                 record: bool = True) -> None:
        """Store the file at ``path`` as blob ``key`` (the caller hashed it); the file is moved or removed.

        ``owner`` (the repo and the uploader): the blob is recorded as uploaded to that repo, which keeps it
        from eviction in every process until the commit that uses it lands (or the repo is deleted). Without
        ``record`` the caller records many at once (``record``): a stored blob nobody recorded is invisible to
        eviction meanwhile.
        """
        try:
            if self.cache.store.stat(key) != size:
                self.cache.store.ingest(key, path)
            if record:
                self.record([(key, size)], owner)
            self.cache.present.add(key)
        finally:
            if os.path.exists(path):
                os.unlink(path)

    def record(self, stored: list[tuple[str, int]], owner: tuple[RepoRef, str] | None) -> None:
        """Record stored blobs (and, with ``owner``, their upload to its repo) in one transaction."""
        if not stored:
            return
        with self.engine.begin() as conn:
            for key, size in stored:
                records.add_blob(conn, key, size)
                if owner is not None:
                    rows.add_upload(conn, owner[0].type, owner[0].id, key, size, owner[1])

    async def put_bytes(self, key: str, data: bytes, owner: tuple[RepoRef, str] | None = None) -> None:
        def write() -> None:
            fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            self.put_file(tmp, key, len(data), owner)

        await asyncio.to_thread(write)

    async def read(self, key: str, size: int) -> bytes:
        body = await self.cache.stored_body(key, 0, size)
        if body is None:
            raise HubError(500, "BlobMissing", f"blob {key} is missing from hubproxy's store")
        return b"".join([chunk async for chunk in body])
