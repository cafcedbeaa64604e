"""Xet with the real hf_xet client (huggingface_hub 2.x default install, and 0.36 negotiating it): uploads whose
hashes equal the captured vectors, downloads through Xet and plain HTTP alike, and bad input refused."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import sqlalchemy as sa

from hubproxy.xet.hashes import from_string
from tests.clients import client_python
from tests.helpers import AdminClient, admin_json, client_env, hubproxy_cli, request, run_client, wait_until

VECTORS = Path(__file__).resolve().parent / "xet_vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
FILES = {f["path"]: f for case in MANIFEST["cases"] for f in case["files"]}


def _inputs(folder: Path) -> Path:
    """The captured inputs, and dedup_3m made from its recipe."""
    folder.mkdir()
    for path, f in FILES.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if "input" in f:
            target.write_bytes((VECTORS / f["input"]).read_bytes())
        else:
            target.write_bytes(b"".join(hashlib.shake_256(p["seed"].encode()).digest(p["len"]) for p in f["recipe"]))
    (folder / "empty.bin").write_bytes(b"")
    return folder


def _setup(make_proxy, **settings: str) -> tuple:  # noqa: ANN001
    proxy = make_proxy(token_cache_seconds="0", **settings)
    rest = AdminClient(proxy.url, admin_json(proxy.data_dir, "bootstrap")["token"])
    tokens = {}
    for user in ("alice", "bob"):
        rest.call("POST", "/users", {"name": user})
        tokens[user] = rest.call("POST", "/tokens", {"user": user, "role": "write"})["token"]
    return proxy, tokens


def _db(proxy) -> sa.engine.Engine:  # noqa: ANN001
    return sa.create_engine(f"sqlite:///{proxy.data_dir / 'hubproxy.db'}")


PUSH = r"""
import sys
from huggingface_hub import HfApi
api, F = HfApi(), sys.argv[1]
api.create_repo("alice/x")
api.upload_file(path_or_fileobj=F + "/small.txt", path_in_repo="small.txt", repo_id="alice/x")
api.upload_file(path_or_fileobj=F + "/random_100k.bin", path_in_repo="random_100k.bin", repo_id="alice/x")
api.upload_file(path_or_fileobj=F + "/random_100k_plus.bin", path_in_repo="random_100k_plus.bin", repo_id="alice/x")
api.upload_folder(folder_path=F, repo_id="alice/x", allow_patterns=["multi/*", "dedup_3m.bin", "floats_bg4.bin",
                                                                    "empty.bin"])
"""
PULL = r"""
import filecmp, os, sys
from huggingface_hub import hf_hub_download, snapshot_download
F = sys.argv[1]
d = snapshot_download("alice/x")
names = [n for n in ("small.txt", "random_100k.bin", "random_100k_plus.bin", "multi/a.txt", "multi/b.txt",
                     "dedup_3m.bin", "floats_bg4.bin", "empty.bin")]
