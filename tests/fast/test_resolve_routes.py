"""The resolve surface, in process: headers, ranges, errors, Xet hygiene, caching."""

from __future__ import annotations

import hashlib

from tests.fakehub import FakeHub, git_sha1
from tests.fast.inprocess import InProcessHub


def _commit(hub: FakeHub, repo: str, rtype: str = "model") -> str:
    return hub.repos[(rtype, repo)].branches["main"]


def _file(hub: FakeHub, repo: str, path: str) -> bytes:
    return hub.repos[("model", repo)].commits[_commit(hub, repo)].files[path].blob.data


def test_head_regular_file_headers(app: InProcessHub, fakehub: FakeHub) -> None:
    data = _file(fakehub, "alice/files", "config.json")
    status, h, body = app.request("HEAD", "/alice/files/resolve/main/config.json")
    assert status == 200 and body == b""
    assert h["x-repo-commit"] == _commit(fakehub, "alice/files")
    assert h["etag"] == f'"{git_sha1(data)}"'
    assert h["content-length"] == str(len(data))
    assert h["accept-ranges"] == "bytes"
    assert "x-linked-etag" not in h and "content-encoding" not in h
    assert h["x-request-id"]


def test_head_lfs_file_is_direct_and_xet_free(app: InProcessHub, fakehub: FakeHub) -> None:
    data = _file(fakehub, "alice/files", "weights.bin")
    sha = hashlib.sha256(data).hexdigest()
    status, h, _ = app.request("HEAD", "/alice/files/resolve/main/weights.bin")
    assert status == 200
    assert "location" not in h
    assert h["x-linked-etag"] == f'"{sha}"' and h["etag"] == f'"{sha}"'
    assert h["x-linked-size"] == str(len(data)) == h["content-length"]
    assert not [k for k in h if k.startswith("x-xet")]
    assert "xet" not in h.get("link", "")


def test_get_matches_head_and_bytes(app: InProcessHub, fakehub: FakeHub) -> None:
    for path in ("weights.bin", "config.json", "empty.txt", "sub dir/notes \u00e9.txt"):
        data = _file(fakehub, "alice/files", path)
        from urllib.parse import quote

        url = "/alice/files/resolve/main/" + quote(path)
        hs, hh, _ = app.request("HEAD", url)
        gs, gh, body = app.request("GET", url)
        assert (hs, gs) == (200, 200)
        assert body == data
        for key in ("content-length", "etag", "x-repo-commit", "x-linked-size", "x-linked-etag", "accept-ranges"):
            assert hh.get(key) == gh.get(key), key


def test_second_download_does_not_reach_upstream(app: InProcessHub, fakehub: FakeHub) -> None:
    commit = _commit(fakehub, "alice/files")
    url = f"/alice/files/resolve/{commit}/weights.bin"
    assert app.request("GET", url)[0] == 200
    before = len(fakehub.requests)
    for _ in range(3):
        status, _, body = app.request("GET", url)
        assert status == 200 and body == _file(fakehub, "alice/files", "weights.bin")
        assert app.request("HEAD", url)[0] == 200
    assert len(fakehub.requests) == before


def test_branch_is_cached_within_ttl(app: InProcessHub, fakehub: FakeHub) -> None:
    url = "/alice/files/resolve/main/config.json"
    assert app.request("GET", url)[0] == 200
    before = len(fakehub.requests)
    assert app.request("HEAD", url)[0] == 200
    assert app.request("GET", url)[0] == 200
    assert len(fakehub.requests) == before


def test_ranges(app: InProcessHub, fakehub: FakeHub) -> None:
    data = _file(fakehub, "alice/files", "weights.bin")
    size = len(data)
    url = "/alice/files/resolve/main/weights.bin"
    cases = {
        "bytes=0-0": (0, 1), "bytes=100-1133": (100, 1134), f"bytes=10-{size + 500}": (10, size),
        "bytes=1000-": (1000, size), "bytes=-10": (size - 10, size), f"bytes={size - 1}-": (size - 1, size),
    }
    for _round in range(2):  # cold (following the fill) and hot (from the store)
        for header, (start, end) in cases.items():
            status, h, body = app.request("GET", url, {"Range": header})
            assert status == 206, header
            assert body == data[start:end], header
            assert h["content-range"] == f"bytes {start}-{end - 1}/{size}"
            assert h["content-length"] == str(end - start)
            hs, hh, _ = app.request("HEAD", url, {"Range": header})
            assert hs == 206 and hh["content-length"] == str(end - start)
    status, h, _ = app.request("GET", url, {"Range": f"bytes={size}-"})
    assert status == 416 and h["content-range"] == f"bytes */{size}" and h["x-error-code"]
    for bad in ("bytes=a-b", "bytes=0-1,5-6", "items=0-1", "bytes=5-2"):
        status, h, _ = app.request("GET", url, {"Range": bad})
        assert status == 400 and h["x-error-code"] == "InvalidRange", bad
    status, h, _ = app.request("HEAD", url, {"Range": "bytes=-0"})
    assert status == 416 and h["x-error-code"] == "RangeNotSatisfiable"


def test_errors_carry_hub_codes(app: InProcessHub, fakehub: FakeHub) -> None:
    commit = _commit(fakehub, "alice/files")
    for method in ("HEAD", "GET"):
        status, h, _ = app.request(method, "/alice/nope/resolve/main/config.json")
        assert status == 401 and h["x-error-code"] == "RepoNotFound"  # anonymous: 401, as the Hub answers
        status, h, _ = app.request(method, "/alice/files/resolve/nobranch/config.json")
        assert status == 404 and h["x-error-code"] == "RevisionNotFound"
        status, h, _ = app.request(method, "/alice/files/resolve/main/nope.json")
        assert status == 404 and h["x-error-code"] == "EntryNotFound"
        assert h["x-repo-commit"] == commit and h["x-error-message"]


def test_xet_token_routes_are_404(app: InProcessHub, fakehub: FakeHub) -> None:
    for route in ("xet-read-token", "xet-write-token"):
        status, h, _ = app.request("GET", f"/api/models/alice/files/{route}/main")
        assert status == 404 and h["x-error-message"]
    assert fakehub.count(contains="xet") == 0


def test_one_segment_repo_and_types(app: InProcessHub, fakehub: FakeHub) -> None:
    status, h, body = app.request("GET", "/gpt2/resolve/main/config.json")
    assert status == 200 and body == b'{"canonical": true}'
    status, _, body = app.request("GET", "/spaces/alice/demo/resolve/main/app.py")
    assert status == 200 and body == b"print('hi')\n"
    status, _, body = app.request("GET", "/datasets/alice/tiny-ds/resolve/main/README.md")
    assert status == 200 and body.startswith(b"---")
    status, _, body = app.request("GET", "/api/spaces/alice/demo")
    assert status == 200
