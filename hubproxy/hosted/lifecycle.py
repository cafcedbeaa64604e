"""Hosted repos' lifecycle and refs: create, delete, move, settings, branches, tags, super-squash.

Each change is one transaction with its audit event (``audit_writes``), so the trail never shows a
change that did not happen, nor misses one that did.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from hubproxy.hosted import rows
from hubproxy.hosted.blobio import HostedBlobs
from hubproxy.hosted.gitobjects import DEFAULT_GITATTRIBUTES, commit_id, commit_message, with_folders
from hubproxy.hosted.rows import CommitRow, HostedRepo
from hubproxy.hub.errors import HubError, revision_not_found
from hubproxy.repos import rows as repo_rows
from hubproxy.repos.index import RepoIndex
from hubproxy.repos.model import FILE, Entry, RepoRef, git_blob_sha1

DEFAULT_BRANCH = "main"
_REF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


def conflict(message: str) -> HubError:
    return HubError(409, None, message)


def check_ref_name(name: str, what: str) -> str:
    """Branch and tag names: git's rules, and never ``refs/...`` (those belong to the Hub)."""
    if (not _REF_NAME.fullmatch(name) or name.startswith("refs/") or ".." in name or "//" in name
            or name.endswith((".", "/", ".lock")) or "/." in name or name.lower() == "head"):
        raise HubError(400, None, f"Invalid {what} name: {name[:100]!r}")
    return name


