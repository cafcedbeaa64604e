"""Keeping the process's resident memory near what it uses (glibc's allocator; elsewhere this does nothing).

Large buffers (a fill's batches, S3 pieces) are allocated and freed in worker threads, and glibc keeps
freed memory in one arena per thread unless capped: a hot 1 GiB file read by 8 clients peaked near
250 MB without the cap, 120 MB with it. Even capped, glibc keeps the chunks a finished fill freed
inside its heap (only the heap's top is returned by itself): ``release_free_memory`` hands those pages
back after each fill, about 8-10 MB per worker that has filled a blob.
"""

from __future__ import annotations

import threading

from hubproxy.libc import LIBC

#: ``mallopt`` parameter: the most malloc arenas.
M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas: chunks freed in worker threads otherwise stay resident."""
    mallopt = getattr(LIBC, "mallopt", None)  # glibc only
    if mallopt is not None:
        mallopt(M_ARENA_MAX, arenas)


def release_free_memory() -> None:
    """(Blocking, a few ms.) Return the free pages inside glibc's heaps to the system (``malloc_trim``)."""
    malloc_trim = getattr(LIBC, "malloc_trim", None)  # glibc only
    if malloc_trim is not None:
        malloc_trim(0)


class ByteBudget:
    """Bytes of buffers a process may hold for one purpose at once (a parallel read's parts, a fill's held parts):
    ``take`` what fits, ``give`` it back when done. Usable from any thread."""

    def __init__(self, total: int) -> None:
        self.total = self.left = total
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        """Count ``size`` bytes as held if they fit; False (nothing counted) if they do not."""
        with self._lock:
            if size > self.left:
                return False
            self.left -= size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.left += size
