"""The one renderer: tree entries, siblings, repo info variants, tree pages with their Link, refs."""

from __future__ import annotations

import hashlib

from hubproxy.hub.render import refs, repo_info, sibling, tree_entry, tree_page
from hubproxy.repos.model import DIRECTORY, FILE, Entry, Listing, git_blob_sha1, lfs_pointer
from hubproxy.repos.rows import Ref

SHA = hashlib.sha256(b"weights").hexdigest()
REGULAR = Entry("config.json", FILE, 12, git_blob_sha1(b'{"a": 1}\n...'), git_blob_sha1(b'{"a": 1}\n...'))
LFS = Entry("w.safetensors", FILE, 7 << 20, None, SHA, True, None,
            {"lastCommit": {"id": "c" * 40}, "securityFileStatus": {"status": "safe"}, "xetHash": None})
FOLDER = Entry("sub", DIRECTORY, 0, "d" * 40)


def test_tree_entries_have_the_hub_shape() -> None:
    assert tree_entry(REGULAR, False) == {"type": "file", "oid": REGULAR.oid, "size": 12, "path": "config.json"}
    pointer = lfs_pointer(SHA, 7 << 20)
    lfs = tree_entry(LFS, False)
    assert lfs["oid"] == git_blob_sha1(pointer)  # the pointer file's git id, computed when not listed
    assert lfs["lfs"] == {"oid": SHA, "size": 7 << 20, "pointerSize": len(pointer)}
    assert "lastCommit" not in lfs and "securityFileStatus" not in lfs  # expand-only fields
    assert tree_entry(LFS, True)["lastCommit"] == {"id": "c" * 40}
    assert tree_entry(FOLDER, False) == {"type": "directory", "oid": "d" * 40, "size": 0, "path": "sub"}


def test_siblings_with_and_without_blobs() -> None:
    assert sibling(LFS, False) == {"rfilename": "w.safetensors"}
    full = sibling(LFS, True)
    assert full["size"] == 7 << 20 and full["lfs"]["sha256"] == SHA and full["blobId"] == tree_entry(LFS, False)["oid"]
    assert sibling(REGULAR, True) == {"rfilename": "config.json", "size": 12, "blobId": REGULAR.oid}


def test_repo_info_variants() -> None:
    info = {"_id": "x", "id": "alice/m", "sha": "e" * 40, "downloads": 3, "securityRepoStatus": {"scans": []}}
    listing = Listing([FOLDER, REGULAR, LFS])
    plain = repo_info(info, listing, False, [], False)
    assert [s["rfilename"] for s in plain["siblings"]] == ["config.json", "w.safetensors"]
    assert "securityRepoStatus" not in plain and plain["downloads"] == 3
    assert "securityRepoStatus" in repo_info(info, listing, False, [], True)
    assert repo_info(info, listing, False, ["sha"], False) == {"_id": "x", "id": "alice/m", "sha": "e" * 40}


def test_tree_pages_link_to_the_next_page_on_hubproxy() -> None:
    shown = [Entry(f"f{i}", FILE, i, git_blob_sha1(b"%d" % i), git_blob_sha1(b"%d" % i)) for i in range(5)]
    page, link = tree_page("dataset", "alice/d", "e" * 40, "sub dir", shown, True, False, 0, 2, "http://hub:8000/x")
    assert [e["path"] for e in page] == ["f0", "f1"]
    assert link == ('<http://hub:8000/x/api/datasets/alice/d/tree/' + "e" * 40 +
                    '/sub%20dir?recursive=true&expand=false&cursor=2>; rel="next"')
    page, link = tree_page("dataset", "alice/d", "e" * 40, "", shown, False, False, 4, 2, "http://h")
    assert [e["path"] for e in page] == ["f4"] and link is None


def test_refs_are_grouped_with_full_names() -> None:
    known = [Ref("main", "a" * 40, "branch", 0), Ref("v1", "b" * 40, "tag", 0), Ref("parquet", "c" * 40, "convert", 0),
             Ref("refs/pr/1", "d" * 40, "pr", 0), Ref("old", "e" * 40, "seen", 0)]
    assert refs(known, False) == {
        "branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": "a" * 40}],
        "converts": [{"name": "parquet", "ref": "refs/convert/parquet", "targetCommit": "c" * 40}],
        "tags": [{"name": "v1", "ref": "refs/tags/v1", "targetCommit": "b" * 40}]}
    assert refs(known, True)["pullRequests"] == [{"name": "refs/pr/1", "ref": "refs/pr/1", "targetCommit": "d" * 40}]
