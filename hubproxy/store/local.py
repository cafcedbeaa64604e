"""Blobs on local disk or an NFS mount: temp file on the same filesystem, fsync, atomic rename.

Layout under the data dir: ``blobs/<k[:2]>/<key>`` for verified blobs, and ``tmp/<key>.part``
with its ``tmp/<key>.lock`` for a fill in progress. Only ``blobs/`` is ever served. The lock
(``flock``) makes one process the filler of a blob while others on the same folder follow its
``.part`` file; the kernel releases it when the filler dies, so a crash never blocks a blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from hubproxy.store.base import BlobHasher, StoreUnavailable, is_blob_key

log = logging.getLogger(__name__)


def _try_lock(path: str) -> int | None:
    """An exclusive flock on ``path`` (created if needed), or None if another process holds it.

    The lock is only valid if the file we locked is still the one at ``path`` (a finishing
    filler unlinks it), so that is checked after locking.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


class LocalFill:
    """This process's fill of one blob: ``tmp/<key>.part`` becomes ``blobs/.../<key>`` on commit.

    A ``.part`` left by a filler that died (its lock is free) is continued, not restarted:
    ``resume_from`` says how many bytes it holds; the filler re-hashes them and fetches the rest.
    """

    def __init__(self, store: LocalBlobStore, key: str, lock_fd: int, resume: bool = False) -> None:
        self.store = store
        self.key = key
        self.tmp_path = store.part_path(key)
        self._lock_fd = lock_fd
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if resume else os.O_TRUNC)
        self._fd = os.open(self.tmp_path, flags, 0o644)
        self.resume_from = os.fstat(self._fd).st_size
        self._closed = False

    def restart(self) -> None:
        """Drop the bytes of an earlier filler (they cannot be used) and start from byte 0."""
        os.ftruncate(self._fd, 0)
        self.resume_from = 0

    def write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def close_file(self) -> None:
        """fsync and close the spool file (it stays in place, the lock stays held)."""
        if not self._closed:
            os.fsync(self._fd)
            os.close(self._fd)
            self._closed = True

    def commit(self) -> None:
        """fsync, then rename into place (atomic on one filesystem), then release the lock."""
        self.close_file()
        final = self.store.path(self.key)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(self.tmp_path, final)
        dir_fd = os.open(os.path.dirname(final), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._release()

    def abort(self) -> None:
        if not self._closed:
            os.close(self._fd)
            self._closed = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)
        self._release()

    def _release(self) -> None:
        if self._lock_fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.store.lock_path(self.key))
            os.close(self._lock_fd)
            self._lock_fd = -1


class LocalBlobStore:
    """A folder of verified blobs named by their hash."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def clean_tmp(self) -> int:
        """Remove fills whose filler is gone (a crash); fills other live processes hold stay."""
        removed = 0
        for entry in self.tmp_dir.iterdir():
            key = entry.name.split(".", 1)[0]
            if not is_blob_key(key) or not entry.name.endswith(".part"):
                if not entry.name.endswith(".lock"):
                    entry.unlink(missing_ok=True)
                continue
            fd = _try_lock(self.lock_path(key))
            if fd is None:
                continue  # another process is filling it right now
            try:
                entry.unlink(missing_ok=True)
                removed += 1
                os.unlink(self.lock_path(key))
            finally:
                os.close(fd)
        return removed

    def path(self, key: str) -> str:
        if not is_blob_key(key):
            raise ValueError(f"not a blob key: {key!r}")
        return str(self.blob_dir / key[:2] / key)

    def part_path(self, key: str) -> str:
        if not is_blob_key(key):
            raise ValueError(f"not a blob key: {key!r}")
        return str(self.tmp_dir / f"{key}.part")

    def lock_path(self, key: str) -> str:
        return self.part_path(key)[: -len(".part")] + ".lock"

    def has(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def size(self, key: str) -> int | None:
        try:
            return os.stat(self.path(key)).st_size
        except FileNotFoundError:
            return None

    def begin_fill(self, key: str, resume: bool = False) -> LocalFill | None:
        """Become the filler of ``key``, or None if another process already is.

        ``resume``: keep what a dead filler left in the spool file (the caller re-hashes it and continues);
        otherwise the spool file starts empty.
        """
        fd = _try_lock(self.lock_path(key))
        if fd is None:
            return None
        if self.has(key):  # finished by another process just before we locked
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path(key))
            os.close(fd)
            return None
        return LocalFill(self, key, fd, resume)

    def fill_progress(self, key: str) -> tuple[int | None, bool]:
        """Bytes another process's fill has written (None: no such fill), and whether its filler lives."""
        try:
            written = os.stat(self.part_path(key)).st_size
        except FileNotFoundError:
            return None, False
        try:
            fd = os.open(self.lock_path(key), os.O_RDONLY)
        except FileNotFoundError:
            return written, False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return written, True
        finally:
            os.close(fd)
        return written, False

    def ping(self) -> None:
        for folder in (self.blob_dir, self.tmp_dir):
            if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
                raise StoreUnavailable(f"{folder} is not readable and writable")

    def free_bytes(self) -> int:
        """Space left on the store's filesystem for fills."""
        st = os.statvfs(self.tmp_dir)
        return st.f_bavail * st.f_frsize

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))

    def local_path(self, key: str) -> str | None:
        return self.path(key)

    async def reader(self, key: str, start: int, end: int, chunk: int) -> AsyncIterator[bytes] | None:
        try:
            fd = await asyncio.to_thread(os.open, self.path(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        return read_fd_range(fd, start, end, chunk)

    def presign(self, key: str) -> str | None:
        return None

    def list_blobs(self) -> Iterator[str]:
        if not self.blob_dir.exists():
            return
        for sub in sorted(self.blob_dir.iterdir()):
            for path in sorted(sub.iterdir()):
                if is_blob_key(path.name):
                    yield path.name

    def hash_blob(self, key: str) -> str:
        path = self.path(key)
        hasher = BlobHasher(key, os.path.getsize(path))
        with open(path, "rb") as f:
            while chunk := f.read(8 << 20):
                hasher.update(chunk)
        return hasher.hexdigest()

    def quarantine(self, key: str) -> None:
        target = self.root / "quarantine"
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(self.path(key), target / key)


async def read_fd_range(fd: int, start: int, end: int, chunk_size: int) -> AsyncIterator[bytes]:
    """Yield bytes ``[start, end)`` of an open file, reading in worker threads; closes ``fd``."""
    try:
        pos = start
        while pos < end:
            data = await asyncio.to_thread(os.pread, fd, min(chunk_size, end - pos), pos)
            if not data:
                raise OSError("stored blob is shorter than its index entry")
            pos += len(data)
            yield data
    finally:
        os.close(fd)
