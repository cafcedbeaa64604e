"""Hosted repos' pure parts: git ids as git makes them, the commit body reader, upload modes, model cards."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hubproxy.hosted.card import CardError, card_data, info_fields
from hubproxy.hosted.gitobjects import commit_id, with_folders
from hubproxy.hosted.modes import client_version, covered, upload_mode
from hubproxy.hosted.ndjson import SMALL_LINE, CommitBody, CommitBodyError
from hubproxy.hub.errors import HubError
from hubproxy.repos.model import FILE, Entry, git_blob_sha1


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_tree_and_commit_ids_are_gits(tmp_path: Path) -> None:
    files = {"a.txt": b"hello\n", "sub/b.txt": b"x", "sub/deep/c": b"yy", "sub-a": b"z", "sub.x/q": b"q"}
    for path, data in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)

    def git(*args: str, **env: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True,
                              env={**os.environ, **env}).stdout.strip()

    git("init", "-q")
    git("add", "-A")
    tree = git("write-tree")
    listed, root = with_folders([Entry(p, FILE, len(d), git_blob_sha1(d), git_blob_sha1(d)) for p, d in files.items()])
    assert root == tree
    assert {e.path: e.oid for e in listed if e.kind == "directory"}["sub"] == git("rev-parse", f"{tree}:sub")
    who = {"GIT_AUTHOR_NAME": "alice", "GIT_AUTHOR_EMAIL": "alice@hubproxy", "GIT_AUTHOR_DATE": "1700000000 +0000",
           "GIT_COMMITTER_NAME": "alice", "GIT_COMMITTER_EMAIL": "alice@hubproxy",
           "GIT_COMMITTER_DATE": "1700000000 +0000"}
    assert git("commit-tree", tree, "-m", "Title", **who) == commit_id(root, None, "alice", 1700000000, "Title\n")


def _body(tmp_path: Path, lines: list[dict], max_file: int = 10**9, max_ops: int = 100) -> tuple:
    path = tmp_path / "body"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    stored: dict[str, bytes] = {}

    def sink(file: str, key: str, size: int) -> None:
        data = Path(file).read_bytes()
        assert len(data) == size and git_blob_sha1(data) == key
        stored[key] = data

    body = CommitBody(str(path), str(tmp_path), sink, max_file, max_ops)
    try:
        return body.header(), list(body.operations()), stored
    finally:
        body.close()


HEADER = {"key": "header", "value": {"summary": "s", "description": "", "parentCommit": "ABCDE12"}}


def test_commit_body_small_and_streamed_files(tmp_path: Path) -> None:
    big = os.urandom(SMALL_LINE * 2 + 5)  # its line is over the small-line bound: streamed into a file
    lines = [HEADER,
             {"key": "file", "value": {"content": base64.b64encode(b"hi").decode(), "path": "a.txt",
                                       "encoding": "base64"}},
             {"key": "file", "value": {"content": base64.b64encode(big).decode(), "path": "big é.bin",
                                       "encoding": "base64"}},
             {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "a" * 64, "size": 3}},
             {"key": "deletedFolder", "value": {"path": "old"}}]
    header, ops, stored = _body(tmp_path, lines)
    assert header.parent == "abcde12" and [o.kind for o in ops] == ["file", "file", "lfsFile", "deletedFolder"]
    assert stored[ops[0].blob] == b"hi" and stored[ops[1].blob] == big and ops[1].path == "big é.bin"
    assert ops[2].blob == "a" * 64 and ops[2].size == 3


@pytest.mark.parametrize("lines,status", [
    ([{"key": "file", "value": {"path": "a"}}], 400),  # no header first
    ([HEADER, {"key": "file", "value": {"content": "!!", "path": "a"}}], 400),  # not base64
    ([HEADER, {"key": "lfsFile", "value": {"path": "a", "oid": "xyz"}}], 400),
    ([HEADER, {"key": "copyFile", "value": {"path": "a"}}], 400),
    ([HEADER, {"key": "deletedFile", "value": {"path": "a", "pad": "x" * (SMALL_LINE + 10)}}], 413),  # not a file
    ([HEADER] + [{"key": "deletedFile", "value": {"path": f"{i}"}} for i in range(101)], 413),  # too many
    ([HEADER, {"key": "file", "value": {"content": base64.b64encode(b"x" * 100).decode(), "path": "a"}}], 413),
])
def test_commit_body_refusals(tmp_path: Path, lines: list[dict], status: int) -> None:
    with pytest.raises(CommitBodyError) as caught:
        _body(tmp_path, lines, max_file=50)
    assert caught.value.status == status


def test_upload_modes() -> None:
    patterns = ["*.safetensors", "saved_model/**/*"]
    new, old = "hf_hub/2.4.0; python/3.11", "hf_hub/0.36.2; python/3.11"
    assert client_version(new) == (2, 4) and client_version("curl/8") is None
    assert upload_mode("w.safetensors", 300, old, patterns, "auto", 10**9) == "lfs"
    assert upload_mode("config.json", 300, old, patterns, "auto", 10**9) == "regular"
    assert upload_mode("w.safetensors", 300, new, patterns, "auto", 10**9) == "regular"
    assert upload_mode("data/train-0.parquet", 300, new + "; datasets/5.2.0", patterns, "auto", 10**9) == "lfs"
    assert upload_mode("x.bin", 300, new, patterns, "lfs", 10**9) == "lfs"
    assert upload_mode("empty", 0, new, patterns, "lfs", 10**9) == "regular"
    with pytest.raises(HubError) as caught:
        upload_mode("huge.bin", 2000, new, patterns, "auto", 1000)
    assert caught.value.status == 413 and "HF_HUB_DISABLE_XET=1" in caught.value.message
    assert covered("saved_model/a/b.pb", patterns) and not covered("a.txt", patterns)


def test_model_cards() -> None:
    text = "---\nlicense: mit\ndate: 2024-01-02\ntags: [a]\npipeline_tag: fill-mask\n---\n# card\n"
    assert card_data(text) == {"license": "mit", "date": "2024-01-02", "tags": ["a"], "pipeline_tag": "fill-mask"}
    fields = info_fields(text.encode())
    assert fields["tags"] == ["a", "license:mit"] and fields["pipeline_tag"] == "fill-mask"
    assert card_data("# no front matter") is None
    with pytest.raises(CardError):
        card_data("---\nlicense: [x\n---\n")
    assert info_fields(b"---\n- a list\n---\n") == {"tags": []}
