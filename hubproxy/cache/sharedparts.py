"""A parallel fill's parts as the other processes on the same spool see them.

The filler publishes its contiguous prefix in the lock file (``spool.py``); readers of the filler's own
process also get the parts written beyond it (``partmap.py``). A process following the fill announces
itself by creating ``<key>.want``; from then on the filler also writes the parts it holds beyond the
prefix into ``<key>.parts``, replaced whole by a rename so that a reader never sees half a list, and
the follower answers a range far ahead of the prefix from them as the filler's own readers do. A
follower whose reader waits beyond the prefix appends the offset to ``<key>.want``; the filler reads
the new lines as it publishes and fetches the parts holding them next. Both files are hints: a follower
that cannot read them waits for the prefix, and a lost want only costs order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from hubproxy.cache.partmap import reach

#: First line of a parts file: whether parts far ahead can still be fetched before the prefix reaches them.
_PARALLEL, _SINGLE = b"parallel", b"single"


def write_parts(path: str, parallel: bool, extents: list[tuple[int, int]]) -> None:
    """Replace the parts file with ``extents`` (``(start, end)`` of written bytes beyond the prefix). A failure
    is not the fill's: followers then wait for the prefix. (The temporary name ends like the parts file's, so
    that a process starting meanwhile and cleaning the spool leaves it to the live filler.)"""
    body = (_PARALLEL if parallel else _SINGLE) + b"\n" + b"".join(b"%d %d\n" % e for e in extents)
    tmp = f"{path}.{os.getpid()}.parts"
    try:
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read_parts(path: str) -> tuple[bool, list[tuple[int, int]]] | None:
    """The parallel flag and the extents a filler published; None if there are none (or none readable)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    lines = raw.split(b"\n")
    if not raw.endswith(b"\n") or lines[0] not in (_PARALLEL, _SINGLE):
        return None
    extents = []
    for line in lines[1:-1]:
        start, _, end = line.partition(b" ")
        if not (start.isdigit() and end.isdigit()):
            return None
        extents.append((int(start), int(end)))
    return lines[0] == _PARALLEL, sorted(extents)


class Wants:
    """The filler's side of ``<key>.want``: whether anyone follows, and the offsets asked since the last look."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._read = 0

    def followed(self) -> bool:
        return os.path.exists(self.path)

    def new(self) -> list[int]:
        """Offsets appended since the last call (whole lines only)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._read)
                raw = f.read()
        except FileNotFoundError:
            return []
        whole = raw[: raw.rfind(b"\n") + 1]
        self._read += len(whole)
        return [int(line) for line in whole.split(b"\n") if line.isdigit()]


def announce(path: str, part_path: str) -> None:
    """Tell the filler that this process follows its fill (creates ``<key>.want``), unless the fill ended: its
    filler removes the file when it finishes, and one made after that would stay behind."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
        if not os.path.exists(part_path):
            os.unlink(path)


def _append(path: str, pos: int) -> None:
    with contextlib.suppress(OSError):  # the fill ended meanwhile: nothing to ask for
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"%d\n" % pos)
        finally:
            os.close(fd)


class FollowedParts:
    """Another process's fill, beyond its prefix, as this process last read it (``cache/partmap.Ahead``)."""

    def __init__(self, want_path: str) -> None:
        self.want_path = want_path
        #: Until the filler says it fetches in one stream, far ranges wait for its parts (not a second fetch).
        self.parallel = True
        self._extents: list[tuple[int, int]] = []
        self._asked: set[int] = set()

    def update(self, published: tuple[bool, list[tuple[int, int]]]) -> bool:
        """Take a newly read parts file; whether anything changed."""
        parallel, extents = published
        changed = parallel != self.parallel or extents != self._extents
        self.parallel, self._extents = parallel, extents
        return changed

    def extent(self, pos: int) -> int:
        return reach(pos, self._extents)

    def want(self, pos: int) -> None:
        if pos not in self._asked:
            self._asked.add(pos)
            asyncio.get_running_loop().run_in_executor(None, _append, self.want_path, pos)
