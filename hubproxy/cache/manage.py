"""Cache operations: list, pin, unpin, purge, verify (scrub) and evict.

Plain functions over the database engine and the blob store, used by ``hubproxy cache ...``
and by the server's maintenance loop, and meant for the admin API too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine

from hubproxy.cache import events
from hubproxy.errors import NotFound
from hubproxy.hub.routing import is_commit
from hubproxy.store.base import BlobStore, is_blob_key


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
        rows = conn.execute(text(
            'SELECT f.repo_type, f.repo_id, f."commit", COUNT(f.path), COUNT(b.key), COALESCE(SUM(b.size), 0), '
            "MAX(b.last_access), COALESCE(SUM(b.hits), 0) "
            "FROM files f LEFT JOIN blobs b ON b.key = f.blob WHERE f.blob IS NOT NULL "
            'GROUP BY f.repo_type, f.repo_id, f."commit" ORDER BY f.repo_type, f.repo_id, f."commit"'
        )).all()
        refs: dict[tuple[str, str, str], list[str]] = {}
        for rt, rid, name, commit in conn.execute(text("SELECT repo_type, repo_id, name, \"commit\" FROM refs")):
            refs.setdefault((rt, rid, commit), []).append(name or "(default)")
        pins = {tuple(r) for r in conn.execute(text("SELECT repo_type, repo_id, \"commit\" FROM pins"))}
    return [
        CachedRevision(rt, rid, commit, sorted(refs.get((rt, rid, commit), [])), int(n), int(nc), int(size),
                       last, int(hits), (rt, rid, commit) in pins)
        for rt, rid, commit, n, nc, size, last, hits in rows
    ]


def resolve_cached_revision(engine: Engine, repo_type: str, repo_id: str, revision: str) -> str:
    """The commit a revision pointed to when it was last seen (no upstream involved)."""
    with engine.connect() as conn:
        if is_commit(revision):
            found = conn.execute(text(
                'SELECT 1 FROM files WHERE repo_type = :t AND repo_id = :r AND "commit" = :c LIMIT 1'),
                {"t": repo_type, "r": repo_id, "c": revision}).first()
            if found:
                return revision
        else:
            row = conn.execute(text(
                'SELECT "commit" FROM refs WHERE repo_type = :t AND repo_id = :r AND name = :n'),
                {"t": repo_type, "r": repo_id, "n": revision}).first()
            if row:
                return row[0]
    raise NotFound(f"{repo_type} {repo_id}@{revision} is not cached (prefetch it first)")


def pin(engine: Engine, repo_type: str, repo_id: str, revision: str) -> str:
    """Keep a repo revision's blobs from eviction; returns the commit pinned."""
    commit = resolve_cached_revision(engine, repo_type, repo_id, revision)
    with engine.begin() as conn:
        conn.execute(text('DELETE FROM pins WHERE repo_type = :t AND repo_id = :r AND "commit" = :c'),
                     {"t": repo_type, "r": repo_id, "c": commit})
        conn.execute(text('INSERT INTO pins (repo_type, repo_id, "commit", revision, created_at) '
                          "VALUES (:t, :r, :c, :rev, :now)"),
                     {"t": repo_type, "r": repo_id, "c": commit, "rev": revision, "now": time.time()})
    return commit


def unpin(engine: Engine, repo_type: str, repo_id: str, revision: str | None = None) -> int:
    """Remove pins of a repo (one revision, or all); returns how many were removed."""
    with engine.begin() as conn:
        if revision is None:
            result = conn.execute(text("DELETE FROM pins WHERE repo_type = :t AND repo_id = :r"),
                                  {"t": repo_type, "r": repo_id})
        else:
            commit = resolve_cached_revision(engine, repo_type, repo_id, revision)
            result = conn.execute(text('DELETE FROM pins WHERE repo_type = :t AND repo_id = :r AND "commit" = :c'),
                                  {"t": repo_type, "r": repo_id, "c": commit})
        return result.rowcount or 0


