"""The C library, loaded once, for the calls Python's ``os`` module does not offer as hubproxy needs them:
``fallocate`` without glibc's fallback of writing zeros (``os.posix_fallocate`` writes a whole blob of zeros
on NFS), ``mallopt`` and ``malloc_trim``. None where it cannot be loaded; callers then do without."""

from __future__ import annotations

import ctypes
import ctypes.util

LIBC: ctypes.CDLL | None
try:
    LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:
    LIBC = None
