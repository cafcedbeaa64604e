"""The revision index's tables (repos, refs, commits, entries, repo_aliases, answers): all their SQL.

Functions take an open connection, so a caller can put several of them (and those of other owners)
in one transaction. ``index.py`` wraps them for the server, with memory in front.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.engine import Connection

from hubproxy.db import upsert
from hubproxy.db.models import answers, blobs, commits, entries, refs, repo_aliases, repos
from hubproxy.repos.model import DIRECTORY, FILE, LEFT_OUT, Entry

#: Ref kinds an upstream refs listing replaces (the default revision "" is learned from repo info).
LISTED_KINDS = ("branch", "tag", "convert", "pr")


@dataclass(frozen=True)
class Ref:
    name: str
    commit: str
    kind: str
    fetched_at: float
    message: str | None = None


def _repo(table: Any, repo_type: str, repo_id: str) -> Any:
    return and_(table.c.repo_type == repo_type, table.c.repo_id == repo_id)


# -- repos ----------------------------------------------------------------------------------------
def ensure_repo(conn: Connection, repo_type: str, repo_id: str, source: str = "upstream") -> None:
    upsert(conn, repos, {"repo_type": repo_type, "repo_id": repo_id, "source": source, "refs_fetched_at": 0.0,
                         "created_at": time.time()}, update=False)


def refs_fetched_at(conn: Connection, repo_type: str, repo_id: str) -> float:
    value = conn.execute(select(repos.c.refs_fetched_at).where(_repo(repos, repo_type, repo_id))).scalar()
    return float(value or 0.0)


# -- refs -----------------------------------------------------------------------------------------
def put_ref(conn: Connection, repo_type: str, repo_id: str, ref: Ref) -> None:
    ensure_repo(conn, repo_type, repo_id)
    upsert(conn, refs, {"repo_type": repo_type, "repo_id": repo_id, "name": ref.name, "commit": ref.commit,
                        "fetched_at": ref.fetched_at, "kind": ref.kind, "message": ref.message})


def get_ref(conn: Connection, repo_type: str, repo_id: str, name: str) -> Ref | None:
    row = conn.execute(select(refs.c.name, refs.c.commit, refs.c.kind, refs.c.fetched_at, refs.c.message)
                       .where(_repo(refs, repo_type, repo_id), refs.c.name == name)).first()
    return Ref(row.name, row.commit, row.kind, row.fetched_at, row.message) if row else None


def list_refs(conn: Connection, repo_type: str, repo_id: str) -> list[Ref]:
    rows = conn.execute(select(refs.c.name, refs.c.commit, refs.c.kind, refs.c.fetched_at, refs.c.message)
                        .where(_repo(refs, repo_type, repo_id)).order_by(refs.c.name)).all()
    return [Ref(r.name, r.commit, r.kind, r.fetched_at, r.message) for r in rows]


def replace_listed_refs(conn: Connection, repo_type: str, repo_id: str, listed: list[Ref], at: float) -> None:
    """The upstream's refs listing replaces what was known of its branches, tags, converts and PRs."""
    ensure_repo(conn, repo_type, repo_id)
    conn.execute(delete(refs).where(_repo(refs, repo_type, repo_id), refs.c.kind.in_(LISTED_KINDS)))
    for ref in listed:
        put_ref(conn, repo_type, repo_id, ref)
    conn.execute(update(repos).where(_repo(repos, repo_type, repo_id)).values(refs_fetched_at=at))


# -- commits and entries --------------------------------------------------------------------------
def put_commit_info(conn: Connection, repo_type: str, repo_id: str, commit: str, info: str) -> None:
    ensure_repo(conn, repo_type, repo_id)
    upsert(conn, commits, {"repo_type": repo_type, "repo_id": repo_id, "commit": commit, "info": info,
                           "listed": False, "fetched_at": time.time()}, update=False)
    conn.execute(update(commits).where(_repo(commits, repo_type, repo_id), commits.c.commit == commit)
                 .values(info=info))


def get_commit_info(conn: Connection, repo_type: str, repo_id: str, commit: str) -> str | None:
    return conn.execute(select(commits.c.info).where(_repo(commits, repo_type, repo_id),
                                                     commits.c.commit == commit)).scalar()


def _entry_values(repo_type: str, repo_id: str, commit: str, e: Entry, ordinal: int, now: float) -> dict[str, Any]:
    return {"repo_type": repo_type, "repo_id": repo_id, "commit": commit, "path": e.path, "kind": e.kind,
            "ordinal": ordinal, "size": e.size, "oid": e.oid, "blob": e.blob, "lfs": e.lfs,
            "pointer_size": e.pointer_size, "extra": json.dumps(e.extra) if e.extra else None, "fetched_at": now}


def _entry(row: Any) -> Entry:
    return Entry(row.path, row.kind, row.size, row.oid, row.blob, bool(row.lfs), row.pointer_size,
                 json.loads(row.extra) if row.extra else None)


