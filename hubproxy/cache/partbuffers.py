"""Reading a filled part of a spool file for the store's upload, into page-aligned buffers reused from part to part.

Where the fill wrote the spool past the page cache (``SpoolFile.direct``), a part is read with direct I/O: its
bytes are not in the page cache, and reading them through it would make new page-cache pages for bytes read once,
then copy them into a new ``bytes`` object whose pages are new as well (on the VMs we measure on, the first touch
of a new page costs more than moving the byte). Read this way, the disk puts them straight into a buffer the
process already has. A spool written through the page cache is read from it, into the same reused buffers.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading
from collections.abc import Iterator

from hubproxy.cache.lanebuffers import ALIGN

#: Buffers grow in steps of this, so that parts of nearly one size share them.
GROWTH = 1 << 20


class PartBuffers:
    """Page-aligned buffers for the parts being uploaded: one taken per part while it is read and sent, given back
    after; at most ``idle`` are kept between parts (the others are unmapped)."""

    def __init__(self, idle: int) -> None:
        self.idle = idle
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def read(self, path: str, offset: int, length: int, direct: bool) -> Iterator[memoryview]:
        """Bytes ``[offset, offset + length)`` of the file at ``path``, valid until the ``with`` block ends.
        ``direct``: read with direct I/O (where the filesystem refuses it, through the page cache)."""
        start = offset - offset % ALIGN
        span = -(-(offset + length - start) // ALIGN) * ALIGN
        buf = self._take(span)
        try:
            view = memoryview(buf)[:span]
            got = _read_direct(path, view, start) if direct else None
            if got is None:
                got = _read_paged(path, view, start)
            if got < offset + length - start:
                raise OSError(f"the file holds {max(0, got - (offset - start))} of the part's {length} bytes "
                              f"at {offset}")
            yield view[offset - start:offset - start + length]
        finally:
            self._give(buf)

    def _take(self, size: int) -> mmap.mmap:
        with self._lock:
            for i, buf in enumerate(self._free):
                if len(buf) >= size:
                    return self._free.pop(i)
        # Private: a shared anonymous mapping would be shared memory (shmem), whose pages cost more to make.
        return mmap.mmap(-1, -(-size // GROWTH) * GROWTH, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def _give(self, buf: mmap.mmap) -> None:
        """Keep ``buf`` for the next part, or let it go (unmapped once no view of it is left)."""
        with self._lock:
            if len(self._free) < self.idle:
                self._free.append(buf)

    def kept_bytes(self) -> int:
        """Bytes of the buffers kept between parts."""
        with self._lock:
            return sum(len(buf) for buf in self._free)


def _read_direct(path: str, view: memoryview, offset: int) -> int | None:
    """Bytes read into ``view`` from ``offset`` with direct I/O (aligned); None if the filesystem refuses it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None
        raise
    try:
        return _read_into(fd, view, offset, short_ends=True)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None
        raise
    finally:
        os.close(fd)


def _read_paged(path: str, view: memoryview, offset: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read_into(fd, view, offset)
    finally:
        os.close(fd)


def _read_into(fd: int, view: memoryview, offset: int, short_ends: bool = False) -> int:
    """Fill ``view`` from ``offset`` of ``fd`` (short only at the end of the file); the bytes read.
    ``short_ends``: a short read is the file's end (direct I/O, where the next read would not be aligned)."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        got += n
        if n == 0 or (short_ends and got < len(view)):
            break
    return got
