"""Git object ids for hosted repos, computed as git computes them, so ids look and behave like the Hub's.

A regular file's id is its git blob id; an LFS file's is the blob id of its pointer file; a folder's is
its git tree id; a commit's is the git commit id over its tree, parent, author, time and message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from hubproxy.repos.model import DIRECTORY, FILE, Entry, git_blob_sha1, lfs_pointer, parent_folders

FILE_MODE, TREE_MODE = b"100644", b"40000"


def blob_hasher(size: int) -> hashlib._Hash:
    """A sha1 primed with the git blob header: feed it the content to get the blob id."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % size)
    return h


def file_oid(blob: str, size: int, lfs: bool) -> str:
    """The git id a file has in a tree: of its content (``blob`` is its git blob id) or of its LFS pointer."""
    return git_blob_sha1(lfs_pointer(blob, size)) if lfs else blob


def _tree_id(items: list[tuple[str, bytes, str]]) -> str:
    """The id of a git tree holding ``(name, mode, hex id)`` items (git's order: folders sort as ``name/``)."""
    items = sorted(items, key=lambda it: it[0].encode() + (b"/" if it[1] == TREE_MODE else b""))
    body = b"".join(mode + b" " + name.encode() + b"\0" + bytes.fromhex(oid) for name, mode, oid in items)
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


def with_folders(files: Iterable[Entry]) -> tuple[list[Entry], str]:
    """The full listing of a commit holding ``files`` (folders with their tree ids, folders first, then
    files, each by path) and the root tree id."""
    files = sorted(files, key=lambda e: e.path)
    children: dict[str, list[tuple[str, bytes, str]]] = {"": []}
    for e in files:
        for folder in parent_folders(e.path):
            children.setdefault(folder, [])
    for e in files:
        folder, _, name = e.path.rpartition("/")
        children[folder].append((name, FILE_MODE, e.oid or ""))
    tree_ids: dict[str, str] = {}
    for folder in sorted(children, key=lambda f: f.count("/") + (1 if f else 0), reverse=True):
        if folder:
            tree_ids[folder] = _tree_id(children[folder])
            parent, _, name = folder.rpartition("/")
            children[parent].append((name, TREE_MODE, tree_ids[folder]))
    root = _tree_id(children[""])
    folders = [Entry(f, DIRECTORY, 0, tree_ids[f]) for f in sorted(tree_ids)]
    return folders + [e for e in files if e.kind == FILE], root


def commit_id(tree: str, parent: str | None, author: str, when: int, message: str) -> str:
    """The git commit id of a commit with these parts (author and committer are the same)."""
    who = f"{author} <{author}@hubproxy> {when} +0000".encode()
    text = b"tree " + tree.encode() + b"\n"
    if parent:
        text += b"parent " + parent.encode() + b"\n"
    text += b"author " + who + b"\ncommitter " + who + b"\n\n" + message.encode()
    return hashlib.sha1(b"commit %d\0" % len(text) + text).hexdigest()


def commit_message(title: str, description: str) -> str:
    """The message of a commit: its title, and the description as its body."""
    return title.strip() + "\n" + (f"\n{description.strip()}\n" if description.strip() else "")


#: The .gitattributes a new repo's first commit holds: the Hub's usual LFS patterns.
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl",
    "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz",
    "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
)).encode()