_ENTRY_COLUMNS = (entries.c.path, entries.c.kind, entries.c.size, entries.c.oid, entries.c.blob, entries.c.lfs,
                  entries.c.pointer_size, entries.c.extra)


def put_listing(conn: Connection, repo_type: str, repo_id: str, commit: str, listed: list[Entry]) -> None:
    """A commit's complete listing, in order; paths already known alone (a left-out file) keep their kind."""
    ensure_repo(conn, repo_type, repo_id)
    now = time.time()
    known = {p: k for p, k in conn.execute(select(entries.c.path, entries.c.kind).where(
        _repo(entries, repo_type, repo_id), entries.c.commit == commit))}
    rows = [_entry_values(repo_type, repo_id, commit, e, i, now) for i, e in enumerate(listed)
            if known.get(e.path) != LEFT_OUT]
    for start in range(0, len(rows), 1000):
        upsert(conn, entries, rows[start:start + 1000])
    upsert(conn, commits, {"repo_type": repo_type, "repo_id": repo_id, "commit": commit, "info": None,
                           "listed": True, "fetched_at": now}, update=False)
    conn.execute(update(commits).where(_repo(commits, repo_type, repo_id), commits.c.commit == commit)
                 .values(listed=True))


def load_listing(conn: Connection, repo_type: str, repo_id: str, commit: str) -> tuple[list[Entry], set[str]] | None:
    """The commit's listing (files and folders, in order) and its left-out paths, if it is complete here."""
    listed = conn.execute(select(commits.c.listed).where(_repo(commits, repo_type, repo_id),
                                                         commits.c.commit == commit)).scalar()
    if not listed:
        return None
    rows = conn.execute(select(*_ENTRY_COLUMNS).where(_repo(entries, repo_type, repo_id), entries.c.commit == commit)
                        .order_by(entries.c.ordinal, entries.c.path)).all()
    found = [_entry(r) for r in rows]
    return [e for e in found if e.kind in (FILE, DIRECTORY)], {e.path for e in found if e.kind == LEFT_OUT}


def put_entry(conn: Connection, repo_type: str, repo_id: str, commit: str, entry: Entry) -> None:
    ensure_repo(conn, repo_type, repo_id)
    upsert(conn, entries, _entry_values(repo_type, repo_id, commit, entry, -1, time.time()))


def put_entries(conn: Connection, repo_type: str, repo_id: str, commit: str, found: Iterable[Entry]) -> None:
    """Entries learned without the whole listing (paths-info, expanded fields); the listing order is kept."""
    now = time.time()
    for e in found:
        values = _entry_values(repo_type, repo_id, commit, e, -1, now)
        upsert(conn, entries, values, update=False)
        conn.execute(update(entries).where(_repo(entries, repo_type, repo_id), entries.c.commit == commit,
                                           entries.c.path == e.path)
                     .values({k: v for k, v in values.items() if k not in ("ordinal", "repo_type", "repo_id",
                                                                           "commit", "path")}))


def get_entry(conn: Connection, repo_type: str, repo_id: str, commit: str, path: str) -> Entry | None:
    row = conn.execute(select(*_ENTRY_COLUMNS).where(_repo(entries, repo_type, repo_id), entries.c.commit == commit,
                                                     entries.c.path == path)).first()
    return _entry(row) if row else None


# -- names ----------------------------------------------------------------------------------------
def put_alias(conn: Connection, repo_type: str, alias: str, canonical: str) -> None:
    upsert(conn, repo_aliases, {"repo_type": repo_type, "alias": alias, "canonical": canonical,
                                "fetched_at": time.time()})


def stored_name(conn: Connection, repo_type: str, typed: str) -> str | None:
    """The canonical id of ``typed`` by what is held: a remembered alias, or a repo of that name in any case."""
    lower = typed.lower()
    row = conn.execute(select(repo_aliases.c.canonical).where(repo_aliases.c.repo_type == repo_type,
                                                              repo_aliases.c.alias == lower)).first()
    if row is not None:
        return row[0]
    return conn.execute(select(repos.c.repo_id).where(repos.c.repo_type == repo_type,
                                                      func.lower(repos.c.repo_id) == lower).limit(1)).scalar()


# -- answers (upstream answers replayed, not modelled) -------------------------------------------
def get_answer(conn: Connection, key: str) -> tuple[int, str, bytes, float] | None:
    row = conn.execute(select(answers.c.status, answers.c.headers, answers.c.body, answers.c.fetched_at)
                       .where(answers.c.key == key)).first()
    return (row.status, row.headers, row.body, row.fetched_at) if row else None


def put_answer(conn: Connection, key: str, status: int, headers: str, body: bytes) -> None:
    upsert(conn, answers, {"key": key, "status": status, "headers": headers, "body": body,
                           "fetched_at": time.time()})


# -- what the cache holds (management) ------------------------------------------------------------
def holds_content(conn: Connection, repo_type: str, repo_id: str) -> bool:
    """Whether any file of the repo has its bytes stored (reads ``blobs``, the stored blobs' records)."""
    stored = exists().where(blobs.c.key == entries.c.blob)
    return conn.execute(select(entries.c.path).where(_repo(entries, repo_type, repo_id), entries.c.kind == FILE,
                                                     stored).limit(1)).first() is not None


