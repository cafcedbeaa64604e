"""The fill spool: where a blob grows while it is filled, before it is verified and handed to the store.

Layout under the data dir: ``tmp/<key>.part`` with its ``tmp/<key>.lock`` (and, while other processes
follow a parallel fill, ``tmp/<key>.parts`` and ``tmp/<key>.want``: ``sharedparts.py``). The lock (``flock``) makes
one process the filler of a blob while others on the same folder follow its ``.part`` file (several
workers, or replicas sharing an NFS export); the kernel releases it when the filler dies, so a crash
never blocks a blob, and whoever takes the fill over continues the ``.part`` it left (``resume``).
A parallel fill writes parts at their offsets, so the file's size says nothing about which bytes are
there: the filler publishes its contiguous prefix (the bytes from 0 that are all written) in the lock
file, and followers and whoever takes over read that number.
Whatever the store (local disk, NFS, S3), fills spool here: readers follow a growing local file.

Where the filesystem takes direct I/O (``O_DIRECT``), a fill's lanes write their whole pages with it: a fast single
stream (``write_aligned``) and a parallel fill's parts (``write_unpaged``). They go to the disk without entering the
page cache, whose new pages cost more CPU than the copy into them (``docs/architecture.md``). Whoever reads such bytes
from the file (the hash, readers, followers) gets them from the disk, into the page cache.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import threading
from pathlib import Path

from hubproxy.cache.lanebuffers import ALIGN
from hubproxy.cache.sharedparts import read_parts
from hubproxy.libc import LIBC
from hubproxy.observability.metrics import FILL_WRITTEN_BYTES
from hubproxy.store.base import is_blob_key

DIRECT_BYTES = FILL_WRITTEN_BYTES.labels("direct")
PAGED_BYTES = FILL_WRITTEN_BYTES.labels("page_cache")


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


class SpoolFile:
    """This process's fill of one blob. ``resume_from``: bytes a dead filler left (continued, after re-hashing)."""

    def __init__(self, spool: Spool, key: str, lock_fd: int, resume: bool) -> None:
        self.spool = spool
        self.key = key
        self.path = spool.part_path(key)
        self._lock_fd = lock_fd
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | (0 if resume else os.O_TRUNC), 0o644)
        held = _read_prefix(lock_fd) if resume else 0
        length = os.fstat(self._fd).st_size
        self.resume_from = min(held, length)
        #: Ranges beyond ``resume_from`` that the stopped filler shared with followers (``sharedparts.py``): they
        #: may have been served, so they are kept, not fetched again, and the final hash covers them.
        self.left_ahead: list[tuple[int, int]] = []
        shared = read_parts(spool.parts_path(key)) if resume else None
        if shared is not None:
            clipped = ((a, min(b, length)) for a, b in shared[1] if a >= self.resume_from)
            self.left_ahead = [(a, b) for a, b in clipped if b > a]
        elif not resume:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spool.parts_path(key))
        self._end = self.resume_from  # where ``write`` appends
        #: The same file opened for direct I/O (-1: not offered, or the filesystem refused it).
        self._direct_fd = -1
        #: The filesystem refused a direct write (the descriptor stays open until ``close``: writers may use it).
        self._direct_refused = False
        if spool.direct_writes:
            with contextlib.suppress(OSError):
                self._direct_fd = os.open(self.path, os.O_WRONLY | os.O_DIRECT)
        self._closed = False
        #: Up to where the page cache was asked to hold the bytes for followers (``publish``).
        self._paged_in = self.resume_from
        # The lock file's one block is taken now, before the spool file is reserved: a disk that fills up
        # mid-fill must not fail the first publication of the prefix. (A disk already full shows at the
        # reservation, and the request passes through.)
        with contextlib.suppress(OSError):
            self.publish(self.resume_from)
        #: Writers of this file take turns here. The kernel serializes writes to one file anyway (the inode's
        #: lock), but its waiters spin while the writer runs: a parallel fill's lanes spent 12% of the machine's
        #: CPU samples spinning there during a 1 GiB fill (perf). Waiting here, they sleep and leave the core.
        self._writing = threading.Lock()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` after what was written so far, and publish the new prefix."""
        self.write_at([data], self._end)
        self._end += len(data)
        self.publish(self._end)

    def write_at(self, buffers: list[bytes] | list[bytes | bytearray | memoryview], offset: int) -> None:
        """Write ``buffers`` one after another from ``offset`` (one system call per batch); threads take turns."""
        views = [memoryview(b) for b in buffers if len(b)]
        PAGED_BYTES.inc(sum(len(v) for v in views))
        with self._writing:
            while views:
                n = os.pwritev(self._fd, views[:512], offset)  # IOV_MAX is 1024 on Linux
                offset += n
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if n:
                    views[0] = views[0][n:]

    @property
    def direct(self) -> bool:
        """Whether ``write_aligned`` and ``write_unpaged`` write whole pages with direct I/O."""
        return self._direct_fd >= 0 and not self._direct_refused

    def write_aligned(self, data: memoryview, offset: int) -> None:
        """Write ``data`` at ``offset``, where ``data``'s address is ``offset`` modulo ``ALIGN`` (a buffer of
        ``lanebuffers.LaneBuffers(aligned=True)``): its whole pages with direct I/O, the partial pages at either end
        through the page cache (a page is thus written one way only). Without direct I/O, or if the filesystem
        refuses it, all through the page cache. The write lock is held across the direct write: right for a fill's
        one direct lane; several direct writers would queue on it while each, back from the disk, waits for the
        interpreter's lock (tried with parallel lanes: 12.8 ms per MiB against 0.5 ms for the call;
        ``docs/benchmark-history.md``): they use ``write_unpaged``."""
        with self._writing:
            self._write_split(data, offset, locked=True)

    def write_unpaged(self, data: memoryview, offset: int) -> None:
        """``write_aligned`` for one of several writers at once, each in a part of its own (a parallel fill's
        lanes): only the partial pages at either end, where two parts may meet, take the write lock; the whole
        pages are this writer's alone and go to the disk outside it."""
        self._write_split(data, offset, locked=False)

    def _write_split(self, data: memoryview, offset: int, locked: bool) -> None:
        head = min(len(data), -offset % ALIGN)
        body = (len(data) - head) // ALIGN * ALIGN
        paged = [(data[:head], offset), (data[head + body:], offset + head + body)]
        if self.direct and body:
            try:
                _pwrite_all(self._direct_fd, data[head:head + body], offset + head)
                DIRECT_BYTES.inc(body)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._direct_refused = True  # this filesystem takes no direct I/O after all
                paged.append((data[head:head + body], offset + head))
        else:
            paged.append((data[head:head + body], offset + head))
        for piece, at in paged:
            if len(piece):
                if locked:
                    PAGED_BYTES.inc(len(piece))
                    _pwrite_all(self._fd, piece, at)
                else:
                    self.write_at([piece], at)

    def reserve(self, size: int) -> bool:
        """Allocate the file's ``size`` bytes on disk up front, where the filesystem can (ext4, xfs): writing
        into allocated blocks costs a fraction of allocating them write by write, and a full disk shows now.
        True if the blocks were allocated: they then read as zeros without disk I/O."""
        return reserve_space(self._fd, size)

    def publish(self, prefix: int, followed: bool = False) -> None:
        """Tell followers that bytes ``[0, prefix)`` are written. ``followed`` (another process reads this file):
        first have the kernel read into the page cache, in the background, what direct writes put past it since
        the last time, so that the followers' ``sendfile`` finds it there instead of waiting on the disk (on the
        Intel VM two clients of a cold GiB in different workers took 3.3 s that way; 1.9-2.0 s with this)."""
        if followed and self.direct and prefix > self._paged_in:
            with contextlib.suppress(OSError):  # only a hint
                os.posix_fadvise(self._fd, self._paged_in, prefix - self._paged_in, os.POSIX_FADV_WILLNEED)
            self._paged_in = prefix
        os.pwrite(self._lock_fd, b"%020d" % prefix, 0)

    def restart(self) -> None:
        """Drop the bytes of an earlier filler (they cannot be used) and start from byte 0."""
        os.ftruncate(self._fd, 0)
        self.resume_from = self._end = 0
        self.left_ahead = []
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.spool.parts_path(self.key))
        self.publish(0)

    def close(self) -> None:
        """fsync and close the file (it stays in place, the lock stays held): ready to be stored."""
        if not self._closed:
            os.fsync(self._fd)
            self._close_files()

    def finish(self) -> None:
        """Remove what is left (the file, unless the store took it) and release the lock."""
        if not self._closed:
            self._close_files()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        for side in (self.spool.parts_path(self.key), self.spool.want_path(self.key)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(side)
        if self._lock_fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.spool.lock_path(self.key))
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _close_files(self) -> None:
        os.close(self._fd)
        if self._direct_fd >= 0:
            os.close(self._direct_fd)
            self._direct_fd = -1
        self._closed = True


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


_fallocate = getattr(LIBC, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def reserve_space(fd: int, size: int) -> bool:
    """``fallocate(2)`` the first ``size`` bytes of ``fd``; True if it did. Nothing (False) where the filesystem
    cannot (NFS, tmpfs on old kernels) or there is no ``fallocate``. Raises ``OSError`` (ENOSPC) if the disk
    cannot hold them."""
    if size <= 0 or _fallocate is None:
        return False
    if _fallocate(fd, 0, 0, size) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))


def _read_prefix(fd: int) -> int:
    """The prefix a filler published in its lock file (0 if it published none)."""
    raw = os.pread(fd, 20, 0)
    return int(raw) if len(raw) == 20 and raw.isdigit() else 0


#: ``statfs`` magic numbers of filesystems whose files live on another machine (NFS, SMB, Ceph, FUSE, Lustre,
#: GPFS, AFS): reading even their allocated, unwritten bytes asks the server.
NETWORK_FILESYSTEMS = frozenset({0x6969, 0xFF534D42, 0xFE534D42, 0x00C36400, 0x65735546, 0x0BD00BD0,
                                 0x47504653, 0x5346414F, 0x6B414653})


#: ``statfs`` magic number of tmpfs.
TMPFS = 0x01021994


def filesystem_type(path: Path | str) -> int | None:
    """The ``statfs(2)`` magic number of the filesystem holding ``path`` (None where it cannot be read)."""
    if LIBC is None:
        return None
    buf = ctypes.create_string_buffer(256)  # struct statfs: 120 bytes on 64-bit Linux; f_type comes first
    if LIBC.statfs(os.fsencode(str(path)), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


class Spool:
    """The ``tmp`` folder of the data dir."""

    def __init__(self, data_dir: Path, direct_writes: bool = False) -> None:
        self.folder = Path(data_dir).resolve() / "tmp"
        self.folder.mkdir(parents=True, exist_ok=True)
        kind = filesystem_type(self.folder)
        #: Whether the spool is on a network filesystem (then its pages are not made ahead of the writers).
        self.network_filesystem = kind in NETWORK_FILESYSTEMS
        #: Whether fills may write whole pages with direct I/O: never on a network filesystem (other machines
        #: read the file there, and its client caches pages of its own), nor on tmpfs (its pages are the file).
        self.direct_writes = direct_writes and hasattr(os, "O_DIRECT") and kind != TMPFS and not self.network_filesystem

    def part_path(self, key: str) -> str:
        if not is_blob_key(key):
            raise ValueError(f"not a blob key: {key!r}")
        return str(self.folder / f"{key}.part")

    def lock_path(self, key: str) -> str:
        return self.part_path(key)[: -len(".part")] + ".lock"

    def parts_path(self, key: str) -> str:
        return self.part_path(key)[: -len(".part")] + ".parts"

    def want_path(self, key: str) -> str:
        return self.part_path(key)[: -len(".part")] + ".want"

    def begin(self, key: str, resume: bool = False) -> SpoolFile | None:
        """Become the filler of ``key``, or None if another process is. ``resume``: keep a dead filler's bytes."""
        fd = _try_lock(self.lock_path(key))
        if fd is None:
            return None
        return SpoolFile(self, key, fd, resume)

    def progress(self, key: str) -> tuple[int | None, bool]:
        """The prefix another process's fill has written (None: no such fill), and whether its filler lives."""
        if not os.path.exists(self.part_path(key)):
            return None, False
        try:
            fd = os.open(self.lock_path(key), os.O_RDONLY)
        except FileNotFoundError:
            written = 0
        else:
            try:
                written = _read_prefix(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return written, True
            finally:
                os.close(fd)
        # No filler holds the lock: it died, or it finished since the first look (a filler stores or removes its
        # file before it lets go of the lock). Taken for dead then, it would be taken over after its blob was stored.
        if not os.path.exists(self.part_path(key)):
            return None, False
        return written, False

    def clean(self) -> int:
        """Remove fills whose filler is gone (a crash); fills other live processes hold stay."""
        removed = 0
        for entry in self.folder.iterdir():
            key = entry.name.split(".", 1)[0]
            if not is_blob_key(key) or not entry.name.endswith((".part", ".parts", ".want")):
                if not entry.name.endswith(".lock"):
                    entry.unlink(missing_ok=True)
                continue
            fd = _try_lock(self.lock_path(key))
            if fd is None:
                continue  # another process is filling it right now
            try:
                entry.unlink(missing_ok=True)
                removed += entry.name.endswith(".part")
                os.unlink(self.lock_path(key))
            finally:
                os.close(fd)
        return removed

    def free_bytes(self) -> int:
        """Space left where fills grow."""
        st = os.statvfs(self.folder)
        return st.f_bavail * st.f_frsize

