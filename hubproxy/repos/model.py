"""What hubproxy knows about a repo at a commit: entries (files and folders) and listings of them.

Mirrored and hosted repos are described the same way, so one renderer (``hub/render.py``) builds
every answer about them: repo info, tree pages, paths-info.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: Entry kinds. ``missing``: the upstream said the path does not exist at the commit (for certain);
#: ``left_out``: the path exists, but the bundle imported here did not carry it.
FILE, DIRECTORY, MISSING, LEFT_OUT = "file", "directory", "missing", "left_out"


@dataclass(frozen=True)
class Entry:
    """One path at a commit."""

    path: str
    kind: str
    size: int = 0
    #: The git object id: of the file (regular), of its LFS pointer file (LFS), of the tree (folder).
    oid: str | None = None
    #: What identifies the file's bytes: the sha256 (LFS) or git blob sha1 (regular); an upstream ETag that
    #: is no hash for files hubproxy can only pass through.
    blob: str | None = None
    lfs: bool = False
    pointer_size: int | None = None
    #: Listing fields hubproxy keeps without modelling them (``lastCommit``, ``securityFileStatus``, ...).
    extra: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    @property
    def is_file(self) -> bool:
        return self.kind == FILE

    @property
    def exists(self) -> bool:
        return self.kind in (FILE, DIRECTORY)

    @property
    def etag(self) -> str:
        return self.blob or ""


def parent_folders(path: str) -> list[str]:
    """``a/b/c.txt`` -> ``["a", "a/b"]``."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class Listing:
    """A commit's complete listing, in its order (the upstream's, or folders then files), with the folder
    views clients page through computed once per commit, not once per page."""

    def __init__(self, entries: list[Entry], left_out: set[str] | None = None) -> None:
        self.left_out = left_out or set()
        kept = [e for e in entries if e.exists and e.path not in self.left_out]
        if self.left_out:  # a folder whose files were all left out is not shown either
            holding = {folder for e in kept if e.is_file for folder in parent_folders(e.path)}
            kept = [e for e in kept if e.is_file or e.path in holding]
        self.entries = kept
        self.by_path = {e.path: e for e in kept}
        self._views: dict[tuple[str, bool], list[Entry] | None] = {}

    def file(self, path: str) -> Entry | None:
        """The file at ``path``, or None: the listing is complete, so it certainly does not exist here."""
        entry = self.by_path.get(path)
        return entry if entry is not None and entry.is_file else None

    def view(self, folder: str, recursive: bool) -> list[Entry] | None:
        """What a tree request for ``folder`` lists; None if it is no folder of this commit."""
        key = (folder, recursive)
        if key not in self._views:
            self._views[key] = self._compute_view(folder, recursive)
        return self._views[key]

    def _compute_view(self, folder: str, recursive: bool) -> list[Entry] | None:
        prefix = folder + "/" if folder else ""
        if folder and self.by_path.get(folder, Entry(folder, DIRECTORY)).kind != DIRECTORY:
            return None
        view = []
        for e in self.entries:
            if not e.path.startswith(prefix):
                continue
            rest = e.path[len(prefix):]
            if rest and (recursive or "/" not in rest):
                view.append(e)
        if folder and not view and folder not in self.by_path:
            return None
        return view


class RepoRef(NamedTuple):
    """A repo as hubproxy names it: its type and canonical id."""

    type: str
    id: str


@dataclass(frozen=True)
class Resolved:
    """The commit a revision names; ``stale`` when it is the last known answer (the upstream cannot say)."""

    commit: str
    stale: bool = False


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git LFS pointer file that stands in a git tree for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file's content (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


#: How the refs answer groups refs, and the kind each group's refs get.
REF_KINDS = {"branches": "branch", "tags": "tag", "converts": "convert", "pullRequests": "pr"}


#: Listing fields ``Entry`` models; the rest is kept as its ``extra``.
MODELED = frozenset({"type", "oid", "size", "path", "lfs"})
#: Listing fields never kept from an answer: a Xet hash is shown only by hubproxy's own CAS, for files it holds
#: in Xet form (an imported tree of another hubproxy's hosted repo carries one).
DROPPED = frozenset({"xetHash"})


def entry_of(e: dict[str, Any]) -> Entry:
    """The entry a tree or paths-info answer item describes."""
    lfs = e.get("lfs") if isinstance(e.get("lfs"), dict) else None
    extra = {k: v for k, v in e.items() if k not in MODELED and k not in DROPPED} or None
    if e.get("type") == "directory":
        return Entry(e["path"], DIRECTORY, 0, e.get("oid"), None, False, None, extra)
    size = (lfs or e).get("size") or 0
    return Entry(e["path"], FILE, int(size), e.get("oid"), lfs["oid"] if lfs else e.get("oid"), lfs is not None,
                 lfs.get("pointerSize") if lfs else None, extra)
