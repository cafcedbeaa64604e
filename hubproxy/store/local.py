"""Blobs on local disk or an NFS mount: ``blobs/<k[:2]>/<key>`` under the data dir.

A verified fill is ingested by an atomic rename from the spool (same filesystem), followed by an
fsync of the folder, so a blob appears complete or not at all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterator
from pathlib import Path

from hubproxy.descriptors import open_for_reading
from hubproxy.store.base import StoreUnavailable, is_blob_key
from hubproxy.store.bodies import FileRange


class LocalBlobStore:
    """A folder of verified blobs named by their hash."""

    pool = None  # its calls are disk calls: the default pool's

    def __init__(self, root: Path, folder: str = "blobs") -> None:
        self.root = Path(root).resolve()
        self.blob_dir = self.root / folder
        self.blob_dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> str:
        if not is_blob_key(key):
            raise ValueError(f"not a blob key: {key!r}")
        return str(self.blob_dir / key[:2] / key)

    def stat(self, key: str) -> int | None:
        try:
            return os.stat(self.path(key)).st_size
        except FileNotFoundError:
            return None

    async def read(self, key: str, start: int, end: int, chunk: int) -> FileRange | None:
        try:
            fd = await open_for_reading(self.path(key))
        except FileNotFoundError:
            return None
        return FileRange(fd, start, end, chunk)

    def ingest(self, key: str, path: str) -> None:
        final = self.path(key)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(path, final)
        dir_fd = os.open(os.path.dirname(final), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def start_upload(self, key: str, size: int) -> None:
        return None  # ingest is a rename

    def abort_abandoned_uploads(self, older_than: float, keep: Collection[str] = ()) -> int:
        return 0  # no uploads: unfinished fills are in the spool, which the server cleans when it starts

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))

    def quarantine(self, key: str) -> None:
        target = self.root / "quarantine"
        target.mkdir(parents=True, exist_ok=True)
        os.replace(self.path(key), target / key)

    def list(self) -> Iterator[str]:
        if not self.blob_dir.exists():
            return
        for sub in sorted(self.blob_dir.iterdir()):
            for path in sorted(sub.iterdir()):
                if is_blob_key(path.name):
                    yield path.name

    def presign(self, key: str) -> str | None:
        return None

    def ping(self) -> None:
        if not os.access(self.blob_dir, os.R_OK | os.W_OK | os.X_OK):
            raise StoreUnavailable(f"{self.blob_dir} is not readable and writable")
