"""The resolve surface over raw HTTP: headers, ranges, errors, Xet hygiene, caching."""

from __future__ import annotations

import hashlib

from tests.fakehub import FakeHub, git_sha1
from tests.helpers import ProxyProcess, request


def _commit(hub: FakeHub, repo: str, rtype: str = "model") -> str:
    return hub.repos[(rtype, repo)].branches["main"]


def _file(hub: FakeHub, repo: str, path: str) -> bytes:
    return hub.repos[("model", repo)].commits[_commit(hub, repo)].files[path].blob.data


def test_head_regular_file_headers(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    data = _file(fakehub, "alice/files", "config.json")
    status, h, body = request("HEAD", proxy.url + "/alice/files/resolve/main/config.json")
    assert status == 200 and body == b""
    assert h["x-repo-commit"] == _commit(fakehub, "alice/files")
    assert h["etag"] == f'"{git_sha1(data)}"'
    assert h["content-length"] == str(len(data))
    assert h["accept-ranges"] == "bytes"
    assert "x-linked-etag" not in h and "content-encoding" not in h
    assert h["x-request-id"]


def test_head_lfs_file_is_direct_and_xet_free(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    data = _file(fakehub, "alice/files", "weights.bin")
    sha = hashlib.sha256(data).hexdigest()
    status, h, _ = request("HEAD", proxy.url + "/alice/files/resolve/main/weights.bin")
    assert status == 200
    assert "location" not in h
    assert h["x-linked-etag"] == f'"{sha}"' and h["etag"] == f'"{sha}"'
    assert h["x-linked-size"] == str(len(data)) == h["content-length"]
    assert not [k for k in h if k.startswith("x-xet")]
    assert "xet" not in h.get("link", "")


def test_get_matches_head_and_bytes(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    for path in ("weights.bin", "config.json", "empty.txt", "sub dir/notes \u00e9.txt"):
        data = _file(fakehub, "alice/files", path)
        from urllib.parse import quote

        url = proxy.url + "/alice/files/resolve/main/" + quote(path)
        hs, hh, _ = request("HEAD", url)
        gs, gh, body = request("GET", url)
        assert (hs, gs) == (200, 200)
        assert body == data
        for key in ("content-length", "etag", "x-repo-commit", "x-linked-size", "x-linked-etag", "accept-ranges"):
            assert hh.get(key) == gh.get(key), key


def test_second_download_does_not_reach_upstream(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    commit = _commit(fakehub, "alice/files")
    url = f"{proxy.url}/alice/files/resolve/{commit}/weights.bin"
    assert request("GET", url)[0] == 200
    before = len(fakehub.requests)
    for _ in range(3):
        status, _, body = request("GET", url)
        assert status == 200 and body == _file(fakehub, "alice/files", "weights.bin")
        assert request("HEAD", url)[0] == 200
    assert len(fakehub.requests) == before


def test_branch_is_cached_within_ttl(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    url = f"{proxy.url}/alice/files/resolve/main/config.json"
    assert request("GET", url)[0] == 200
    before = len(fakehub.requests)
    assert request("HEAD", url)[0] == 200
    assert request("GET", url)[0] == 200
    assert len(fakehub.requests) == before


def test_ranges(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    data = _file(fakehub, "alice/files", "weights.bin")
    size = len(data)
    url = proxy.url + "/alice/files/resolve/main/weights.bin"
    cases = {
        "bytes=0-0": (0, 1), "bytes=100-1133": (100, 1134), f"bytes=10-{size + 500}": (10, size),
        "bytes=1000-": (1000, size), "bytes=-10": (size - 10, size), f"bytes={size - 1}-": (size - 1, size),
    }
    for _round in range(2):  # cold (following the fill) and hot (from the store)
        for header, (start, end) in cases.items():
            status, h, body = request("GET", url, {"Range": header})
            assert status == 206, header
            assert body == data[start:end], header
            assert h["content-range"] == f"bytes {start}-{end - 1}/{size}"
            assert h["content-length"] == str(end - start)
            hs, hh, _ = request("HEAD", url, {"Range": header})
            assert hs == 206 and hh["content-length"] == str(end - start)
    status, h, _ = request("GET", url, {"Range": f"bytes={size}-"})
    assert status == 416 and h["content-range"] == f"bytes */{size}" and h["x-error-code"]
    for bad in ("bytes=a-b", "bytes=0-1,5-6", "items=0-1", "bytes=5-2"):
        status, h, _ = request("GET", url, {"Range": bad})
        assert status == 400 and h["x-error-code"] == "InvalidRange", bad
    status, h, _ = request("HEAD", url, {"Range": "bytes=-0"})
    assert status == 416 and h["x-error-code"] == "RangeNotSatisfiable"


def test_errors_carry_hub_codes(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    commit = _commit(fakehub, "alice/files")
    for method in ("HEAD", "GET"):
        status, h, _ = request(method, proxy.url + "/alice/nope/resolve/main/config.json")
        assert status == 401 and h["x-error-code"] == "RepoNotFound"  # anonymous: 401, as the Hub answers (E3)
        status, h, _ = request(method, proxy.url + "/alice/files/resolve/nobranch/config.json")
        assert status == 404 and h["x-error-code"] == "RevisionNotFound"
        status, h, _ = request(method, proxy.url + "/alice/files/resolve/main/nope.json")
        assert status == 404 and h["x-error-code"] == "EntryNotFound"
        assert h["x-repo-commit"] == commit and h["x-error-message"]


def test_xet_token_routes_are_404(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    for route in ("xet-read-token", "xet-write-token"):
        status, h, _ = request("GET", f"{proxy.url}/api/models/alice/files/{route}/main")
        assert status == 404 and h["x-error-message"]
    assert fakehub.count(contains="xet") == 0


def test_one_segment_repo_and_types(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    status, h, body = request("GET", proxy.url + "/gpt2/resolve/main/config.json")
    assert status == 200 and body == b'{"canonical": true}'
    status, _, body = request("GET", proxy.url + "/spaces/alice/demo/resolve/main/app.py")
    assert status == 200 and body == b"print('hi')\n"
    status, _, body = request("GET", proxy.url + "/datasets/alice/tiny-ds/resolve/main/README.md")
    assert status == 200 and body.startswith(b"---")
    status, _, body = request("GET", proxy.url + "/api/spaces/alice/demo")
    assert status == 200


def test_bad_input_never_reaches_upstream(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    bad = [
        "/alice/files/resolve/main/../config.json", "/alice/files/resolve/main/%2e%2e/config.json",
        "/alice/files/resolve/main/sub%2F..%2F..%2Fetc%2Fpasswd", "/alice/files/resolve/main//etc/passwd",
        "/alice/files/resolve/main/a%5Cb", "/alice/files/resolve/main/a%00b", "/alice/files/resolve/main/a%0Ab",
        "/alice/files/resolve/main/%252e%252e/x", "/alice/files/resolve/main/" + "x" * 300,
        "/alice/files/resolve/main/" + "/".join(["abcdefgh"] * 200), "/al..ice/files/resolve/main/x",
        "/api/models/alice/files/tree/main/..%2F..", "/alice/files/resolve/..%2F..%2Fmain/x",
        "/api/models/alice/files/revision/%00", "/alice/files/resolve/main/%ff",
    ]
    for path in bad:
        for method in ("HEAD", "GET"):
            status, h, _ = request(method, proxy.url + path)
            assert 400 <= status < 500, (path, status)
            assert h.get("x-error-message"), path
    assert fakehub.requests == []
    data_files = [p for p in proxy.data_dir.rglob("*") if p.is_file() and "blobs" in p.parts]
    assert data_files == []
