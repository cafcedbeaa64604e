"""Metadata routes, in process: info, tree pagination, paths-info, refs, commits, Xet keys."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from tests.fakehub import FakeHub
from tests.fast.inprocess import InProcessHub


def _walk_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(*(_walk_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_walk_keys(v) for v in value)) if value else set()
    return set()


def test_repo_info_forms(app: InProcessHub, fakehub: FakeHub) -> None:
    commit = fakehub.repos[("model", "alice/files")].branches["main"]
    for path in ("/api/models/alice/files", "/api/models/alice/files/revision/main",
                 f"/api/models/alice/files/revision/{commit}", "/api/models/alice/files?blobs=True",
                 "/api/models/alice/files/revision/main?blobs=true&expand=sha&expand=siblings"):
        status, h, body = app.request("GET", path)
        assert status == 200, path
        info = json.loads(body)
        assert info["id"] == "alice/files" and info["sha"] == commit
        assert {"xetHash", "xetEnabled"}.isdisjoint(_walk_keys(info))
    status, _, body = app.request("GET", "/api/models/alice/files?blobs=true")
    lfs = [s for s in json.loads(body)["siblings"] if "lfs" in s]
    assert lfs and all(set(s["lfs"]) == {"sha256", "size", "pointerSize"} for s in lfs)


def test_commit_answers_are_kept_for_good(app: InProcessHub, fakehub: FakeHub) -> None:
    commit = fakehub.repos[("model", "alice/files")].branches["main"]
    url = f"/api/models/alice/files/revision/{commit}"
    assert app.request("GET", url)[0] == 200
    before = len(fakehub.requests)
    assert app.request("GET", url)[0] == 200
    assert app.request("GET", f"/api/models/alice/files/tree/{commit}?recursive=true&expand=false")[0] == 200
    mid = len(fakehub.requests)
    assert app.request("GET", f"/api/models/alice/files/tree/{commit}?recursive=true&expand=false")[0] == 200
    assert mid > before and len(fakehub.requests) == mid


def test_tree_paginates_on_hubproxy(make_app, fakehub: FakeHub) -> None:  # noqa: ANN001
    app = make_app(tree_page_size="2")
    url = app.url + "/api/models/alice/files/tree/main?recursive=True&expand=False"
    entries = []
    pages = 0
    while url:
        status, h, body = app.request("GET", url)
        assert status == 200
        entries.extend(json.loads(body))
        pages += 1
        link = h.get("link")
        url = link[link.index("<") + 1: link.index(">")] if link else None
        if url:
            assert url.startswith(app.url + "/api/models/alice/files/tree/")
    assert pages >= 4
    paths = {e["path"] for e in entries}
    assert {"config.json", "sub dir", "sub dir/deeper", "sub dir/deeper/a.txt", "weights.bin"} <= paths
    assert len(paths) == len(entries)
    assert {"xetHash"}.isdisjoint(_walk_keys(entries))
    lfs = next(e for e in entries if e["path"] == "weights.bin")
    assert lfs["lfs"]["size"] == lfs["size"]


def test_tree_subpath_and_missing(app: InProcessHub) -> None:
    status, _, body = app.request("GET", "/api/models/alice/files/tree/main/sub%20dir?recursive=false&expand=false")
    assert status == 200
    assert {e["path"] for e in json.loads(body)} == {"sub dir/notes \u00e9.txt", "sub dir/deeper"}
    status, _, body2 = app.request("GET", "/api/models/alice/files/tree/main/sub%20dir/deeper?recursive=1")
    assert status == 200 and [e["path"] for e in json.loads(body2)] == ["sub dir/deeper/a.txt"]
    status, h, _ = app.request("GET", "/api/models/alice/files/tree/main/additional_chat_templates")
    assert status == 404 and h["x-error-code"] == "EntryNotFound"
    status, h, _ = app.request("GET", "/api/models/alice/nope/tree/main")
    assert h["x-error-code"] == "RepoNotFound"
    status, h, _ = app.request("GET", "/api/models/alice/files/tree/nobranch")
    assert status == 404 and h["x-error-code"] == "RevisionNotFound"


def test_paths_info_refs_commits(app: InProcessHub, fakehub: FakeHub) -> None:
    form = urlencode([("paths", "config.json"), ("paths", "sub dir"), ("paths", "missing"), ("expand", "false")])
    status, _, body = app.request("POST", "/api/models/alice/files/paths-info/main", {
        "Content-Type": "application/x-www-form-urlencoded"}, form.encode())
    assert status == 200
    got = {e["path"]: e["type"] for e in json.loads(body)}
    assert got == {"config.json": "file", "sub dir": "directory"}
    status, _, body = app.request("GET", "/api/models/alice/files/refs")
    refs = json.loads(body)
    assert set(refs) == {"branches", "converts", "tags"}
    assert refs["branches"][0]["targetCommit"] == fakehub.repos[("model", "alice/files")].branches["main"]
    status, _, body = app.request("GET", "/api/models/alice/files/refs?include_prs=1")
    assert "pullRequests" in json.loads(body)
    status, h, body = app.request("GET", "/api/models/alice/files/commits/main")
    assert status == 200 and json.loads(body)[0]["id"]


def test_commit_pagination_link_points_at_proxy(app: InProcessHub, fakehub: FakeHub) -> None:
    for i in range(4):
        fakehub.add_commit("model", "alice/history", {"f.txt": f"v{i}".encode()}, title=f"c{i}")
    status, h, body = app.request("GET", "/api/models/alice/history/commits/main")
    assert status == 200 and len(json.loads(body)) == 3
    assert h["link"].startswith(f"<{app.url}/api/models/alice/history/commits/")
    nxt = h["link"][1: h["link"].index(">")]
    status, _, body = app.request("GET", nxt)
    assert status == 200 and [c["title"] for c in json.loads(body)] == ["c0"]


def test_side_endpoints(app: InProcessHub, fakehub: FakeHub) -> None:
    status, _, body = app.request("GET", "/api/agent-harnesses")
    assert status == 200 and json.loads(body)["harnesses"] == {}
    assert app.request("HEAD", "/api/telemetry/hf_hub_download")[0] == 200
    status, h, _ = app.request("GET", "/api/whoami-v2")
    assert status == 401
    # Client tokens are hubproxy's business: an upstream token means nothing here and is not passed on.
    status, _, _ = app.request("GET", "/api/whoami-v2", {"Authorization": f"Bearer {fakehub.token}"})
    assert status == 401 and fakehub.count(contains="whoami") == 0
    status, _, body = app.request("GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
