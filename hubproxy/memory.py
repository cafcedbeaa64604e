"""Keeping the process's resident memory near what it uses (glibc's allocator; elsewhere this does nothing).

Large buffers (a fill's batches, S3 pieces) are allocated and freed in worker threads, and glibc keeps
freed memory in one arena per thread unless capped: a hot 1 GiB file read by 8 clients peaked near
250 MB without the cap, 120 MB with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: ``mallopt`` parameter: the most malloc arenas.
M_ARENA_MAX = -8

_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _libc.mallopt  # noqa: B018 - glibc only
except (OSError, AttributeError):
    _libc = None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas: chunks freed in worker threads otherwise stay resident."""
    if _libc is not None:
        _libc.mallopt(M_ARENA_MAX, arenas)

