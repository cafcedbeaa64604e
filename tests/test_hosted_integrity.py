"""Hosted repos under contention and faults: concurrent pushes, replicas, a killed server, bad commits."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

from tests.helpers import AdminClient, admin_json, client_env, request, run_client, s3_settings, wait_until

UPLOAD = ("import sys; from huggingface_hub import HfApi; from huggingface_hub.errors import HfHubHTTPError\n"
          "try:\n"
          "    HfApi().upload_file(path_or_fileobj=sys.argv[1].encode(), path_in_repo=sys.argv[1] + '.txt',\n"
          "                        repo_id='alice/c', parent_commit=sys.argv[2] or None)\n"
          "    print('landed')\n"
          "except HfHubHTTPError as e:\n"
          "    print(e.response.status_code)\n")
STATE = ("import json; from huggingface_hub import HfApi; api = HfApi()\n"
         "print(json.dumps([api.list_repo_files('alice/c'), len(api.list_repo_commits('alice/c')),"
         " api.repo_info('alice/c').sha]))")


def _alice(proxy, database_url: str | None = None) -> str:  # noqa: ANN001
    rest = AdminClient(proxy.url, admin_json(proxy.data_dir, "bootstrap", database_url=database_url)["token"])
    rest.call("POST", "/users", {"name": "alice"})
    return rest.call("POST", "/tokens", {"user": "alice", "role": "write"})["token"]


def _pushes(envs: list[dict], names: list[str], parent: str) -> list[str]:
    results: list[str] = [""] * len(names)

    def push(i: int) -> None:
        out = run_client("", envs[i % len(envs)], args=["python", "-c", UPLOAD, names[i], parent]).stdout
        results[i] = out.strip().splitlines()[-1]

    threads = [threading.Thread(target=push, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _state(env: dict) -> list:
    return json.loads(run_client("", env, args=["python", "-c", STATE]).stdout.strip().splitlines()[-1])


def test_concurrent_pushes_to_one_branch(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    """Without a parent every concurrent commit lands (none lost); with the same parent exactly one does."""
    proxy = make_proxy(token_cache_seconds="0")
    env = client_env(proxy.url, tmp_path / "hf", _alice(proxy))
    run_client("", env, args=["python", "-c", "from huggingface_hub import HfApi; HfApi().create_repo('alice/c')"])
    assert _pushes([env], [f"f{i}" for i in range(6)], "") == ["landed"] * 6
    files, commits, head = _state(env)
    assert files == [".gitattributes"] + [f"f{i}.txt" for i in range(6)] and commits == 7
    assert sorted(_pushes([env], ["g0", "g1", "g2"], head)) == ["412", "412", "landed"]
    assert _state(env)[1] == 8


def test_replicas_share_hosted_repos(make_proxy, tmp_path: Path, pg_url: str, s3_endpoint: str, bucket) -> None:  # noqa: ANN001
    """Two replicas on PostgreSQL and S3: a push through one is served by the other at once; commits through
    both on one branch are never lost, and a shared parent lets exactly one land."""
    s3 = s3_settings(s3_endpoint, bucket[0], database_url=pg_url, token_cache_seconds="0")
    a = make_proxy(data_dir=tmp_path / "a", **s3)
    b = make_proxy(data_dir=tmp_path / "b", **s3)
    token = _alice(a, pg_url)
    env_a, env_b = client_env(a.url, tmp_path / "ha", token), client_env(b.url, tmp_path / "hb", token)
    run_client("", env_a, args=["python", "-c", "from huggingface_hub import HfApi; HfApi().create_repo('alice/c')"])
    assert _pushes([env_a], ["first"], "") == ["landed"]
    status, _, body = request("GET", b.url + "/alice/c/resolve/main/first.txt", {"Authorization": f"Bearer {token}"})
    assert status == 200 and body == b"first"
    assert _pushes([env_a, env_b], [f"r{i}" for i in range(4)], "") == ["landed"] * 4
    files, commits, head = _state(env_b)
    assert commits == 6 and {f"r{i}.txt" for i in range(4)} <= set(files)
    assert sorted(_pushes([env_a, env_b], ["s0", "s1"], head)) == ["412", "landed"]
    # Through Xet: xorbs and the rebuilt file go to the shared bucket; the other replica serves both ways.
    code = ("import os, sys; from huggingface_hub import HfApi, hf_hub_download; data = os.urandom(3_000_000); "
            "HfApi().upload_file(path_or_fileobj=data, path_in_repo='w.bin', repo_id='alice/c'); "
            "open(sys.argv[1], 'wb').write(data)")
    run_client("", env_a, args=["python", "-c", code, str(tmp_path / "w.bin")])
    fetch = ("import sys; from huggingface_hub import hf_hub_download; "
             "print(open(hf_hub_download('alice/c', 'w.bin'), 'rb').read() == open(sys.argv[1], 'rb').read())")
    for extra in ({}, {"HF_HUB_DISABLE_XET": "1"}):
        env = client_env(b.url, tmp_path / f"hx{len(extra)}", token, **extra)
        assert run_client("", env, args=["python", "-c", fetch, str(tmp_path / "w.bin")]).stdout.strip() == "True"
    assert wait_until(lambda: "/_hubproxy/xet/v1/reconstructions/" in b.log())


def _commit(url: str, token: str, lines: list, repo: str = "alice/c") -> tuple[int, dict, bytes]:
    body = "".join(json.dumps(x) + "\n" for x in [{"key": "header", "value": {"summary": "raw"}}] + lines).encode()
    return request("POST", f"{url}/api/models/{repo}/commit/main",
                   {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}, body)


def test_bad_commits_and_a_killed_server_change_nothing(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    proxy = make_proxy(token_cache_seconds="0", max_commit_operations="1000")
    token = _alice(proxy)
    env = client_env(proxy.url, tmp_path / "hf", token)
    run_client("", env, args=["python", "-c", "from huggingface_hub import HfApi; HfApi().create_repo('alice/c')"])
    before = _state(env)
    content = {"content": "eA==", "encoding": "base64"}
    for path in ("../x", "a/../../x", "/abs", "a//b", ".git/config", "a\u0000b", "a\nb", "a\\b"):
        status, _, body = _commit(proxy.url, token, [{"key": "file", "value": {**content, "path": path}}])
        assert status == 400, (path, body)
    status, _, _ = _commit(proxy.url, token, [{"key": "deletedFile", "value": {"path": "x" * 2_000_000}}])
    assert status == 413  # an oversized line that is no file line
    many = [{"key": "deletedFile", "value": {"path": f"f{i}"}} for i in range(100_000)]
    status, _, body = _commit(proxy.url, token, many)
    assert status == 413 and b"at most 1000 operations" in body
    # A server killed while a commit's body arrives: on restart the branch is where it was.
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    head = (f"POST /api/models/alice/c/commit/main HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/x-ndjson\r\nContent-Length: 50000000\r\n\r\n").encode()
    sock.sendall(head + b'{"key":"header","value":{"summary":"cut"}}\n{"key":"file","value":{"content":"'
                 + b"QUFB" * 3_000_000)  # 12 MB of a 50 MB body: more than one write batch
    def spooled() -> int:  # the server is taking the body to disk: the kill lands mid-commit
        return sum(p.stat().st_size for p in (proxy.data_dir / "uploads").glob("commit-*"))

    assert wait_until(lambda: spooled() >= 8 * 1024 * 1024)
    proxy.kill()
    sock.close()
    restarted = make_proxy(data_dir=proxy.data_dir, port=proxy.port, token_cache_seconds="0")
    assert _state(client_env(restarted.url, tmp_path / "hf2", token)) == before
    assert not [p for p in (proxy.data_dir / "uploads").iterdir() if p.is_file()]  # the partial body is gone


ROUND_TRIP = r"""
import json, sys
from huggingface_hub import HfApi, snapshot_download
api, out = HfApi(), {}
if sys.argv[1] == "push":
    api.create_repo("alice/m")
    api.upload_file(path_or_fileobj=b"weights v1", path_in_repo="w.bin", repo_id="alice/m", commit_message="first")
    api.create_tag("alice/m", tag="v1")
    api.upload_file(path_or_fileobj=b"weights v2", path_in_repo="w.bin", repo_id="alice/m", commit_message="second")