class Lifecycle:
    """Repo-level changes of hosted repos."""

    def __init__(self, engine: Engine, index: RepoIndex, blobs: HostedBlobs) -> None:
        self.engine = engine
        self.index = index
        self.blobs = blobs

    async def _tx(self, fn: Any) -> Any:
        def run() -> Any:
            with self.engine.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    # -- repos --------------------------------------------------------------------------------
    async def create(self, repo: RepoRef, visibility: str, author: str, audit: dict[str, Any]) -> None:
        """A new repo with its first commit on ``main`` holding ``.gitattributes``; 409 if it exists."""
        data = DEFAULT_GITATTRIBUTES
        key = git_blob_sha1(data)
        await self.blobs.put_bytes(key, data)
        listed, tree = with_folders([Entry(".gitattributes", FILE, len(data), key, key)])
        now = time.time()
        message = commit_message("initial commit", "")
        first = CommitRow(commit_id(tree, None, author, int(now), message), None, tree, "initial commit", message,
                          author, now)

        def write(conn: Connection) -> None:
            if rows.find_repo(conn, repo.type, repo.id) is not None:
                raise conflict(f"You already created this {repo.type} repo")
            rows.insert_repo(conn, repo.type, repo.id, visibility)
            rows.put_commit(conn, repo.type, repo.id, first, listed)
            repo_rows.put_commit_info(conn, repo.type, repo.id, first.id, '{"tags":[]}')
            rows.move_ref(conn, repo.type, repo.id, DEFAULT_BRANCH, "branch", None, first.id)
            rows.add_write_event(conn, {**audit, "repo_type": repo.type, "repo_id": repo.id, "action": "repo.create",
                                        "ref": DEFAULT_BRANCH, "new_commit": first.id,
                                        "detail": {"visibility": visibility}})

        try:
            await self._tx(write)
        except IntegrityError:
            raise conflict(f"You already created this {repo.type} repo") from None

    async def delete(self, repo: HostedRepo, audit: dict[str, Any]) -> None:
        def write(conn: Connection) -> None:
            rows.delete_repo(conn, repo.type, repo.id)
            rows.add_write_event(conn, {**audit, "repo_type": repo.type, "repo_id": repo.id, "action": "repo.delete"})

        await self._tx(write)
        self.index.forget_repo(repo.type, repo.id)

    async def move(self, repo: HostedRepo, new_id: str, audit: dict[str, Any]) -> None:
        def write(conn: Connection) -> None:
            if rows.find_repo(conn, repo.type, new_id) is not None:
                raise conflict(f"A {repo.type} repo named {new_id} exists already")
            rows.move_repo(conn, repo.type, repo.id, new_id)
            rows.add_write_event(conn, {**audit, "repo_type": repo.type, "repo_id": new_id, "action": "repo.move",
                                        "detail": {"from": repo.id, "to": new_id}})

        await self._tx(write)
        self.index.forget_repo(repo.type, repo.id)

    async def settings(self, repo: HostedRepo, changes: dict[str, Any], audit: dict[str, Any]) -> None:
        before = {"visibility": repo.visibility, "gated": repo.gated}

        def write(conn: Connection) -> None:
            rows.set_settings(conn, repo.type, repo.id, **changes)
            rows.add_write_event(conn, {**audit, "repo_type": repo.type, "repo_id": repo.id, "action": "repo.settings",
                                        "detail": {"before": before, "after": {**before, **changes}}})

        await self._tx(write)

    # -- branches and tags ----------------------------------------------------------------------
    async def create_ref(self, repo: RepoRef, kind: str, name: str, commit: str, message: str | None,
                         audit: dict[str, Any]) -> None:
        def write(conn: Connection) -> None:
            if not rows.move_ref(conn, repo.type, repo.id, name, kind, None, commit, message):
                raise conflict(f"Reference {name} already exists")
            rows.add_write_event(conn, {**audit, "repo_type": repo.type, "repo_id": repo.id,
                                        "action": f"{kind}.create", "ref": name, "new_commit": commit,
                                        "detail": {"message": message} if message else None})

        await self._tx(write)

    async def delete_ref(self, repo: RepoRef, kind: str, name: str, audit: dict[str, Any]) -> None:
        if kind == "branch" and name == DEFAULT_BRANCH:
            raise HubError(403, None, "Cannot delete the default branch")

        def write(conn: Connection) -> None:
            ref = repo_rows.get_ref(conn, repo.type, repo.id, name)
            if ref is None or ref.kind != kind:
                raise revision_not_found(name)
            if not rows.move_ref(conn, repo.type, repo.id, name, kind, ref.commit, None):
                raise conflict(f"{name} changed meanwhile; try again")
            rows.add_write_event(conn, {**audit, "repo_type": repo.type, "repo_id": repo.id,
                                        "action": f"{kind}.delete", "ref": name, "old_commit": ref.commit})

        await self._tx(write)

    async def squash(self, repo: RepoRef, branch: str, message: str, author: str, audit: dict[str, Any]) -> str:
        """Replace the branch with one parentless commit holding its tree; other refs keep their commits."""

        def write(conn: Connection) -> str:
            ref = repo_rows.get_ref(conn, repo.type, repo.id, branch)
            if ref is None or ref.kind != "branch":
                raise revision_not_found(branch)
            head = rows.commit_row(conn, repo.type, repo.id, ref.commit)
            loaded = repo_rows.load_listing(conn, repo.type, repo.id, ref.commit)
            if head is None or loaded is None:
                raise HubError(500, "BrokenRepo", f"the head of {branch} has no stored listing")
            now = time.time()
            text = commit_message(message, "")
            new = CommitRow(commit_id(head.tree, None, author, int(now), text), None, head.tree, message.strip(),
                            text, author, now)
            rows.put_commit(conn, repo.type, repo.id, new, loaded[0])
            info = repo_rows.get_commit_info(conn, repo.type, repo.id, head.id) or '{"tags":[]}'
            repo_rows.put_commit_info(conn, repo.type, repo.id, new.id, info)
            if not rows.move_ref(conn, repo.type, repo.id, branch, "branch", head.id, new.id):
                raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
            rows.add_write_event(conn, {**audit, "repo_type": repo.type, "repo_id": repo.id, "action": "squash",
                                        "ref": branch, "old_commit": head.id, "new_commit": new.id})
            return new.id

        return await self._tx(write)
