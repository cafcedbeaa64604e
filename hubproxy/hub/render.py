"""One renderer for every repo, mirrored or hosted: repo info (all variants), tree pages, paths-info, refs.

It works from what a repo source answers (``repos/source.py``): a commit's info, its listing (rows),
its refs. So the answers are the same online, offline and for imported bundles, and the same for
hosted repos. The shapes are the Hub's (``docs/protocol.md``, "Metadata").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from hubproxy.repos.model import DIRECTORY, Entry, Listing, git_blob_sha1, lfs_pointer
from hubproxy.repos.rows import Ref
from hubproxy.repos.upstream import ABSENT
from hubproxy.upstream.answers import api_path

#: Listing fields only an ``expand=true`` answer shows.
EXPAND_ONLY = frozenset({"lastCommit", "securityFileStatus"})


def _lfs_fields(e: Entry) -> tuple[str, int]:
    """The git object id and size of an LFS file's pointer file."""
    pointer = lfs_pointer(e.blob or "", e.size)
    return e.oid or git_blob_sha1(pointer), e.pointer_size or len(pointer)


def tree_entry(e: Entry, expand: bool) -> dict[str, Any]:
    """An entry as tree and paths-info answers give it."""
    extra = {k: v for k, v in (e.extra or {}).items() if expand or k not in EXPAND_ONLY}
    if e.kind == DIRECTORY:
        return {"type": "directory", "oid": e.oid or "", "size": 0, "path": e.path, **extra}
    out: dict[str, Any] = {"type": "file", "oid": e.oid, "size": e.size, "path": e.path}
    if e.lfs:
        oid, pointer_size = _lfs_fields(e)
        out["oid"] = oid
        out["lfs"] = {"oid": e.blob, "size": e.size, "pointerSize": pointer_size}
    out.update(extra)
    return out


def sibling(e: Entry, blobs: bool) -> dict[str, Any]:
    """A file as repo info's ``siblings`` lists it (``blobs=true``: with size, blob id and LFS fields)."""
    out: dict[str, Any] = {"rfilename": e.path}
    if blobs:
        out["size"] = e.size
        if e.lfs:
            oid, pointer_size = _lfs_fields(e)
            out["blobId"] = oid
            out["lfs"] = {"sha256": e.blob, "size": e.size, "pointerSize": pointer_size}
        else:
            out["blobId"] = e.oid or e.blob
    return out


def repo_info(info: dict[str, Any], listing: Listing | None, blobs: bool, expand: list[str],
              security: bool) -> dict[str, Any]:
    """Repo info at a commit, as the variant asked for: plain, ``blobs``, ``securityStatus``, ``expand=...``."""
    out = {k: v for k, v in info.items() if k != ABSENT and (security or k != "securityRepoStatus")}
    if listing is not None:
        out["siblings"] = [sibling(e, blobs) for e in listing.entries if e.is_file]
    if expand:
        out = {k: out[k] for k in ("_id", "id", *expand) if k in out}
    return out


def tree_page(repo_type: str, repo_id: str, commit: str, folder: str, shown: list[Entry], recursive: bool,
              expand: bool, cursor: int, size: int, base_url: str) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a tree answer, and the absolute ``Link`` to the next page on hubproxy (or None)."""
    page = [tree_entry(e, expand) for e in shown[cursor: cursor + size]]
    if cursor + size >= len(shown):
        return page, None
    parts = ["tree", commit] + ([folder] if folder else [])
    query = urlencode({"recursive": str(recursive).lower(), "expand": str(expand).lower(), "cursor": cursor + size})
    return page, f'<{base_url}{api_path(repo_type, repo_id, *parts)}?{query}>; rel="next"'


_PREFIXES = {"branch": "refs/heads/", "tag": "refs/tags/", "convert": "refs/convert/"}
_GROUPS = {"branch": "branches", "tag": "tags", "convert": "converts", "pr": "pullRequests"}


def refs(known: list[Ref], include_prs: bool) -> dict[str, Any]:
    """``GET /refs``: branches, converts and tags always (clients read all three), PRs when asked for."""
    out: dict[str, Any] = {"branches": [], "converts": [], "tags": []}
    if include_prs:
        out["pullRequests"] = []
    for ref in known:
        group = _GROUPS.get(ref.kind)
        if group is None or group not in out:
            continue
        full = ref.name if ref.kind == "pr" else _PREFIXES[ref.kind] + ref.name
        out[group].append({"name": ref.name, "ref": full, "targetCommit": ref.commit})
    return out