elif sys.argv[1] == "check":
    p = snapshot_download("alice/m")
    out["main"] = open(p + "/w.bin").read()
    out["v1"] = open(snapshot_download("alice/m", revision="v1") + "/w.bin").read()
    out["title"] = api.list_repo_commits("alice/m")[0].title
    out["refs"] = sorted(b.name for b in api.list_repo_refs("alice/m").branches)
    api.upload_file(path_or_fileobj=b"weights v3", path_in_repo="w.bin", repo_id="alice/m",
                    commit_message="trained inside")
    out["after"] = open(snapshot_download("alice/m") + "/w.bin").read()
print(json.dumps(out))
"""


def test_hosted_repos_travel_in_bundles(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    """A hosted repo exported from one site is a hosted repo at the other (refs, titles, pushable), and a commit
    made there comes back the same way."""
    from tests.helpers import hubproxy_cli

    a = make_proxy(data_dir=tmp_path / "a", token_cache_seconds="0")
    token = _alice(a)
    run_client("", client_env(a.url, tmp_path / "ha", token), args=["python", "-c", ROUND_TRIP, "push"])
    bundle = tmp_path / "out.tar"
    hubproxy_cli(tmp_path / "exporter", "sync", "export", "--source", a.url, "--repo", "alice/m@main",
                 "--repo", "alice/m@v1", "--out", str(bundle), upstream_token=token)
    site = tmp_path / "site"
    hubproxy_cli(site, "admin", "user-create", "alice")
    hubproxy_cli(site, "sync", "import", str(bundle))
    b = make_proxy(data_dir=site, token_cache_seconds="0", offline="true", xet_convert_min_bytes="1")
    token_b = json.loads(hubproxy_cli(site, "admin", "token-create", "alice", "--role", "write", "--json").stdout)["token"]
    # Bundles carry plain, verified blobs; the site gives large hosted files their Xet form again itself.
    import sqlalchemy as sa

    def converted() -> int:
        with sa.create_engine(f"sqlite:///{site / 'hubproxy.db'}").connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM xet_files")).scalar()

    assert wait_until(lambda: converted() == 2, timeout=60)  # weights v1 and v2
    out = json.loads(run_client("", client_env(b.url, tmp_path / "hb", token_b),
                                args=["python", "-c", ROUND_TRIP, "check"]).stdout.strip().splitlines()[-1])
    assert out == {"main": "weights v2", "v1": "weights v1", "title": "second", "refs": ["main"],
                   "after": "weights v3"}
    assert wait_until(lambda: "/_hubproxy/xet/v1/reconstructions/" in b.log())  # downloaded through Xet
    back = tmp_path / "back.tar"
    hubproxy_cli(tmp_path / "exporter2", "sync", "export", "--source", b.url, "--repo", "alice/m@main",
                 "--out", str(back), upstream_token=token_b)
    hubproxy_cli(a.data_dir, "sync", "import", str(back))
    status, _, body = request("GET", a.url + "/alice/m/resolve/main/w.bin", {"Authorization": f"Bearer {token}"})
    assert status == 200 and body == b"weights v3"
    events = [e["action"] for e in json.loads(hubproxy_cli(site, "admin", "audit-writes", "--json").stdout)]
    assert "import" in events and "commit" in events
