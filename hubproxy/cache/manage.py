"""Cache operations: list, pin, unpin, purge, verify (scrub) and evict.

Each runs in one transaction over the revision index (``repos/rows.py``) and the cache's records
(``records.py``), deletes blobs from the store, and records the deletions as cache events that every
running process applies. Called by the admin service (command line and REST) and by the server's
maintenance loop (eviction).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict, dataclass

from sqlalchemy.engine import Connection, Engine

from hubproxy.cache import records
from hubproxy.errors import Conflict, NotFound
from hubproxy.hosted.rows import find_repo, hosted_blobs
from hubproxy.repos import rows
from hubproxy.store.base import BlobHasher, BlobStore, is_blob_key

log = logging.getLogger(__name__)


@dataclass
class CachedRevision:
    repo_type: str
    repo_id: str
    commit: str
    refs: list[str]
    files: int
    files_cached: int
    bytes_cached: int
    last_access: float | None
    hits: int
    pinned: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def list_cached(engine: Engine) -> list[CachedRevision]:
    """Every repo revision the index knows, with what of it is in the store."""
    with engine.connect() as conn:
        summaries = rows.revision_summaries(conn)
        names: dict[tuple[str, str, str], list[str]] = {}
        for repo_type, repo_id, name, commit in rows.all_refs(conn):
            names.setdefault((repo_type, repo_id, commit), []).append(name or "(default)")
        pinned = records.pinned(conn)
    return [CachedRevision(s["repo_type"], s["repo_id"], s["commit"],
                           sorted(names.get((s["repo_type"], s["repo_id"], s["commit"]), [])), s["files"],
                           s["files_cached"], s["bytes_cached"], s["last_access"], s["hits"],
                           (s["repo_type"], s["repo_id"], s["commit"]) in pinned) for s in summaries]


def _held(conn: Connection, repo_type: str, repo_id: str, revision: str) -> str:
    commit = rows.resolve_held(conn, repo_type, repo_id, revision)
    if commit is None:
        raise NotFound(f"{repo_type} {repo_id}@{revision} is not cached (prefetch it first)")
    return commit


def pin(engine: Engine, repo_type: str, repo_id: str, revision: str) -> str:
    """Keep a repo revision's blobs from eviction; returns the commit pinned."""
    with engine.begin() as conn:
        commit = _held(conn, repo_type, repo_id, revision)
        records.pin(conn, repo_type, repo_id, commit, revision)
    return commit


def unpin(engine: Engine, repo_type: str, repo_id: str, revision: str | None = None) -> int:
    """Remove pins of a repo (one revision, or all); returns how many were removed."""
    with engine.begin() as conn:
        if find_repo(conn, repo_type, repo_id) is not None:
            raise Conflict(f"{repo_id} is a hosted repo, not a cached one: delete it with delete_repo")
        commit = _held(conn, repo_type, repo_id, revision) if revision else None
        return records.unpin(conn, repo_type, repo_id, commit)


def _delete(conn: Connection, store: BlobStore, keys: set[str]) -> tuple[int, int]:
    """Delete blobs from the store and their records (with the events); returns (blobs, bytes)."""
    known = records.blob_sizes(conn)
    gone = sorted(k for k in keys if is_blob_key(k))
    for key in gone:
        store.delete(key)
    freed = records.forget_blobs(conn, gone)
    return sum(1 for k in gone if k in known), freed


def purge(engine: Engine, store: BlobStore, repo_type: str, repo_id: str,
          revision: str | None = None) -> tuple[int, int]:
    """Forget a repo (or one revision of it) and delete the blobs nothing else uses.

    Returns (blobs deleted, bytes freed). Pins of what is purged go too. Files whose upstream ETag is no
    content hash were passed through, never stored: there is nothing of theirs to delete.
    """
    with engine.begin() as conn:
        if find_repo(conn, repo_type, repo_id) is not None:
            raise Conflict(f"{repo_id} is a hosted repo, not a cached one: delete it with delete_repo")
        commit = _held(conn, repo_type, repo_id, revision) if revision else None
        used = rows.forget(conn, repo_type, repo_id, commit)
        records.unpin(conn, repo_type, repo_id, commit)
        records.repo_forgotten(conn, repo_type, repo_id)
        return _delete(conn, store, used - rows.still_referenced(conn, used))


