"""Preupload and commit routes of hosted repos (``docs/protocol.md``, "Commits").

Preupload tells the client, per file, how to send it (``modes.py``) and what the branch holds at that
path now (``oid``: the sha256 of an LFS file, the git blob id of a regular one), so unchanged files are
not sent again. The commit body is spooled to disk as it arrives, read line by line (``ndjson.py``),
its files stored, and the commit built on the branch (``committer.py``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hubproxy.auth.identity import Authenticated
from hubproxy.config import Settings
from hubproxy.hosted.blobio import HostedBlobs
from hubproxy.hosted.committer import Change, Committer
from hubproxy.hosted.common import PRS_DISABLED, Target, audit_of, forbidden, json_body
from hubproxy.hosted.modes import lfs_patterns, upload_mode
from hubproxy.hosted.ndjson import CommitBody, CommitBodyError, Header, Operation
from hubproxy.hosted.source import HostedSource
from hubproxy.hub.errors import HubError, bad_request
from hubproxy.hub.metadata_routes import json_response
from hubproxy.hub.routing import RESOLVE_PREFIX, parse_bool, validate_repo_path
from hubproxy.limits import BodyTooLarge, spool_body
from hubproxy.repos.model import RepoRef

MAX_PREUPLOAD_FILES = 1000
#: A commit body beyond its files: the header and operation lines, for ``max_commit_operations`` of them.
LINE_ALLOWANCE = 4096


def check_path(path: str) -> str:
    """A path in a repo as a commit may name it: relative, no empty, ``.`` or ``..`` segment, no ``.git``."""
    if not isinstance(path, str) or not path or path.startswith("/"):
        raise bad_request(f"Invalid path in repo: {str(path)[:100]!r}")
    parts = path.split("/")
    if any(p in (".git", ".cache") for p in parts[:-1]) or parts[0] == ".git":
        raise bad_request(f"Paths inside .git/ or .cache/ are not allowed: {path[:100]!r}")
    return validate_repo_path(parts, "Path in repo")


class HostedCommits:
    """``preupload`` and ``commit`` on hosted branches."""

    def __init__(self, settings: Settings, source: HostedSource, blobs: HostedBlobs, committer: Committer,
                 client_ip: Any) -> None:
        self.settings = settings
        self.source = source
        self.blobs = blobs
        self.committer = committer
        self.client_ip = client_ip
        #: Called after a commit lands (the Xet converter looks for new large files).
        self.on_commit: list[Callable[[], None]] = []

    async def _branch(self, request: Request, target: Target, revision: str | None) -> tuple[RepoRef, str]:
        if parse_bool(request.query_params.get("create_pr")):
            raise forbidden(PRS_DISABLED)
        if not target.rights.write:
            raise forbidden("You don't have the rights to push to this repo")
        repo = target.ref
        branch = revision or "main"
        await self.source.resolve(repo, branch)  # RevisionNotFound for a branch that does not exist
        refs, _ = await self.source.refs(repo)
        if not any(r.name == branch and r.kind == "branch" for r in refs):
            raise HubError(400, None, f"{branch} is not a branch: commits go to branches")
        return repo, branch

    async def preupload(self, request: Request, revision: str | None, target: Target) -> Response:
        body = await json_body(request, 4 * 1024 * 1024)
        repo, branch = await self._branch(request, target, revision)
        files = body.get("files")
        if not isinstance(files, list) or len(files) > MAX_PREUPLOAD_FILES:
            raise bad_request(f"files must be a list of at most {MAX_PREUPLOAD_FILES}")
        commit = (await self.source.resolve(repo, branch)).commit
        listing = await self.source.listing(repo, commit)
        assert listing is not None
        gitattributes = listing.file(".gitattributes")
        patterns = lfs_patterns((await self.blobs.read(gitattributes.blob, gitattributes.size)).decode(
            "utf-8", "replace")) if gitattributes and gitattributes.blob and not gitattributes.lfs else []
        agent = request.headers.get("user-agent", "")
        out = []
        for item in files:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str) \
                    or not isinstance(item.get("size"), int):
                raise bad_request("each file needs a path and a size")
            path = item["path"]
            check_path(path)
            mode = upload_mode(path, item["size"], agent, patterns, self.settings.hosted_upload_mode,
                               self.settings.regular_upload_max_bytes, self.settings.xet)
            current = listing.file(path)
            oid = (current.blob if current.lfs else current.oid) if current is not None else None
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return json_response({"files": out, "commitOid": commit})

    async def commit(self, request: Request, revision: str | None, target: Target, who: Authenticated,
                     base: str) -> Response:
        repo, branch = await self._branch(request, target, revision)
        spooled = await self._spool(request)
        try:
            header, operations = await asyncio.to_thread(self._read, spooled, (repo, who.principal.name))
        finally:
            os.unlink(spooled)
        change = Change(header.summary, header.description, header.parent, operations, who.principal.name,
                        audit_of(who, self.client_ip(request)))
        outcome = await self.committer.commit(repo, branch, change)
        for hook in self.on_commit:
            hook()
        url = f"{base}/{RESOLVE_PREFIX[repo.type]}{repo.id}/commit/{outcome.commit.id}"
        return json_response({"success": True, "commitOid": outcome.commit.id, "commitUrl": url,
                              "hookOutput": ""})

    async def _spool(self, request: Request) -> str:
        """The request body in a file (never whole in memory), within the largest body a commit may have."""
        limit = self.settings.regular_upload_max_bytes * 4 // 3 * 2 + self.settings.max_commit_operations * LINE_ALLOWANCE
        try:
            return await spool_body(request, self.blobs.tmp_dir, "commit-", limit)
        except BodyTooLarge:
            raise HubError(413, "PayloadTooLarge", f"A commit body may hold at most {limit} bytes") from None

    def _read(self, path: str, owner: tuple[RepoRef, str]) -> tuple[Header, list[Operation]]:
        stored: list[tuple[str, int]] = []

        def store(file: str, key: str, size: int) -> None:  # recorded together below: one transaction a commit
            self.blobs.put_file(file, key, size, owner, record=False)
            stored.append((key, size))

        body = CommitBody(path, self.blobs.tmp_dir, store, self.settings.regular_upload_max_bytes,
                          self.settings.max_commit_operations)
        try:
            header = body.header()
            operations = []
            for op in body.operations():
                check_path(op.path)
                operations.append(op)
        except CommitBodyError as exc:
            raise HubError(exc.status, None, f"Bad commit: {exc}") from None
        finally:
            body.close()
            self.blobs.record(stored, owner)
        if not operations:
            raise bad_request("A commit needs at least one operation")
        return header, operations
