"""Storing a blob whose bytes hubproxy did not fill itself (an imported bundle, an upload): the one way in.

The bytes are written to the blob's spool file and hashed on the way; only if their size and hash
name the blob is the file handed to the store and recorded. Anything else leaves nothing behind.
"""

from __future__ import annotations

import time

from sqlalchemy.engine import Engine

from hubproxy.cache import records
from hubproxy.cache.spool import Spool, SpoolFile
from hubproxy.store.base import BlobHasher, BlobStore


class IngestError(Exception):
    """The bytes are not the blob they claim to be (or another writer never finished it)."""


class Ingest:
    """One blob being ingested: ``write`` its bytes in order, then ``finish``; ``abort`` on failure."""

    def __init__(self, store: BlobStore, engine: Engine, spool_file: SpoolFile, key: str, size: int) -> None:
        self.store = store
        self.engine = engine
        self.spool_file = spool_file
        self.key = key
        self.size = size
        self.seen = 0
        self._hasher = BlobHasher(key, size)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.seen += len(data)
        if self.seen > self.size:
            raise IngestError(f"more than the {self.size} bytes of blob {self.key}")
        self._hasher.update(data)
        self.spool_file.write(data)

    def finish(self) -> None:
        """Verify, store, record; raises ``IngestError`` (and keeps nothing) if the bytes are not the blob."""
        try:
            if self.seen != self.size:
                raise IngestError(f"blob {self.key}: {self.seen} of {self.size} bytes")
            if self._hasher.hexdigest() != self.key:
                raise IngestError(f"blob {self.key}: the bytes do not hash to its name")
            self.spool_file.close()
            self.store.ingest(self.key, self.spool_file.path)
        finally:
            self.spool_file.finish()
        with self.engine.begin() as conn:
            records.add_blob(conn, self.key, self.size)

    def abort(self) -> None:
        self.spool_file.finish()


def begin_ingest(store: BlobStore, spool: Spool, engine: Engine, key: str, size: int,
                 wait: float = 600.0) -> Ingest | None:
    """An ``Ingest`` for the blob, or None if it is stored already (or was stored by another process
    filling it meanwhile: then it is only recorded)."""
    deadline = time.monotonic() + wait
    while True:
        if store.stat(key) == size:
            with engine.begin() as conn:
                records.add_blob(conn, key, size)
            return None
        spool_file = spool.begin(key)
        if spool_file is not None:
            return Ingest(store, engine, spool_file, key, size)
        if time.monotonic() > deadline:
            raise IngestError(f"blob {key}: another process has been filling it for {wait:.0f}s")
        time.sleep(0.5)