@dataclass
class VerifyReport:
    checked: int = 0
    bytes_checked: int = 0
    corrupt: list[str] | None = None
    missing: list[str] | None = None
    #: Blobs of hosted repos that no longer match their name: left in place (they are the only copy), reported.
    hosted_corrupt: list[str] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def _hash(store: BlobStore, key: str, size: int) -> str:
    hasher = BlobHasher(key, size)
    body = await store.read(key, 0, size, 8 << 20)
    if body is None:
        return ""
    async for chunk in body:
        hasher.update(chunk)
    return hasher.hexdigest()


def verify(engine: Engine, store: BlobStore) -> VerifyReport:
    """Re-hash every stored blob; quarantine the ones that no longer match their name (kept in the store's
    ``quarantine/`` for inspection). Blobs recorded but missing are reported and forgotten."""
    import asyncio

    report = VerifyReport(corrupt=[], missing=[], hosted_corrupt=[])
    with engine.connect() as conn:
        listed = records.blob_sizes(conn)
        primary = hosted_blobs(conn)
    for key in store.list():
        size = store.stat(key) or 0
        report.checked += 1
        report.bytes_checked += size
        listed.pop(key, None)
        if asyncio.run(_hash(store, key, size)) != key:
            if key in primary:
                log.error("hosted blob %s no longer matches its name; it is the only copy: restore it from a "
                          "backup (left in place)", key)
                report.hosted_corrupt.append(key)
                continue
            store.quarantine(key)
            report.corrupt.append(key)
    report.missing.extend(sorted(listed))
    with engine.begin() as conn:
        records.forget_blobs(conn, report.corrupt + report.missing)
    return report


def verify_xorbs(store: BlobStore) -> tuple[int, list[str]]:
    """Re-check every stored Xet xorb (each chunk decompressed and hashed, the merkle root against its name).
    Xorbs are hosted data with no other copy: a damaged one is reported, never moved or deleted."""
    from hubproxy.xet.hashes import from_string
    from hubproxy.xet.xorb import XorbError, read_xorb

    checked, damaged = 0, []
    for name in store.list():
        checked += 1
        path = getattr(store, "path", None)
        try:
            if path is not None and os.path.exists(path(name)):
                with open(path(name), "rb") as body:
                    read_xorb(body, from_string(name))
            else:
                read_xorb(asyncio.run(_read_all(store, name)), from_string(name))
        except (XorbError, ValueError):
            log.error("xorb %s no longer matches its name; it is hosted data: restore it from a backup", name)
            damaged.append(name)
    return checked, damaged


async def _read_all(store: BlobStore, key: str) -> bytes:
    size = store.stat(key) or 0
    body = await store.read(key, 0, size, 8 << 20)
    return b"".join([piece async for piece in body]) if body is not None else b""


def total_size(engine: Engine) -> int:
    with engine.connect() as conn:
        return records.total_size(conn)


def evict(engine: Engine, store: BlobStore, max_bytes: int, protected: set[str] | None = None,
          low_water: float = 0.9) -> list[str]:
    """Delete least recently used blobs until the store is under ``low_water * max_bytes``.

    Never evicts a pinned blob, a hosted repo's blob (primary data, not cache) or one in ``protected``
    (being filled or served).
    """
    if max_bytes <= 0:
        return []
    protected = protected or set()
    evicted: list[str] = []
    with engine.begin() as conn:
        total = records.total_size(conn)
        if total <= max_bytes:
            return []
        keep = rows.blobs_of_commits(conn, records.pinned(conn)) | protected | hosted_blobs(conn)
        for key, size in records.least_recently_used(conn):
            if total <= int(max_bytes * low_water):
                break
            if key in keep:
                continue
            store.delete(key)
            total -= size
            evicted.append(key)
        records.forget_blobs(conn, evicted)
    return evicted


__all__ = ["CachedRevision", "VerifyReport", "evict", "list_cached", "pin", "purge", "total_size", "unpin",
           "verify"]
