"""What hubproxy knows of Xet content: stored xorbs (with each chunk's place) and registered files (their
segments, verified sha256 and size). Tables ``xet_xorbs`` and ``xet_files``; all their SQL is here."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection

from hubproxy.db import upsert
from hubproxy.db.models import xet_files, xet_xorb_repos, xet_xorbs
from hubproxy.xet.shard import Segment

_CHUNK = struct.Struct("<QQI32s")  # byte start, byte end, unpacked size, hash
_SEGMENT = struct.Struct("<32sIIQ")  # xorb hash, first chunk, end chunk, unpacked bytes


@dataclass(frozen=True)
class StoredChunk:
    start: int
    end: int
    size: int
    hash: bytes


@dataclass(frozen=True)
class XetFile:
    hash: str
    sha256: str
    size: int
    segments: list[Segment]


def add_xorb(conn: Connection, name: str, length: int, chunks: list[StoredChunk]) -> None:
    packed = b"".join(_CHUNK.pack(c.start, c.end, c.size, c.hash) for c in chunks)
    upsert(conn, xet_xorbs, {"hash": name, "length": length, "chunks": packed, "created_at": time.time()},
           update=False)


def xorb_chunks(conn: Connection, name: str) -> list[StoredChunk] | None:
    packed = conn.execute(select(xet_xorbs.c.chunks).where(xet_xorbs.c.hash == name)).scalar()
    if packed is None:
        return None
    return [StoredChunk(*_CHUNK.unpack_from(packed, i)) for i in range(0, len(packed), _CHUNK.size)]


def add_xorb_repo(conn: Connection, name: str, repo_type: str, repo_id: str) -> None:
    upsert(conn, xet_xorb_repos, {"xorb": name, "repo_type": repo_type, "repo_id": repo_id}, update=False)


def xorb_repos(conn: Connection, name: str) -> list[tuple[str, str]]:
    """The repos a xorb was uploaded for or is used by."""
    return [(r[0], r[1]) for r in conn.execute(select(xet_xorb_repos.c.repo_type, xet_xorb_repos.c.repo_id)
                                               .where(xet_xorb_repos.c.xorb == name))]


def add_file(conn: Connection, f: XetFile) -> bool:
    """Register a file; False if it was known already."""
    if conn.execute(select(xet_files.c.hash).where(xet_files.c.hash == f.hash)).first() is not None:
        return False
    packed = b"".join(_SEGMENT.pack(s.xorb, s.start, s.end, s.size) for s in f.segments)
    upsert(conn, xet_files, {"hash": f.hash, "sha256": f.sha256, "size": f.size, "segments": packed,
                             "created_at": time.time()}, update=False)
    return True


def _file(row: object) -> XetFile:
    packed = row.segments  # type: ignore[attr-defined]
    segments = [Segment(*_SEGMENT.unpack_from(packed, i)) for i in range(0, len(packed), _SEGMENT.size)]
    return XetFile(row.hash, row.sha256, row.size, segments)  # type: ignore[attr-defined]


def file_by_hash(conn: Connection, name: str) -> XetFile | None:
    row = conn.execute(select(xet_files).where(xet_files.c.hash == name)).first()
    return _file(row) if row else None


def file_by_sha256(conn: Connection, sha256: str) -> XetFile | None:
    row = conn.execute(select(xet_files).where(xet_files.c.sha256 == sha256).limit(1)).first()
    return _file(row) if row else None

