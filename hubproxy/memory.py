"""Keeping the process's resident memory near what it uses (glibc's allocator; elsewhere this does nothing).

Large buffers (a fill's batches, S3 pieces) are allocated and freed in worker threads, and glibc keeps
freed memory in one arena per thread unless capped: a hot 1 GiB file read by 8 clients peaked near
250 MB without the cap, 120 MB with it.
"""

from __future__ import annotations

from hubproxy.libc import LIBC

#: ``mallopt`` parameter: the most malloc arenas.
M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas: chunks freed in worker threads otherwise stay resident."""
    mallopt = getattr(LIBC, "mallopt", None)  # glibc only
    if mallopt is not None:
        mallopt(M_ARENA_MAX, arenas)

