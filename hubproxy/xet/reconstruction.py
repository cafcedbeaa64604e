"""A file's reconstruction: which chunk runs of which xorbs make the bytes ``[start, end)`` of it.

Terms come in file order (they may repeat a xorb, or overlap); per xorb, the byte ranges to fetch cover
every term of it, merged where they touch. ``offset`` is how many unpacked bytes of the first term to skip.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubproxy.xet.registry import StoredChunk, XetFile


@dataclass(frozen=True)
class Term:
    xorb: bytes
    start: int
    end: int
    size: int


@dataclass
class Plan:
    offset: int
    terms: list[Term]
    #: per xorb: merged ``(first chunk, end chunk, first byte, last byte inclusive)``
    fetch: dict[bytes, list[tuple[int, int, int, int]]]


def plan(f: XetFile, tables: dict[bytes, list[StoredChunk]], start: int, end: int) -> Plan:
    """The reconstruction of ``[start, end)`` (``end`` already clipped to the file's size, ``start < end``)."""
    terms: list[Term] = []
    offset = 0
    at = 0  # file offset of the current segment
    for segment in f.segments:
        if at + segment.size <= start:
            at += segment.size
            continue
        if at >= end:
            break
        chunks = tables[segment.xorb]
        first, last, pos = segment.start, segment.end, at
        while first < last - 1 and pos + chunks[first].size <= start:  # whole chunks before the range
            pos += chunks[first].size
            first += 1
        tail = pos + sum(c.size for c in chunks[first:last])
        while last - 1 > first and tail - chunks[last - 1].size >= end:  # whole chunks after it
            tail -= chunks[last - 1].size
            last -= 1
        if not terms:
            offset = start - pos
        terms.append(Term(segment.xorb, first, last, sum(c.size for c in chunks[first:last])))
        at += segment.size
    return Plan(offset, terms, _fetch(terms, tables))


def _fetch(terms: list[Term], tables: dict[bytes, list[StoredChunk]]) -> dict[bytes, list[tuple[int, int, int, int]]]:
    runs: dict[bytes, list[tuple[int, int]]] = {}
    for t in terms:
        runs.setdefault(t.xorb, []).append((t.start, t.end))
    out: dict[bytes, list[tuple[int, int, int, int]]] = {}
    for xorb, spans in runs.items():
        merged: list[list[int]] = []
        for s, e in sorted(spans):
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        chunks = tables[xorb]
        out[xorb] = [(s, e, chunks[s].start, chunks[e - 1].end - 1) for s, e in merged]
    return out

