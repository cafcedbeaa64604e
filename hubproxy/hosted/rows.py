"""The hosted repos' SQL: namespaces, repo settings, commits and their refs, uploads, write events.

Hosted repos live in the same ``repos``/``refs``/``commits``/``entries`` tables as mirrored ones
(``source = 'hosted'``); listings are written with ``repos/rows.py``. Functions take an open connection
so a commit (its rows, the ref's compare-and-swap and its audit event) is one transaction.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from hubproxy.db import upsert
from hubproxy.db.models import audit_writes, commits, entries, namespaces, projects, refs, repos, uploads
from hubproxy.repos import rows as repo_rows
from hubproxy.repos.model import FILE, Entry


@dataclass(frozen=True)
class HostedRepo:
    """A hosted repo's row."""

    type: str
    id: str
    visibility: str
    gated: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class CommitRow:
    """A hosted commit: its id and the git parts it was computed from."""

    id: str
    parent: str | None
    tree: str
    title: str
    message: str
    author: str
    created_at: float


def _repo(table: Any, repo_type: str, repo_id: str) -> Any:
    return and_(table.c.repo_type == repo_type, table.c.repo_id == repo_id)


# -- namespaces -----------------------------------------------------------------------------------
def namespace_projects(conn: Connection) -> dict[str, str]:
    """Every assigned namespace (lower-cased) and the name of the project owning it."""
    rows = conn.execute(select(namespaces.c.name, projects.c.name)
                        .select_from(namespaces.join(projects, projects.c.id == namespaces.c.project_id)))
    return {r[0]: r[1] for r in rows}


def assign_namespace(conn: Connection, name: str, project_id: int) -> None:
    conn.execute(delete(namespaces).where(namespaces.c.name == name))
    conn.execute(insert(namespaces).values(name=name, project_id=project_id, created_at=time.time()))


def remove_namespace(conn: Connection, name: str) -> int:
    return conn.execute(delete(namespaces).where(namespaces.c.name == name)).rowcount


def mirrored_repos_in(conn: Connection, namespace: str) -> list[tuple[str, str]]:
    """Repos held as mirrors whose id falls in a namespace (a namespace turned hosted forgets them)."""
    like = namespace.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
    rows = conn.execute(select(repos.c.repo_type, repos.c.repo_id).where(
        repos.c.source != "hosted", func.lower(repos.c.repo_id).like(like, escape="\\")))
    return [(r[0], r[1]) for r in rows]


def hosted_count_in(conn: Connection, namespace: str) -> int:
    like = namespace.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
    return int(conn.execute(select(func.count()).select_from(repos).where(
        repos.c.source == "hosted", func.lower(repos.c.repo_id).like(like, escape="\\"))).scalar() or 0)


# -- repos ----------------------------------------------------------------------------------------
def _hosted(row: Any) -> HostedRepo:
    return HostedRepo(row.repo_type, row.repo_id, row.visibility or "private", row.gated, row.created_at,
                      row.updated_at or row.created_at)


_REPO_COLUMNS = (repos.c.repo_type, repos.c.repo_id, repos.c.visibility, repos.c.gated, repos.c.created_at,
                 repos.c.updated_at)


def find_repo(conn: Connection, repo_type: str, repo_id: str) -> HostedRepo | None:
    """The hosted repo an id names, whatever its case."""
    row = conn.execute(select(*_REPO_COLUMNS).where(repos.c.repo_type == repo_type, repos.c.source == "hosted",
                                                    func.lower(repos.c.repo_id) == repo_id.lower())).first()
    return _hosted(row) if row else None


def list_repos(conn: Connection, repo_type: str) -> list[HostedRepo]:
    rows = conn.execute(select(*_REPO_COLUMNS).where(repos.c.repo_type == repo_type, repos.c.source == "hosted")
                        .order_by(repos.c.repo_id))
    return [_hosted(r) for r in rows]


def insert_repo(conn: Connection, repo_type: str, repo_id: str, visibility: str) -> None:
    """A new hosted repo row (IntegrityError if one of that id exists)."""
    now = time.time()
    conn.execute(insert(repos).values(repo_type=repo_type, repo_id=repo_id, source="hosted", refs_fetched_at=now,
                                      created_at=now, visibility=visibility, updated_at=now))


def set_settings(conn: Connection, repo_type: str, repo_id: str, **values: Any) -> None:
    conn.execute(update(repos).where(_repo(repos, repo_type, repo_id)).values(updated_at=time.time(), **values))


def delete_repo(conn: Connection, repo_type: str, repo_id: str) -> None:
    repo_rows.forget(conn, repo_type, repo_id, None)
    conn.execute(delete(uploads).where(_repo(uploads, repo_type, repo_id)))


def move_repo(conn: Connection, repo_type: str, old: str, new: str) -> None:
    for table in (repos, refs, commits, entries, uploads):
        conn.execute(update(table).where(_repo(table, repo_type, old)).values(repo_id=new))


# -- commits and refs -----------------------------------------------------------------------------
def put_commit(conn: Connection, repo_type: str, repo_id: str, c: CommitRow, listed: list[Entry]) -> None:
    """A new commit's row and its complete listing (the ref is moved separately)."""
    conn.execute(insert(commits).values(
        repo_type=repo_type, repo_id=repo_id, commit=c.id, info=None, listed=False, fetched_at=c.created_at,
        parent=c.parent, tree=c.tree, title=c.title, message=c.message, author=c.author, created_at=c.created_at))
    repo_rows.put_listing(conn, repo_type, repo_id, c.id, listed)


