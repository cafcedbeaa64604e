"""The parts of one fill: which are taken, how far each is written, and how far written bytes reach from an offset.

Parts are taken in order, except that a part a reader waits for (its range starts beyond the prefix:
``hf_transfer`` asks for every 10 MiB chunk of a file at once, a file system reads at any offset) is taken
before the others still waiting. Readers beyond the prefix read a part's bytes as soon as they are written,
so such a range is answered from the one fill instead of a second, unverified fetch from the upstream.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(eq=False)  # compared and hashed by identity: parts with equal fields are still different parts
class Part:
    """Bytes ``[start, end)`` of the blob; ``pos``: the next byte to write (all before it are written)."""

    start: int
    end: int
    pos: int


def plan(start: int, size: int, part_bytes: int, connections: int,
         written: list[tuple[int, int]] | None = None) -> list[Part]:
    """Split ``[start, size)`` into parts; a single part where parallel requests would not pay. ``written``:
    ranges beyond ``start`` already in the spool file (left by a filler that stopped, whose followers may have
    answered from them): they become complete parts, kept rather than fetched again, and the final hash
    covers them like every other byte."""
    parts: list[Part] = []
    pos = start
    for first, end in sorted(written or ()):
        first, end = max(first, pos), min(end, size)
        if end > first:
            parts += _split(pos, first, part_bytes, connections)
            parts.append(Part(first, end, end))
            pos = end
    return parts + _split(pos, size, part_bytes, connections)


def _split(start: int, end: int, part_bytes: int, connections: int) -> list[Part]:
    if end <= start:
        return []
    if connections < 2 or end - start < 2 * part_bytes:
        return [Part(start, end, start)]
    return [Part(s, min(s + part_bytes, end), s) for s in range(start, end, part_bytes)]


def reach(pos: int, written: Iterable[tuple[int, int]]) -> int:
    """Where the bytes written from ``pos`` on end, given ``written``: ``(start, end)`` of each written range, in
    order and not overlapping (a range ending where the next starts runs on into it)."""
    end_of_run = pos
    for start, end in written:
        if start > end_of_run:
            break
        end_of_run = max(end_of_run, end)
    return end_of_run


class Ahead(Protocol):
    """What a fill's readers see of its running download (``parts.PartedDownload``) beyond the prefix."""

    @property
    def parallel(self) -> bool:
        """Whether a part far ahead can be fetched before the prefix reaches it."""

    def extent(self, pos: int) -> int:
        """Where the written bytes that run on from ``pos`` end."""

    def want(self, pos: int) -> None:
        """A reader waits for byte ``pos``."""


class PartMap:
    """The parts of one fill, in blob order. Used on the event loop only."""

    def __init__(self, parts: list[Part], size: int) -> None:
        self.size = size
        #: A part was taken for a reader before parts ahead of it in the blob's order (read from any thread).
        self.reordered = False
        self._set(parts)

    def _set(self, parts: list[Part], taken: set[Part] | None = None) -> None:
        self.parts = parts
        self._starts = [p.start for p in parts]
        self._taken: set[Part] = {p for p in parts if p.pos == p.end} | (taken or set())
        self._wanted: list[Part] = []  # parts readers wait for, in the order they asked
        self._watched: set[Part] = set()  # parts readers wait on: their progress wakes the readers
        self._head = 0  # index of the first part not complete
        while self._head < len(parts) and parts[self._head].pos == parts[self._head].end:
            self._head += 1

    def __len__(self) -> int:
        return len(self.parts)

    @property
    def prefix(self) -> int:
        """Bytes from the first part's start that are all written."""
        return self.parts[self._head].pos if self._head < len(self.parts) else self.size

    def take(self) -> Part | None:
        """The next part to fetch (one a reader waits for first), or None when every part is taken."""
        while self._wanted:
            part = self._wanted.pop(0)
            if part not in self._taken:
                self._taken.add(part)
                skipped = self.parts[self._head:self._index(part.start)]
                self.reordered = self.reordered or any(p not in self._taken for p in skipped)
                return part
        for part in self.parts[self._head:]:
            if part not in self._taken:
                self._taken.add(part)
                return part
        return None

    def untaken(self) -> bool:
        return any(p not in self._taken for p in self.parts[self._head:])

    def join_untaken(self) -> None:
        """Make each run of parts not yet taken one part (one stream fetches it). Only while one connection
        runs, so that none of them is taken out of order yet."""
        joined: list[Part] = []
        for part in self.parts:
            last = joined[-1] if joined else None
            if last is not None and part not in self._taken and last not in self._taken and last.end == part.start:
                joined[-1] = Part(last.start, part.end, last.pos)
            else:
                joined.append(part)
        self._set(joined, {p for p in joined if p in self._taken})

    def only(self, part: Part) -> None:
        """``part`` (made to reach the blob's end) is now the one part: the upstream answered it whole."""
        part.end = self.size
        self._set([part], {part})

    def advance(self, part: Part, size: int) -> bool:
        """``size`` more bytes of ``part`` are written; whether a reader waits on it beyond the prefix."""
        part.pos += size
        parts = self.parts
        while self._head < len(parts) and parts[self._head].pos == parts[self._head].end:
            self._head += 1
        return part in self._watched

    def written_ahead(self) -> list[tuple[int, int]]:
        """``(start, end)`` of the bytes written in each part beyond the prefix."""
        return [(p.start, p.pos) for p in self.parts[self._head + 1:] if p.pos > p.start]

    def _index(self, pos: int) -> int:
        """Index of the part holding byte ``pos`` (-1 before the first)."""
        return bisect.bisect_right(self._starts, pos) - 1

    def extent(self, pos: int) -> int:
        """Where the written bytes that run on from ``pos`` end (``pos`` itself when it is not written yet)."""
        return reach(pos, ((p.start, p.pos) for p in self.parts[max(self._index(pos), 0):]))

    def want(self, pos: int) -> None:
        """A reader waits for byte ``pos``: fetch its part next if nobody has taken it, and wake the reader
        as it is written."""
        i = self._index(pos)
        if i < 0 or pos >= self.size:
            return
        part = self.parts[i]
        self._watched.add(part)
        if part not in self._taken and part not in self._wanted:
            self._wanted.append(part)