def revision_summaries(conn: Connection) -> list[dict[str, Any]]:
    """Per repo and commit: files known, files stored, bytes stored, hits and last access of its blobs."""
    rows = conn.execute(
        select(entries.c.repo_type, entries.c.repo_id, entries.c.commit, func.count(entries.c.path),
               func.count(blobs.c.key), func.coalesce(func.sum(blobs.c.size), 0), func.max(blobs.c.last_access),
               func.coalesce(func.sum(blobs.c.hits), 0))
        .select_from(entries.outerjoin(blobs, blobs.c.key == entries.c.blob)).where(entries.c.kind == FILE)
        .group_by(entries.c.repo_type, entries.c.repo_id, entries.c.commit)
        .order_by(entries.c.repo_type, entries.c.repo_id, entries.c.commit)).all()
    return [{"repo_type": r[0], "repo_id": r[1], "commit": r[2], "files": int(r[3]), "files_cached": int(r[4]),
             "bytes_cached": int(r[5]), "last_access": r[6], "hits": int(r[7])} for r in rows]


def all_refs(conn: Connection) -> list[tuple[str, str, str, str]]:
    return [tuple(r) for r in conn.execute(select(refs.c.repo_type, refs.c.repo_id, refs.c.name, refs.c.commit))]


def resolve_held(conn: Connection, repo_type: str, repo_id: str, revision: str) -> str | None:
    """The commit a revision pointed to when last seen, if hubproxy holds files of it (no upstream)."""
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        held = conn.execute(select(entries.c.path).where(_repo(entries, repo_type, repo_id),
                                                         entries.c.commit == revision).limit(1)).first()
        return revision if held else None
    ref = get_ref(conn, repo_type, repo_id, revision)
    return ref.commit if ref else None


def repos_holding_files(conn: Connection, repo_type: str) -> list[tuple[str, str | None]]:
    """Repos with at least one known file, and their default revision's commit (offline listings)."""
    default = select(refs.c.commit).where(refs.c.repo_type == entries.c.repo_type, refs.c.repo_id == entries.c.repo_id,
                                          refs.c.name == "").scalar_subquery()
    rows = conn.execute(select(entries.c.repo_id, default).where(entries.c.repo_type == repo_type,
                                                                 entries.c.kind == FILE)
                        .group_by(entries.c.repo_id).order_by(entries.c.repo_id)).all()
    return [(r[0], r[1]) for r in rows]


def forget(conn: Connection, repo_type: str, repo_id: str, commit: str | None) -> set[str]:
    """Forget a repo (or one commit of it); returns the blob keys its files used."""
    where_entries = [_repo(entries, repo_type, repo_id)] + ([entries.c.commit == commit] if commit else [])
    used = {r[0] for r in conn.execute(select(entries.c.blob).where(*where_entries, entries.c.kind == FILE,
                                                                    entries.c.blob.is_not(None)).distinct())}
    conn.execute(delete(entries).where(*where_entries))
    if commit is None:
        for table in (commits, refs, repos):
            conn.execute(delete(table).where(_repo(table, repo_type, repo_id)))
        conn.execute(delete(answers).where(answers.c.key.like(f"%|{_escape(repo_type)}|{_escape(repo_id)}|%",
                                                              escape="\\")))
    else:
        conn.execute(delete(commits).where(_repo(commits, repo_type, repo_id), commits.c.commit == commit))
        conn.execute(delete(refs).where(_repo(refs, repo_type, repo_id), refs.c.commit == commit))
    return used


def still_referenced(conn: Connection, keys: set[str]) -> set[str]:
    if not keys:
        return set()
    found: set[str] = set()
    ordered = sorted(keys)
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        found |= {r[0] for r in conn.execute(select(entries.c.blob).where(entries.c.blob.in_(chunk)).distinct())}
    return found


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def import_rows(conn: Connection, repo_type: str, repo_id: str, commit: str, info: str, listed: list[Entry],
                left_out: list[str], revision_refs: list[Ref]) -> None:
    """What an air-gapped bundle brings for one repo revision, written in the caller's transaction."""
    put_commit_info(conn, repo_type, repo_id, commit, info)
    put_listing(conn, repo_type, repo_id, commit, listed)
    for path in left_out:
        put_entry(conn, repo_type, repo_id, commit, Entry(path, LEFT_OUT))
    for ref in revision_refs:
        put_ref(conn, repo_type, repo_id, ref)



def blobs_of_commits(conn: Connection, held: set[tuple[str, str, str]]) -> set[str]:
    """The blob keys files of these commits use (pinned revisions)."""
    found: set[str] = set()
    for repo_type, repo_id, commit in held:
        found |= {r[0] for r in conn.execute(select(entries.c.blob).where(
            _repo(entries, repo_type, repo_id), entries.c.commit == commit, entries.c.kind == FILE,
            entries.c.blob.is_not(None)))}
    return found