def commit_row(conn: Connection, repo_type: str, repo_id: str, commit: str) -> CommitRow | None:
    row = conn.execute(select(commits.c.commit, commits.c.parent, commits.c.tree, commits.c.title,
                              commits.c.message, commits.c.author, commits.c.created_at)
                       .where(_repo(commits, repo_type, repo_id), commits.c.commit == commit)).first()
    return CommitRow(*row) if row and row.tree else None


def commits_by_prefix(conn: Connection, repo_type: str, repo_id: str, prefix: str) -> list[str]:
    return [r[0] for r in conn.execute(select(commits.c.commit).where(
        _repo(commits, repo_type, repo_id), commits.c.commit.like(prefix + "%")).limit(2))]


def history(conn: Connection, repo_type: str, repo_id: str, head: str) -> list[CommitRow]:
    """The commits reachable from ``head``, newest first."""
    rows = conn.execute(select(commits.c.commit, commits.c.parent, commits.c.tree, commits.c.title,
                               commits.c.message, commits.c.author, commits.c.created_at)
                        .where(_repo(commits, repo_type, repo_id), commits.c.tree.is_not(None))).all()
    by_id = {r[0]: CommitRow(*r) for r in rows}
    out: list[CommitRow] = []
    current: str | None = head
    while current is not None and current in by_id and len(out) <= len(by_id):
        out.append(by_id[current])
        current = by_id[current].parent
    return out


def move_ref(conn: Connection, repo_type: str, repo_id: str, name: str, kind: str, old: str | None,
             new: str | None, message: str | None = None) -> bool:
    """Compare-and-swap a ref: from ``old`` (None: it must not exist) to ``new`` (None: delete it).
    False when the ref is not where the caller saw it (another writer moved it first)."""
    now = time.time()
    where = [_repo(refs, repo_type, repo_id), refs.c.name == name, refs.c.kind == kind]
    if old is None:
        if conn.execute(select(refs.c.commit).where(_repo(refs, repo_type, repo_id), refs.c.name == name)).first():
            return False
        conn.execute(insert(refs).values(repo_type=repo_type, repo_id=repo_id, name=name, commit=new, fetched_at=now,
                                         kind=kind, message=message))
        return True
    if new is None:
        return conn.execute(delete(refs).where(*where, refs.c.commit == old)).rowcount == 1
    return conn.execute(update(refs).where(*where, refs.c.commit == old)
                        .values(commit=new, fetched_at=now)).rowcount == 1


# -- uploads --------------------------------------------------------------------------------------
def add_upload(conn: Connection, repo_type: str, repo_id: str, oid: str, size: int, principal: str | None) -> None:
    upsert(conn, uploads, {"repo_type": repo_type, "repo_id": repo_id, "oid": oid, "size": size,
                           "principal": principal, "created_at": time.time()}, update=False)


def usable_object(conn: Connection, repo_type: str, repo_id: str, oid: str) -> int | None:
    """The size of an LFS object this repo may reference (uploaded for it, or in one of its commits)."""
    size = conn.execute(select(uploads.c.size).where(_repo(uploads, repo_type, repo_id),
                                                     uploads.c.oid == oid)).scalar()
    if size is None:
        size = conn.execute(select(entries.c.size).where(_repo(entries, repo_type, repo_id), entries.c.blob == oid,
                                                         entries.c.kind == FILE).limit(1)).scalar()
    return int(size) if size is not None else None


def hosted_blobs(conn: Connection) -> set[str]:
    """Every blob a hosted repo's file uses, or an upload waits to be committed with: primary data."""
    joined = entries.join(repos, and_(repos.c.repo_type == entries.c.repo_type, repos.c.repo_id == entries.c.repo_id))
    used = {r[0] for r in conn.execute(select(entries.c.blob).select_from(joined).where(
        repos.c.source == "hosted", entries.c.kind == FILE, entries.c.blob.is_not(None)).distinct())}
    return used | {r[0] for r in conn.execute(select(uploads.c.oid).distinct())}


# -- write events ---------------------------------------------------------------------------------
WRITE_COLUMNS = [c.name for c in audit_writes.columns]

def add_write_event(conn: Connection, event: dict[str, Any]) -> None:
    values = dict(event)
    values.setdefault("ts", time.time())
    if isinstance(values.get("detail"), (dict, list)):
        values["detail"] = json.dumps(values["detail"], separators=(",", ":"))
    conn.execute(insert(audit_writes).values(**values))


def write_events(conn: Connection, since: float | None = None, repo_id: str | None = None, actor: str | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
    query = select(audit_writes).order_by(audit_writes.c.id.desc()).limit(limit)
    if since is not None:
        query = query.where(audit_writes.c.ts >= since)
    if repo_id:
        query = query.where(audit_writes.c.repo_id == repo_id)
    if actor:
        query = query.where(audit_writes.c.actor == actor)
    out = []
    for row in conn.execute(query):
        item = dict(row._mapping)
        item["detail"] = json.loads(item["detail"]) if item.get("detail") else None
        out.append(item)
    return out