def _like(value: str) -> str:
    """Escape LIKE wildcards (repo ids may contain ``_``)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _pinned_blobs(conn) -> set[str]:  # noqa: ANN001
    return {r[0] for r in conn.execute(text(
        'SELECT DISTINCT f.blob FROM files f JOIN pins p ON p.repo_type = f.repo_type AND p.repo_id = f.repo_id '
        'AND p."commit" = f."commit" WHERE f.blob IS NOT NULL'))}


def _delete_blobs(conn, store: BlobStore, keys: Iterable[str]) -> tuple[int, int]:  # noqa: ANN001
    count = size = 0
    keys = list(keys)
    for key in keys:
        row = conn.execute(text("SELECT size FROM blobs WHERE key = :k"), {"k": key}).first()
        store.delete(key)
        conn.execute(text("DELETE FROM blobs WHERE key = :k"), {"k": key})
        if row:
            count += 1
            size += int(row[0])
    events.blobs_deleted(conn, keys)
    return count, size


def purge(engine: Engine, store: BlobStore, repo_type: str, repo_id: str,
          revision: str | None = None) -> tuple[int, int]:
    """Forget a repo (or one revision of it) and delete the blobs nothing else uses.

    Returns (blobs deleted, bytes freed). Pins of what is purged go too.
    """
    with engine.begin() as conn:
        params = {"t": repo_type, "r": repo_id}
        if revision is None:
            where = "repo_type = :t AND repo_id = :r"
        else:
            params["c"] = resolve_cached_revision(engine, repo_type, repo_id, revision)
            where = 'repo_type = :t AND repo_id = :r AND "commit" = :c'
        blobs = {r[0] for r in conn.execute(text(f"SELECT DISTINCT blob FROM files WHERE {where} AND blob IS NOT NULL"),
                                            params)}
        conn.execute(text(f"DELETE FROM files WHERE {where}"), params)
        conn.execute(text(f"DELETE FROM pins WHERE {where}"), params)
        if revision is None:
            conn.execute(text("DELETE FROM refs WHERE repo_type = :t AND repo_id = :r"), params)
            conn.execute(text("DELETE FROM metadata WHERE key LIKE :pat ESCAPE '\\'"),
                         {"pat": f"%|{_like(repo_type)}|{_like(repo_id)}|%"})
        else:
            conn.execute(text('DELETE FROM refs WHERE repo_type = :t AND repo_id = :r AND "commit" = :c'), params)
            conn.execute(text("DELETE FROM metadata WHERE key LIKE :pat ESCAPE '\\'"),
                         {"pat": f"%|{_like(repo_type)}|{_like(repo_id)}|{params['c']}|%"})
        events.repo_forgotten(conn, repo_type, repo_id)
        still_used = {r[0] for r in conn.execute(text("SELECT DISTINCT blob FROM files WHERE blob IS NOT NULL"))}
        # Files whose upstream ETag is no content hash were passed through, never stored: nothing to delete.
        return _delete_blobs(conn, store, sorted(k for k in blobs - still_used if is_blob_key(k)))


@dataclass
class VerifyReport:
    checked: int = 0
    bytes_checked: int = 0
    corrupt: list[str] | None = None
    missing: list[str] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def verify(engine: Engine, store: BlobStore) -> VerifyReport:
    """Re-hash every stored blob; quarantine the ones that no longer match their name.

    Blobs the database lists but the store lacks are reported as missing and forgotten.
    """
    report = VerifyReport(corrupt=[], missing=[])
    with engine.connect() as conn:
        listed = {r[0]: int(r[1]) for r in conn.execute(text("SELECT key, size FROM blobs"))}
    for key in store.list_blobs():
        report.checked += 1
        report.bytes_checked += store.size(key) or 0
        listed.pop(key, None)
        if store.hash_blob(key) != key:
            store.quarantine(key)
            report.corrupt.append(key)
    report.missing.extend(sorted(listed))
    with engine.begin() as conn:
        for key in report.corrupt + report.missing:
            conn.execute(text("DELETE FROM blobs WHERE key = :k"), {"k": key})
        events.blobs_deleted(conn, report.corrupt + report.missing)
    return report


def total_size(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COALESCE(SUM(size), 0) FROM blobs")).scalar_one())


def evict(engine: Engine, store: BlobStore, max_bytes: int, protected: set[str] | None = None,
          low_water: float = 0.9) -> list[str]:
    """Delete least recently used blobs until the store is under ``low_water * max_bytes``.

    Never evicts a pinned blob or one in ``protected`` (being filled or served).
    """
    if max_bytes <= 0:
        return []
    protected = protected or set()
    evicted: list[str] = []
    with engine.begin() as conn:
        total = int(conn.execute(text("SELECT COALESCE(SUM(size), 0) FROM blobs")).scalar_one())
        if total <= max_bytes:
            return []
        target = int(max_bytes * low_water)
        pinned = _pinned_blobs(conn)
        for key, size in conn.execute(text("SELECT key, size FROM blobs ORDER BY last_access ASC")).all():
            if total <= target:
                break
            if key in pinned or key in protected:
                continue
            store.delete(key)
            conn.execute(text("DELETE FROM blobs WHERE key = :k"), {"k": key})
            total -= int(size)
            evicted.append(key)
        events.blobs_deleted(conn, evicted)
    return evicted
