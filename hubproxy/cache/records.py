"""The cache's tables (blobs, pins, cache_events, blob_mismatches): all their SQL.

Functions take an open connection, so a caller can put several of them (and the revision index's) in
one transaction: a purge forgets a repo's rows, deletes the blobs nothing uses any more and records
the events every process applies, atomically.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.engine import Connection

from hubproxy.db import upsert
from hubproxy.db.models import blob_mismatches, blobs, cache_events, pins


# -- blobs ----------------------------------------------------------------------------------------
def add_blob(conn: Connection, key: str, size: int) -> None:
    now = time.time()
    upsert(conn, blobs, {"key": key, "size": size, "created_at": now, "last_access": now}, update=False)


def blob_sizes(conn: Connection) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in conn.execute(select(blobs.c.key, blobs.c.size))}


def total_size(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.sum(blobs.c.size), 0))).scalar_one())


def least_recently_used(conn: Connection) -> list[tuple[str, int]]:
    return [(r[0], int(r[1])) for r in conn.execute(select(blobs.c.key, blobs.c.size).order_by(blobs.c.last_access))]


def forget_blobs(conn: Connection, keys: Iterable[str]) -> int:
    """Delete blob records and record, in the same transaction, that they are gone (see ``events.py``);
    returns the bytes they held."""
    keys = list(keys)
    freed = 0
    for key in keys:
        size = conn.execute(select(blobs.c.size).where(blobs.c.key == key)).scalar()
        freed += int(size or 0)
        conn.execute(delete(blobs).where(blobs.c.key == key))
    now = time.time()
    if keys:
        conn.execute(cache_events.insert(), [{"kind": "blob", "blob": k, "ts": now} for k in keys])
    return freed


def touch(conn: Connection, counted: list[dict[str, object]]) -> list[str]:
    """Add hits and move last access forward (``counted``: ``{"k": key, "n": hits, "t": last access}``).
    Returns the keys with no record (yet: a first download is counted before its fill is stored)."""
    unknown = []
    for row in counted:
        result = conn.execute(update(blobs).where(blobs.c.key == row["k"]).values(
            hits=blobs.c.hits + row["n"], last_access=func.max(blobs.c.last_access, row["t"])
            if conn.dialect.name == "sqlite" else func.greatest(blobs.c.last_access, row["t"])))
        if result.rowcount == 0:
            unknown.append(str(row["k"]))
    return unknown


# -- pins -----------------------------------------------------------------------------------------
def pin(conn: Connection, repo_type: str, repo_id: str, commit: str, revision: str) -> None:
    upsert(conn, pins, {"repo_type": repo_type, "repo_id": repo_id, "commit": commit, "revision": revision,
                        "created_at": time.time()})


def unpin(conn: Connection, repo_type: str, repo_id: str, commit: str | None = None) -> int:
    where = [pins.c.repo_type == repo_type, pins.c.repo_id == repo_id] + ([pins.c.commit == commit] if commit else [])
    return conn.execute(delete(pins).where(and_(*where))).rowcount or 0


def pinned(conn: Connection) -> set[tuple[str, str, str]]:
    return {(r[0], r[1], r[2]) for r in conn.execute(select(pins.c.repo_type, pins.c.repo_id, pins.c.commit))}


# -- cache events ---------------------------------------------------------------------------------
def repo_forgotten(conn: Connection, repo_type: str, repo_id: str) -> None:
    conn.execute(cache_events.insert().values(kind="repo", repo_type=repo_type, repo_id=repo_id, ts=time.time()))


def last_event(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(cache_events.c.seq), 0))).scalar_one())


def events_after(conn: Connection, seq: int) -> list[tuple[int, str, str | None, str | None, str | None]]:
    rows = conn.execute(select(cache_events.c.seq, cache_events.c.kind, cache_events.c.repo_type,
                               cache_events.c.repo_id, cache_events.c.blob)
                        .where(cache_events.c.seq > seq).order_by(cache_events.c.seq).limit(10_000)).all()
    return [(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def prune_events(conn: Connection, older_than: float) -> None:
    conn.execute(delete(cache_events).where(cache_events.c.ts < older_than))


# -- failed verifications -------------------------------------------------------------------------
def record_mismatch(conn: Connection, key: str, at: float) -> None:
    upsert(conn, blob_mismatches, {"key": key, "at": at, "count": 0}, update=False)
    conn.execute(update(blob_mismatches).where(blob_mismatches.c.key == key)
                 .values(at=at, count=blob_mismatches.c.count + 1))


def mismatches_since(conn: Connection, since: float) -> dict[str, float]:
    return {r[0]: float(r[1]) for r in conn.execute(select(blob_mismatches.c.key, blob_mismatches.c.at)
                                                   .where(blob_mismatches.c.at > since))}


def prune_mismatches(conn: Connection, older_than: float) -> None:
    conn.execute(delete(blob_mismatches).where(blob_mismatches.c.at < older_than))