print(filecmp.cmpfiles(F, d, names, shallow=False)[0] == names)
"""


def _settled_count(proxy, text: str) -> int:  # noqa: ANN001
    """How often ``text`` is in the log once the log has stopped growing for half a second."""
    size, since = len(proxy.log()), time.monotonic()
    while time.monotonic() - since < 0.5:
        time.sleep(0.1)
        if len(proxy.log()) != size:
            size, since = len(proxy.log()), time.monotonic()
    return proxy.log().count(text)


def test_uploads_equal_the_vectors_and_download_both_ways(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    """Every file goes through Xet here (``hosted_upload_mode: lfs``, as the captures had it), the text ones too."""
    proxy, tokens = _setup(make_proxy, hosted_upload_mode="lfs")
    folder = _inputs(tmp_path / "F")
    run_client("", client_env(proxy.url, tmp_path / "push", tokens["alice"]), args=["python", "-c", PUSH, str(folder)])
    with _db(proxy).connect() as conn:
        files = dict(conn.execute(sa.text("SELECT hash, sha256 FROM xet_files")).all())
        xorbs = dict(conn.execute(sa.text("SELECT hash, length FROM xet_xorbs")).all())
    for path, f in FILES.items():  # the same chunks and hashes hf_xet produced against the reference mock
        assert files.get(f["xet_hash"]) == f["sha256"], path
    assert xorbs["b6d64d3afbed615c1c051c19efe51541b2a35d95ec65ea6c9342e2345617f85b"] == 3065
    # random_100k_plus reuses a xorb of the previous upload: it is not sent again.
    assert wait_until(lambda: "POST /_hubproxy/xet/v1/shards 200" in proxy.log())
    # Each process buffers its access log briefly: count once every line is written.
    assert _settled_count(proxy, "POST /_hubproxy/xet/v1/xorbs/default/0b5ebde595a10ed8") == 1
    for extra, through_xet in (({}, True), ({"HF_HUB_DISABLE_XET": "1"}, False),
                               ({"HF_XET_RECONSTRUCTION_MIN_RECONSTRUCTION_FETCH_SIZE": "1mb",
                                 "HF_XET_RECONSTRUCTION_MAX_RECONSTRUCTION_FETCH_SIZE": "1mb"}, True)):
        before = _settled_count(proxy, "/v1/reconstructions/")  # the previous pull's lines are all written
        env = client_env(proxy.url, tmp_path / f"pull{len(extra)}{through_xet}", tokens["alice"], **extra)
        assert run_client("", env, args=["python", "-c", PULL, str(folder)]).stdout.strip().endswith("True")
        wait_until(lambda b=before: proxy.log().count("/v1/reconstructions/") > b, timeout=3)
        calls = proxy.log().count("/v1/reconstructions/") - before
        assert (calls > 0) == through_xet, (extra, calls)
    # With 1 MB windows, the 3 MiB file takes several reconstruction calls, each for its own window.
    dedup = FILES["dedup_3m.bin"]["xet_hash"]
    assert _settled_count(proxy, f"GET /_hubproxy/xet/v1/reconstructions/{dedup}") >= 1 + 3  # all lines written
    # cache verify re-checks xorbs: a damaged one is reported and left in place (it is hosted data).
    name = "b6d64d3afbed615c1c051c19efe51541b2a35d95ec65ea6c9342e2345617f85b"
    stored = proxy.data_dir / "xorbs" / name[:2] / name
    damaged = bytearray(stored.read_bytes())
    damaged[200] ^= 1
    stored.write_bytes(bytes(damaged))
    result = hubproxy_cli(proxy.data_dir, "cache", "verify", check=False)
    assert result.returncode == 1 and name in result.stdout and stored.exists()


def _token(proxy, token: str, repo: str, kind: str = "write") -> str:  # noqa: ANN001
    status, _, body = request("GET", f"{proxy.url}/api/models/{repo}/xet-{kind}-token/main",
                              {"Authorization": f"Bearer {token}"})
    assert status == 200, body
    return json.loads(body)["accessToken"]


def _cas(proxy, method: str, path: str, token: str, body: bytes | None = None,  # noqa: ANN001
         headers: dict | None = None) -> tuple[int, bytes]:
    status, _, data = request(method, f"{proxy.url}/_hubproxy/xet{path}",
                              {"Authorization": f"Bearer {token}", **(headers or {})}, body)
    return status, data


def test_bad_xet_input_is_refused(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    proxy, tokens = _setup(make_proxy)
    for user, repo in (("alice", "a"), ("bob", "b")):
        assert request("POST", f"{proxy.url}/api/repos/create", {"Authorization": f"Bearer {tokens[user]}"},
                       json.dumps({"name": repo}).encode())[0] == 200
    write, read = _token(proxy, tokens["alice"], "alice/a"), _token(proxy, tokens["alice"], "alice/a", "read")
    case = next(c for c in MANIFEST["cases"] if c["name"] == "small_text")
    name, xorb = case["xorbs"][0]["hash"], (VECTORS / case["xorbs"][0]["file"]).read_bytes()
    flipped = bytearray(xorb)
    flipped[100] ^= 1
    for body, path_hash in ((bytes(flipped), name), (xorb, "0" * 64), (xorb[:-10], name)):
        assert _cas(proxy, "POST", f"/v1/xorbs/default/{path_hash}", write, body)[0] == 400
    assert _cas(proxy, "POST", f"/v1/xorbs/default/{name}", read, xorb)[0] == 403  # a read token never writes
    assert _cas(proxy, "POST", f"/v1/xorbs/default/{name}", "xet_forged.00", xorb)[0] == 401
    assert _cas(proxy, "POST", f"/v1/xorbs/default/{name}", write, b"\0" * (66 * 1024 * 1024))[0] == 413
    with _db(proxy).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM xet_xorbs")).scalar() == 0  # nothing was kept
    shard = (VECTORS / case["shards"][0]["file"]).read_bytes()
    assert _cas(proxy, "POST", "/v1/shards", write, shard)[0] == 400  # its xorb was never uploaded
    assert _cas(proxy, "POST", f"/v1/xorbs/default/{name}", write, xorb)[0] == 200
    for at in (48, 144, 192):  # the file hash, the verification hash, the sha256 the shard claims
        bad = bytearray(shard)
        bad[at] ^= 1
        assert _cas(proxy, "POST", "/v1/shards", write, bytes(bad))[0] == 400, at
    with _db(proxy).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM xet_files")).scalar() == 0
    bob_write = _token(proxy, tokens["bob"], "bob/b")
    status, body = _cas(proxy, "POST", "/v1/shards", bob_write, shard)
    assert status == 400 and b"not one you may use" in body  # bob cannot read alice/a, where the xorb is
    assert _cas(proxy, "POST", "/v1/shards", write, shard)[0] == 200
    file_hash = FILES["small.txt"]["xet_hash"]
    status, body = _cas(proxy, "GET", f"/v1/reconstructions/{file_hash}", read, headers={"Range": "bytes=10-20"})
    plan = json.loads(body)
    assert status == 200 and plan["offset_into_first_range"] == 10 and plan["terms"][0]["hash"] == name
    fetch = plan["fetch_info"][name][0]
    status, _, got = request("GET", fetch["url"], {"Range": f"bytes={fetch['url_range']['start']}-"
                                                            f"{fetch['url_range']['end']}"})
    assert status == 206 and got == xorb[:3065]
    status, _, _ = request("GET", fetch["url"].replace("sig=", "sig=0"))
    assert status == 403  # xorb links are signed
    with _db(proxy).connect() as conn:  # a token past its expiry, however well signed
        secret = conn.execute(sa.text("SELECT value FROM cluster_secrets")).scalar()
    from hubproxy.xet.tokens import XetGrant, issue

    key = bytes.fromhex(secret)
    fresh_token = issue(key, XetGrant("model", "alice/a", "read", "alice", int(time.time()) + 60))
    assert _cas(proxy, "GET", f"/v1/reconstructions/{file_hash}", fresh_token)[0] == 200  # the key is right
    expired = issue(key, XetGrant("model", "alice/a", "read", "alice", int(time.time()) - 1))
    assert _cas(proxy, "GET", f"/v1/reconstructions/{file_hash}", expired)[0] == 401
    bob_read = _token(proxy, tokens["bob"], "bob/b", "read")  # another repo's token: no such file there
    assert _cas(proxy, "GET", f"/v1/reconstructions/{file_hash}", bob_read)[0] == 404
    assert from_string(file_hash)  # the names in URLs are the text form of hashes


OLD = r"""
import os, sys
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
api.create_repo("alice/old")
data = open(sys.argv[1], "rb").read()
api.upload_file(path_or_fileobj=sys.argv[1], path_in_repo="w.bin", repo_id="alice/old")
print(open(hf_hub_download("alice/old", "w.bin"), "rb").read() == data)
"""


def test_huggingface_hub_036_negotiates_xet(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    python = client_python("huggingface_hub==0.36.2")
    proxy, tokens = _setup(make_proxy)
    folder = _inputs(tmp_path / "F")
    out = run_client("", client_env(proxy.url, tmp_path / "hf", tokens["alice"]),
                     args=[str(python), "-c", OLD, str(folder / "random_100k.bin")])
    assert out.stdout.strip().endswith("True")
    assert wait_until(lambda: "/v1/reconstructions/" in proxy.log())
    log = proxy.log()
    assert "POST /alice/old.git/info/lfs/objects/batch 200" in log and "/xet-write-token/main 200" in log
    assert "PUT /_hubproxy/lfs/upload/" not in log  # not over LFS


def test_large_files_uploaded_without_xet_get_a_xet_form(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    """A file at or above ``xet_convert_min_bytes`` pushed over LFS is converted in the background (by hf_xet,
    against hubproxy's own CAS); current clients then download it through Xet, as they must above 50 GB."""
    proxy, tokens = _setup(make_proxy, hosted_upload_mode="lfs", xet_convert_min_bytes="2M")
    data = hashlib.shake_256(b"convert me").digest(3_000_000)
    (tmp_path / "w.bin").write_bytes(data)
    push = ("import sys; from huggingface_hub import HfApi; api = HfApi(); api.create_repo('alice/lfs'); "
            "api.upload_file(path_or_fileobj=sys.argv[1], path_in_repo='w.bin', repo_id='alice/lfs'); "
            "api.upload_file(path_or_fileobj=b'small' * 100, path_in_repo='small.bin', repo_id='alice/lfs')")
    run_client("", client_env(proxy.url, tmp_path / "push", tokens["alice"], HF_HUB_DISABLE_XET="1"),
               args=["python", "-c", push, str(tmp_path / "w.bin")])
    sha = hashlib.sha256(data).hexdigest()

    def converted() -> bool:
        with _db(proxy).connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM xet_files WHERE sha256 = :s"), {"s": sha}).scalar() == 1

    assert wait_until(converted, timeout=60)
    with _db(proxy).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM xet_files")).scalar() == 1  # the small file stays as is
    fetch = ("import sys; from huggingface_hub import hf_hub_download; "
             "print(open(hf_hub_download('alice/lfs', 'w.bin'), 'rb').read() == open(sys.argv[1], 'rb').read())")
    out = run_client("", client_env(proxy.url, tmp_path / "pull", tokens["alice"]),
                     args=["python", "-c", fetch, str(tmp_path / "w.bin")])
    assert out.stdout.strip().endswith("True")
    assert wait_until(lambda: "/_hubproxy/xet/v1/reconstructions/" in proxy.log())


def test_range_reads_with_the_real_client(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    """hf_xet's own streaming API reads byte ranges of a hosted file through the CAS: at chunk edges, inside a
    chunk, the last byte, and nothing past the end."""
    proxy, tokens = _setup(make_proxy, hosted_upload_mode="lfs")
    folder = _inputs(tmp_path / "F")
    data = (folder / "dedup_3m.bin").read_bytes()
    push = ("import sys; from huggingface_hub import HfApi; api = HfApi(); api.create_repo('alice/r'); "
            "api.upload_file(path_or_fileobj=sys.argv[1], path_in_repo='d.bin', repo_id='alice/r')")
    run_client("", client_env(proxy.url, tmp_path / "push", tokens["alice"]),
               args=["python", "-c", push, str(folder / "dedup_3m.bin")])
    status, _, body = request("GET", f"{proxy.url}/api/models/alice/r/xet-read-token/main",
                              {"Authorization": f"Bearer {tokens['alice']}"})
    token = json.loads(body)
    edges = [(0, 44445), (1_000_000, 2_000_000), (150_000, 150_001), (len(data) - 1, len(data)), (0, len(data))]
    read = (
        "import json, sys, hf_xet\n"
        "t = json.loads(sys.argv[1]); size = int(sys.argv[3])\n"
        "info = hf_xet.XetFileInfo(sys.argv[2], size)\n"
        "group = hf_xet.XetSession().new_download_stream_group(endpoint=t['casUrl'], token=t['accessToken'],\n"
        "                                                       token_expiry_unix_secs=t['exp'])\n"
        "for s, e in json.loads(sys.argv[4]):\n"
        "    got = b''.join(group.download_stream(info, start=s, end=e))\n"
        "    print(got.hex())\n")
    out = run_client("", client_env(proxy.url, tmp_path / "read", tokens["alice"]), args=[
        "python", "-c", read, json.dumps(token), FILES["dedup_3m.bin"]["xet_hash"], str(len(data)), json.dumps(edges)])
    got = [bytes.fromhex(line) for line in out.stdout.split()]
    assert got == [data[s:e] for s, e in edges]
    status, _, _ = request("GET", f"{proxy.url}/_hubproxy/xet/v1/reconstructions/{FILES['dedup_3m.bin']['xet_hash']}",
                           {"Authorization": f"Bearer {token['accessToken']}", "Range": f"bytes={len(data)}-"})
    assert status == 416  # a start past the end
