"""Applying a commit to a hosted branch: the new listing, git ids, and a compare-and-swap of the branch.

A commit is built on the branch head it read. The commit's rows, the branch move (only if the branch is
still at that head) and its audit event are one transaction, so a commit is either wholly visible or not
at all. If another commit landed meanwhile: with ``parentCommit`` the caller gets 412 (it asked to build
on that exact parent); without one the commit is rebuilt on the new head, so neither is lost.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from hubproxy.hosted import rows
from hubproxy.hosted.blobio import HostedBlobs
from hubproxy.hosted.card import info_fields
from hubproxy.hosted.gitobjects import commit_id, commit_message, file_oid, with_folders
from hubproxy.hosted.modes import covered, lfs_patterns
from hubproxy.hosted.ndjson import Operation
from hubproxy.hosted.rows import CommitRow
from hubproxy.hub.errors import HubError, entry_not_found, revision_not_found
from hubproxy.repos import rows as repo_rows
from hubproxy.repos.model import FILE, Entry, RepoRef, git_blob_sha1, lfs_pointer
from hubproxy.xet import registry as xet_registry

ATTEMPTS = 8
GITATTRIBUTES = ".gitattributes"
README = "README.md"


def stale_parent() -> HubError:
    return HubError(412, None, "A commit has happened since. Please refresh and try again.")


class Moved(Exception):
    """The branch moved between reading its head and swapping it."""


@dataclass
class Change:
    """What a commit asks for, and who asks."""

    title: str
    description: str
    parent: str | None
    operations: list[Operation]
    author: str
    audit: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    commit: CommitRow
    old: str
    files: int
    bytes: int


class Committer:
    """Builds commits on hosted branches (blocking work runs in worker threads)."""

    def __init__(self, engine: Engine, blobs: HostedBlobs) -> None:
        self.engine = engine
        self.blobs = blobs

    async def commit(self, repo: RepoRef, branch: str, change: Change) -> Outcome:
        for _ in range(ATTEMPTS):
            head, base = await asyncio.to_thread(self._base, repo, branch, change.parent)
            files, counted = await asyncio.to_thread(self._apply, repo, base, change.operations)
            files = await self._extend_gitattributes(repo, files, change.operations)
            info = await self._card(files, base, head)
            listed, tree = with_folders(files.values())
            if tree == head.tree:
                return Outcome(head, head.id, 0, 0)  # nothing changed: the head stands
            now = time.time()
            message = commit_message(change.title, change.description)
            new = CommitRow(commit_id(tree, head.id, change.author, int(now), message), head.id, tree,
                            change.title.strip(), message, change.author, now)
            try:
                await asyncio.to_thread(self._land, repo, branch, new, listed, info, change, counted)
            except Moved:
                if change.parent is not None:
                    raise stale_parent() from None
                continue
            return Outcome(new, head.id, *counted)
        raise HubError(409, None, "The branch is too busy: other commits kept landing first. Try again.")

    def _base(self, repo: RepoRef, branch: str, parent: str | None) -> tuple[CommitRow, dict[str, Entry]]:
        with self.engine.connect() as conn:
            ref = repo_rows.get_ref(conn, repo.type, repo.id, branch)
            if ref is None or ref.kind != "branch":
                raise revision_not_found(branch)
            if parent is not None and not ref.commit.startswith(parent):
                raise stale_parent()
            head = rows.commit_row(conn, repo.type, repo.id, ref.commit)
            loaded = repo_rows.load_listing(conn, repo.type, repo.id, ref.commit)
        if head is None or loaded is None:
            raise HubError(500, "BrokenRepo", f"the head of {branch} has no stored listing")
        return head, {e.path: e for e in loaded[0] if e.kind == FILE}

    def _apply(self, repo: RepoRef, base: dict[str, Entry],
               operations: list[Operation]) -> tuple[dict[str, Entry], tuple[int, int]]:
        files = dict(base)
        added = size_total = 0
        with self.engine.connect() as conn:
            for op in operations:
                if op.kind == "file":
                    assert op.blob is not None and op.size is not None
                    files[op.path] = Entry(op.path, FILE, op.size, op.blob, op.blob)
                elif op.kind == "lfsFile":
                    files[op.path] = self._lfs_entry(conn, repo, op)
                elif op.kind == "deletedFile":
                    if files.pop(op.path, None) is None:
                        raise entry_not_found(None, f"A file with this name doesn't exist: {op.path}")
                    continue
                else:
                    prefix = op.path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise entry_not_found(None, f"A folder with this name doesn't exist: {op.path}")
                    for p in doomed:
                        del files[p]
                    continue
                added += 1
                size_total += files[op.path].size
        return files, (added, size_total)

    def _lfs_entry(self, conn: Connection, repo: RepoRef, op: Operation) -> Entry:
        assert op.blob is not None
        size = rows.usable_object(conn, repo.type, repo.id, op.blob)
        if size is None:
            raise HubError(400, None, f"LFS object {op.blob} for {op.path} was never uploaded to this repo; "
                                      "upload it first (LFS batch)")
        if op.size is not None and op.size != size:
            raise HubError(400, None, f"LFS object {op.blob} has {size} bytes, not {op.size}")
        pointer = lfs_pointer(op.blob, size)
        xet = xet_registry.file_by_sha256(conn, op.blob)  # uploaded through Xet (or known in Xet form)
        extra = {"xetHash": xet.hash} if xet is not None and xet.size == size else None
        return Entry(op.path, FILE, size, file_oid(op.blob, size, True), op.blob, True, len(pointer), extra)

    async def _extend_gitattributes(self, repo: RepoRef, files: dict[str, Entry],
                                    operations: list[Operation]) -> dict[str, Entry]:
        """LFS paths no ``.gitattributes`` pattern covers get one, in the same commit (git clients stay right)."""
        lfs_paths = [op.path for op in operations if op.kind == "lfsFile" and op.path in files]
        if not lfs_paths:
            return files
        current = files.get(GITATTRIBUTES)
        text = ""
        if current is not None and not current.lfs and current.blob:
            text = (await self.blobs.read(current.blob, current.size)).decode("utf-8", "replace")
        patterns = lfs_patterns(text)
        missing = [p for p in lfs_paths if not covered(p, patterns)]
        if not missing:
            return files
        if text and not text.endswith("\n"):
            text += "\n"
        text += "".join(f"{p.replace(' ', '[[:space:]]')} filter=lfs diff=lfs merge=lfs -text\n" for p in missing)
        data = text.encode()
        key = git_blob_sha1(data)
        await self.blobs.put_bytes(key, data, (repo, "hubproxy"))
        return {**files, GITATTRIBUTES: Entry(GITATTRIBUTES, FILE, len(data), key, key)}

    async def _card(self, files: dict[str, Entry], base: dict[str, Entry], head: CommitRow) -> dict[str, Any] | None:
        """The repo info fields the README gives (None: unchanged from the parent commit)."""
        readme = files.get(README)
        if readme == base.get(README) and readme is not None:
            return None
        if readme is None or readme.blob is None or readme.size > 1024 * 1024:
            return info_fields(None)
        return info_fields(await self.blobs.read(readme.blob, readme.size))

    def _land(self, repo: RepoRef, branch: str, new: CommitRow, listed: list[Entry], info: dict[str, Any] | None,
              change: Change, counted: tuple[int, int]) -> None:
        try:
            with self.engine.begin() as conn:
                if info is None and new.parent:
                    inherited = repo_rows.get_commit_info(conn, repo.type, repo.id, new.parent)
                else:
                    inherited = json.dumps(info or {"tags": []}, separators=(",", ":"))
                rows.put_commit(conn, repo.type, repo.id, new, listed)
                repo_rows.put_commit_info(conn, repo.type, repo.id, new.id, inherited or '{"tags":[]}')
                if not rows.move_ref(conn, repo.type, repo.id, branch, "branch", new.parent, new.id):
                    raise Moved()
                rows.add_write_event(conn, {**change.audit, "repo_type": repo.type, "repo_id": repo.id,
                                            "action": "commit", "ref": branch, "old_commit": new.parent,
                                            "new_commit": new.id, "files": counted[0], "bytes": counted[1],
                                            "detail": {"title": new.title, "paths": _paths(change.operations)}})
        except IntegrityError:
            raise Moved() from None


def _paths(operations: list[Operation], limit: int = 1000) -> list[str]:
    shown = [f"{'-' if op.kind.startswith('deleted') else '+'}{op.path}" for op in operations[:limit]]
    return shown + ([f"... {len(operations) - limit} more"] if len(operations) > limit else [])
