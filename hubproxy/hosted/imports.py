"""Hosted repos arriving in an air-gapped bundle (``hubproxy sync import``).

A repo whose namespace is hosted on the importing side becomes (or stays) a hosted repo: the exported
commit keeps its id, title, author and date, its listing becomes its rows, and the refs that named it on
the exporting side (branches and tags) name it here, so the team can pull and push to it again. The
history before that commit is not carried; the imported commit has no parent here.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from hubproxy.db.models import principals
from hubproxy.hosted import rows
from hubproxy.hosted.gitobjects import with_folders
from hubproxy.hosted.rows import CommitRow
from hubproxy.repos import rows as repo_rows
from hubproxy.repos.model import entry_of
from hubproxy.repos.rows import Ref

STATIC_INFO = ("cardData", "tags", "library_name", "pipeline_tag")


def hosted_namespaces(conn: Connection, personal: bool) -> set[str]:
    names = set(rows.namespace_projects(conn))
    if personal:
        names |= {n.lower() for (n,) in conn.execute(select(principals.c.name))}
    return names


def _when(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def publish(conn: Connection, repo: Any, default_visibility: str) -> None:
    """Write one bundle repo (a ``sync.manifest.RepoEntry``) as a hosted repo, in the caller's transaction."""
    info: dict[str, Any] = repo.info
    existing = rows.find_repo(conn, repo.repo_type, repo.repo_id)
    repo_id = existing.id if existing is not None else repo.repo_id
    if existing is None:
        visibility = info.get("visibility")
        if visibility not in ("private", "internal", "public"):
            visibility = default_visibility if info.get("private", True) else "public"
        rows.insert_repo(conn, repo.repo_type, repo_id, visibility)
    if rows.commit_row(conn, repo.repo_type, repo_id, repo.commit) is None:
        files = [e for e in (entry_of(x) for x in repo.tree if isinstance(x, dict) and "path" in x) if e.is_file]
        listed, tree = with_folders(files)
        meta = repo.commit_info or {}
        authors = meta.get("authors") or [{}]
        title = str(meta.get("title") or f"Imported {repo.revision}")
        message = title + "\n" + (f"\n{meta['message']}\n" if meta.get("message") else "")
        rows.put_commit(conn, repo.repo_type, repo_id, CommitRow(
            repo.commit, None, tree, title, message, str(authors[0].get("user") or "sync-import"),
            _when(meta.get("date"))), listed)
        static = {k: info[k] for k in STATIC_INFO if k in info}
        repo_rows.put_commit_info(conn, repo.repo_type, repo_id, repo.commit, json.dumps(static or {"tags": []}))
    now = time.time()
    named = [(r["name"], kind) for group, kind in (("branches", "branch"), ("tags", "tag"))
             for r in (repo.refs or {}).get(group) or [] if isinstance(r, dict) and r.get("targetCommit") == repo.commit]
    if not named or (existing is None and not any(n == "main" for n, _ in named)):
        named.append(("main", "branch"))
    for name, kind in named:
        repo_rows.put_ref(conn, repo.repo_type, repo_id, Ref(name, repo.commit, kind, now))
    rows.add_write_event(conn, {"actor": "sync-import", "repo_type": repo.repo_type, "repo_id": repo_id,
                                "action": "import", "ref": repo.revision, "new_commit": repo.commit,
                                "files": len(repo.files), "bytes": sum(f.size for f in repo.files),
                                "detail": {"refs": [n for n, _ in named]}})
