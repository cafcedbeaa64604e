"""The repo model: listings as rows (entries), repo info per commit (commits), repos, ref kinds.

The ``files`` table and the ``metadata`` answer cache are converted, so an upgrade keeps what is
cached: each commit's full recursive listing becomes its entries (``listed``), its plain repo info
its ``commits.info``, refs answers become ref rows with their kind, and the per-path knowledge of
``files`` (found, missing, left out of an import) becomes entries too. Commit history answers stay
replayable in ``answers``. Other cached answers (variants) are derived from these from now on.

Revision ID: 0013
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BATCH = 1000
_entries = sa.table("entries", *(sa.column(c) for c in (
    "repo_type", "repo_id", "commit", "path", "kind", "ordinal", "size", "oid", "blob", "lfs", "pointer_size",
    "extra", "fetched_at")))
_commits = sa.table("commits", *(sa.column(c) for c in ("repo_type", "repo_id", "commit", "info", "listed",
                                                          "fetched_at")))
_repos = sa.table("repos", *(sa.column(c) for c in ("repo_type", "repo_id", "source", "refs_fetched_at",
                                                      "created_at")))
_answers = sa.table("answers", *(sa.column(c) for c in ("key", "status", "headers", "body", "fetched_at")))
_refs = sa.table("refs", *(sa.column(c) for c in ("repo_type", "repo_id", "name", "commit", "fetched_at", "kind")))
#: Listing fields the entries table models; the rest of an entry is kept as its ``extra`` JSON.
MODELED = {"type", "oid", "size", "path", "lfs"}


def upgrade() -> None:
    op.create_table(
        "repos",
        sa.Column("repo_type", sa.String(), primary_key=True),
        sa.Column("repo_id", sa.String(), primary_key=True),
        sa.Column("source", sa.String(), nullable=False, server_default="upstream"),
        sa.Column("refs_fetched_at", sa.Float(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "commits",
        sa.Column("repo_type", sa.String(), primary_key=True),
        sa.Column("repo_id", sa.String(), primary_key=True),
        sa.Column("commit", sa.String(), primary_key=True),
        sa.Column("info", sa.Text(), nullable=True),
        sa.Column("listed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("fetched_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "entries",
        sa.Column("repo_type", sa.String(), primary_key=True),
        sa.Column("repo_id", sa.String(), primary_key=True),
        sa.Column("commit", sa.String(), primary_key=True),
        sa.Column("path", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False, server_default="-1"),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("oid", sa.String(), nullable=True),
        sa.Column("blob", sa.String(), nullable=True),
        sa.Column("lfs", sa.Boolean(), nullable=False),
        sa.Column("pointer_size", sa.Integer(), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True),
        sa.Column("fetched_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_entries_blob", "entries", ["blob"])
    op.create_table(
        "answers",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("fetched_at", sa.Float(), nullable=False),
    )
    with op.batch_alter_table("refs") as batch:
        batch.add_column(sa.Column("kind", sa.String(), nullable=False, server_default="branch"))
        batch.add_column(sa.Column("message", sa.Text(), nullable=True))
    _convert(op.get_bind())
    op.drop_index("ix_files_blob", "files")
    op.drop_table("files")
    op.drop_table("metadata")


def _insert_ignore(bind: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    for start in range(0, len(rows), BATCH):
        bind.execute(insert(table).on_conflict_do_nothing(), rows[start:start + BATCH])


def _entry_row(repo: tuple[str, str, str], e: dict[str, Any], ordinal: int, now: float) -> dict[str, Any]:
    t, r, c = repo
    lfs = e.get("lfs") if isinstance(e.get("lfs"), dict) else None
    extra = {k: v for k, v in e.items() if k not in MODELED}
    is_file = e.get("type") == "file"
    return {"repo_type": t, "repo_id": r, "commit": c, "path": e["path"], "kind": "file" if is_file else "directory",
            "ordinal": ordinal, "size": int((lfs or e).get("size") or 0), "oid": e.get("oid"),
            "blob": (lfs["oid"] if lfs else e.get("oid")) if is_file else None, "lfs": lfs is not None,
            "pointer_size": lfs.get("pointerSize") if lfs else None,
            "extra": json.dumps(extra) if extra else None, "fetched_at": now}


def _convert(bind: Any) -> None:
    now = time.time()
    seen: set[tuple[str, str]] = set()
    bind.execute(sa.text("UPDATE refs SET kind = 'default' WHERE name = ''"))
    seen.update((t, r) for t, r in bind.execute(sa.text("SELECT DISTINCT repo_type, repo_id FROM refs")))
    refs_read: dict[tuple[str, str], float] = {}
    for key, status, headers, body, fetched_at in bind.execute(sa.text(
            "SELECT key, status, headers, body, fetched_at FROM metadata")).all():
        parts = key.split("|")
        try:
            data = json.loads(body) if status == 200 else None
        except ValueError:
            continue
        if parts[0] == "tree" and len(parts) == 7 and parts[4:] == ["", "1", "0"] and isinstance(data, list):
            repo = (parts[1], parts[2], parts[3])
            seen.add(repo[:2])
            _insert_ignore(bind, _entries, [_entry_row(repo, e, i, now) for i, e in enumerate(data)
                                            if isinstance(e, dict) and isinstance(e.get("path"), str)])
            _insert_ignore(bind, _commits, [{"repo_type": repo[0], "repo_id": repo[1], "commit": repo[2],
                                             "info": None, "listed": True, "fetched_at": fetched_at}])
            bind.execute(sa.update(_commits).where(_commits.c.repo_type == repo[0], _commits.c.repo_id == repo[1],
                                                   _commits.c.commit == repo[2]).values(listed=True))
        elif parts[0] == "info" and len(parts) == 5 and parts[4] == "" and isinstance(data, dict):
            seen.add((parts[1], parts[2]))
            _insert_ignore(bind, _commits, [{"repo_type": parts[1], "repo_id": parts[2], "commit": parts[3],
                                             "info": body.decode(), "listed": False, "fetched_at": fetched_at}])
            bind.execute(sa.update(_commits).where(_commits.c.repo_type == parts[1], _commits.c.repo_id == parts[2],
                                                   _commits.c.commit == parts[3]).values(info=body.decode()))
        elif parts[0] == "refs" and len(parts) == 4 and isinstance(data, dict):
            refs_read[(parts[1], parts[2])] = max(fetched_at, refs_read.get((parts[1], parts[2]), 0.0))
            rows = [{"repo_type": parts[1], "repo_id": parts[2], "name": ref["name"], "commit": ref["targetCommit"],
                     "fetched_at": fetched_at, "kind": kind}
                    for group, kind in (("branches", "branch"), ("tags", "tag"), ("converts", "convert"))
                    for ref in data.get(group, []) if isinstance(ref, dict) and ref.get("name")
                    and isinstance(ref.get("targetCommit"), str)]
            _insert_ignore(bind, _refs, rows)
        elif parts[0] == "commits":
            _insert_ignore(bind, _answers, [{"key": key, "status": status, "headers": headers, "body": body,
                                             "fetched_at": fetched_at}])
    files = bind.execute(sa.text('SELECT repo_type, repo_id, "commit", path, blob, size, is_lfs, fetched_at '
                                 "FROM files")).all()
    rows = []
    for t, r, c, path, blob, size, is_lfs, fetched_at in files:
        seen.add((t, r))
        kind = "file" if blob is not None else ("left_out" if size == -1 else "missing")
        rows.append({"repo_type": t, "repo_id": r, "commit": c, "path": path, "kind": kind, "ordinal": -1,
                     "size": max(int(size), 0), "oid": None if is_lfs else blob, "blob": blob, "lfs": bool(is_lfs),
                     "pointer_size": None, "extra": None, "fetched_at": fetched_at})
    _insert_ignore(bind, _entries, rows)
    _insert_ignore(bind, _repos, [{"repo_type": t, "repo_id": r, "source": "upstream",
                                   "refs_fetched_at": refs_read.get((t, r), 0.0), "created_at": now} for t, r in seen])


def downgrade() -> None:
    raise NotImplementedError("the repo model cannot be converted back; restore a backup of the database instead")
