"""Hosted repos through the real clients: push with huggingface_hub, pull back byte for byte, rights.

Client set-ups: huggingface_hub 2.x with hf_xet (the default install: files go inline, regular mode) and
2.x with HF_HUB_DISABLE_XET=1 against ``hosted_upload_mode: lfs`` (files over LFS with signed hrefs).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tests.fakehub import FakeHub
from tests.helpers import AdminClient, admin_json, client_env, request, run_client, wait_until

CARD = "---\nlicense: mit\ntags: [test]\nlibrary_name: transformers\npipeline_tag: text-generation\n---\n# m\n"


def _folder(root: Path) -> Path:
    folder = root / "F"
    (folder / "sub").mkdir(parents=True)
    (folder / "README.md").write_text(CARD)
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    (folder / "model.safetensors").write_bytes(os.urandom(300_000))
    (folder / "sub" / "notes é.txt").write_text("notes")
    (folder / "empty.txt").write_bytes(b"")
    return folder


def _setup(make_proxy, **settings: str) -> tuple:  # noqa: ANN001
    proxy = make_proxy(anonymous_access="off", token_cache_seconds="0", **settings)
    rest = AdminClient(proxy.url, admin_json(proxy.data_dir, "bootstrap")["token"])
    tokens = {}
    for user in ("alice", "bob"):
        rest.call("POST", "/users", {"name": user})
        tokens[user] = rest.call("POST", "/tokens", {"user": user, "role": "write"})["token"]
    tokens["alice-read"] = rest.call("POST", "/tokens", {"user": "alice", "role": "read"})["token"]
    return proxy, rest, tokens


PUSH = r"""
import filecmp, json, os, sys
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError
api, F, out = HfApi(), sys.argv[1], {}
url = api.create_repo("alice/m", private=True)
out["repo_id"] = url.repo_id
out["again"] = api.create_repo("alice/m", exist_ok=True).repo_id
try:
    api.create_repo("alice/m")
except HfHubHTTPError as e:
    out["conflict"] = e.response.status_code
out["bare"] = api.create_repo("bare").repo_id
out["fresh"] = api.list_repo_files("alice/m")
ci = api.upload_folder(folder_path=F, repo_id="alice/m")
path = snapshot_download("alice/m", revision=ci.oid)
names = ["README.md", "config.json", "model.safetensors", "sub/notes é.txt", "empty.txt"]
out["same"] = filecmp.cmpfiles(F, path, names, shallow=False)[0] == names
out["noop"] = api.upload_folder(folder_path=F, repo_id="alice/m").oid == ci.oid
from huggingface_hub import CommitOperationCopy
api.create_commit("alice/m", [CommitOperationCopy("model.safetensors", "copy.safetensors"),
                               CommitOperationCopy("config.json", "cfg2.json")], commit_message="copies")
out["copies"] = [open(hf_hub_download("alice/m", a), "rb").read() == open(hf_hub_download("alice/m", b), "rb").read()
                 for a, b in (("model.safetensors", "copy.safetensors"), ("config.json", "cfg2.json"))]
out["commits"] = [c.title for c in api.list_repo_commits("alice/m")]
info = api.model_info("alice/m")
out["card"] = [info.card_data.license, info.pipeline_tag, info.library_name, info.private]
api.create_branch("alice/m", branch="dev")
api.upload_file(path_or_fileobj=b"dev only", path_in_repo="dev.txt", repo_id="alice/m", revision="dev")
api.create_tag("alice/m", tag="v1", tag_message="first", revision="dev")
out["v1"] = open(hf_hub_download("alice/m", "dev.txt", revision="v1"), "rb").read().decode()
refs = api.list_repo_refs("alice/m", include_pull_requests=True)
out["refs"] = [sorted(b.name for b in refs.branches), [t.name for t in refs.tags], refs.pull_requests]
try:
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/m", parent_commit="0" * 40)
except HfHubHTTPError as e:
    out["stale"] = e.response.status_code
try:
    api.delete_file("nope", "alice/m")
except RemoteEntryNotFoundError as e:
    out["missing"] = "trailing" in str(e)
try:
    api.delete_branch("alice/m", branch="main")
except HfHubHTTPError as e:
    out["main"] = e.response.status_code
try:
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/m", create_pr=True)
except HfHubHTTPError as e:
    out["pr"] = [e.response.status_code, "disabled" in str(e)]
from huggingface_hub.errors import BadRequestError
try:
    api.create_branch("alice/m", branch="refs/pr/1")
except BadRequestError:
    out["pr_branch"] = "refused"
api.update_repo_settings("alice/m", gated="manual")
out["gated"] = api.model_info("alice/m").gated
out["exists"] = [api.repo_exists("alice/m"), api.revision_exists("alice/m", "dev"), api.file_exists("alice/m", "dev.txt", revision="dev"),
                 api.repo_exists("alice/none"), api.file_exists("alice/m", "none")]
api.create_repo("alice/d", repo_type="dataset")
api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data.csv", repo_id="alice/d", repo_type="dataset")
out["dataset"] = api.list_repo_files("alice/d", repo_type="dataset")
print(json.dumps(out))
"""


def test_push_and_pull_with_the_default_client(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    """huggingface_hub 2.x with hf_xet: every file inline (regular mode); repos, branches, tags, history, cards."""
    proxy, rest, tokens = _setup(make_proxy)
    fakehub.reset_counts()
    env = client_env(proxy.url, tmp_path / "hf", tokens["alice"])
    out = json.loads(run_client("", env, args=["python", "-c", PUSH, str(_folder(tmp_path))]).stdout)
    assert out["repo_id"] == out["again"] == "alice/m" and out["conflict"] == 409 and out["bare"] == "alice/bare"
    assert out["fresh"] == [".gitattributes"] and out["same"] and out["noop"]
    assert out["copies"] == [True, True]
    assert out["commits"] == ["copies", "Upload folder using huggingface_hub", "initial commit"]
    assert out["card"] == ["mit", "text-generation", "transformers", True]
    assert out["v1"] == "dev only" and out["refs"] == [["dev", "main"], ["v1"], []]
    assert out["stale"] == 412 and out["missing"] and out["main"] == 403 and out["pr"] == [403, True]
    assert out["exists"] == [True, True, True, False, False]
    assert out["pr_branch"] == "refused" and out["gated"] == "manual"
    assert out["dataset"] == [".gitattributes", "data.csv"]
    assert fakehub.count(contains="alice/m") == 0  # a hosted namespace never reaches the upstream
    # Every change is in the write audit with its actor and commits.
    events = rest.call("GET", "/audit/writes?repo=alice/m&limit=50")
    assert {e["action"] for e in events} >= {"repo.create", "commit", "branch.create", "tag.create"}
    assert all(e["actor"] == "alice" for e in events)


RIGHTS = r"""
import json, sys
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
api, out = HfApi(), {}
for name, call in (("info", lambda: api.model_info("alice/m")), ("files", lambda: api.list_repo_files("alice/m")),
                   ("upload", lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/m")),
                   ("delete", lambda: api.delete_repo("alice/m")), ("upstream", lambda: api.model_info("alice/files"))):
    try:
        call()
        out[name] = "ok"
    except RepositoryNotFoundError as e:
        out[name] = f"missing {e.response.status_code}"
    except HfHubHTTPError as e:
        out[name] = f"error {e.response.status_code}"
print(json.dumps(out))
"""


def test_rights_and_dependency_confusion(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    """Private repos answer like missing ones to others; read tokens never write; a hosted namespace is never
    looked up upstream even where the upstream has a repo of that name (alice/files is on the fake hub)."""
    proxy, rest, tokens = _setup(make_proxy)
    fakehub.reset_counts()
    run_client("", client_env(proxy.url, tmp_path / "a", tokens["alice"]),
               args=["python", "-c", "from huggingface_hub import HfApi; HfApi().create_repo('alice/m')"])
    seen = {}
    for who in ("alice-read", "bob", None):
        result = run_client("", client_env(proxy.url, tmp_path / str(who), tokens.get(who or "")),
                            args=["python", "-c", RIGHTS])
        seen[who] = json.loads(result.stdout)
    assert seen["alice-read"] == {"info": "ok", "files": "ok", "upload": "error 403", "delete": "error 403",
                                  "upstream": "missing 404"}
    assert seen["bob"] == {k: "missing 404" for k in ("info", "files", "upload", "delete", "upstream")}
    assert seen[None] == {k: "missing 401" for k in ("info", "files", "upload", "delete", "upstream")}
    assert fakehub.count(contains="alice/") == 0, fakehub.paths()
    # A project's namespace: its maintainers create repos and change settings; internal repos are read by all.
    rest.call("POST", "/projects", {"name": "team"})
    rest.call("PUT", "/namespaces/acme", {"project": "team"})
    rest.call("PUT", "/projects/team/members/bob", {"role": "maintainer"})
    code = ("from huggingface_hub import HfApi; api = HfApi(); api.create_repo('acme/shared', private=False); "
            "api.update_repo_settings('acme/shared', visibility='internal'); "
            "print(api.model_info('acme/shared').private)")
    assert run_client("", client_env(proxy.url, tmp_path / "b", tokens["bob"]),
                      args=["python", "-c", code]).stdout.strip() == "True"
    status, _, _ = request("GET", proxy.url + "/api/models/acme/shared", {"Authorization": f"Bearer {tokens['alice']}"})
    assert status == 200  # internal: any authenticated user reads
    status, headers, _ = request("GET", proxy.url + "/api/models/acme/shared")
    assert status == 401 and headers.get("x-error-code") == "RepoNotFound"


def test_lfs_uploads_are_verified_and_scoped(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    """HF_HUB_DISABLE_XET=1 with hosted_upload_mode lfs: batch, signed PUT, verify, commit; wrong bytes and
    objects of other repos are refused."""
    proxy, rest, tokens = _setup(make_proxy, hosted_upload_mode="lfs", regular_upload_max_bytes="1M")
    data = os.urandom(3_000_000)
    (tmp_path / "big.bin").write_bytes(data)
    code = ("import sys; from huggingface_hub import HfApi, hf_hub_download; api = HfApi(); api.create_repo('alice/l'); "
            "api.upload_file(path_or_fileobj=sys.argv[1], path_in_repo='w/big.bin', repo_id='alice/l'); "
            "print(hf_hub_download('alice/l', 'w/big.bin'))")
    env = client_env(proxy.url, tmp_path / "hf", tokens["alice"], HF_HUB_DISABLE_XET="1")
    got = run_client("", env, args=["python", "-c", code, str(tmp_path / "big.bin")]).stdout.strip().splitlines()[-1]
    assert Path(got).read_bytes() == data
    oid = hashlib.sha256(data).hexdigest()
    auth = {"Authorization": f"Bearer {tokens['bob']}", "Content-Type": "application/json"}
    run_client("", client_env(proxy.url, tmp_path / "b", tokens["bob"]),
               args=["python", "-c", "from huggingface_hub import HfApi; HfApi().create_repo('bob/copy')"])
    # bob knows the sha256 of alice's file: the batch still asks him for the bytes ...
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}],
             "hash_algo": "sha256", "ref": {"name": "main"}}
    status, _, body = request("POST", proxy.url + "/bob/copy.git/info/lfs/objects/batch", auth,
                              json.dumps(batch).encode())
    assert status == 200
    actions = json.loads(body)["objects"][0]["actions"]
    # ... and bytes that are not the object are refused, leaving nothing usable behind,
    status, _, _ = request("PUT", actions["upload"]["href"], {}, os.urandom(len(data)))
    assert status == 400
    line = {"key": "lfsFile", "value": {"path": "stolen.bin", "algo": "sha256", "oid": oid, "size": len(data)}}
    commit = "\n".join(json.dumps(x) for x in ({"key": "header", "value": {"summary": "steal"}}, line)) + "\n"
    status, headers, body = request("POST", proxy.url + "/api/models/bob/copy/commit/main",
                                    {**auth, "Content-Type": "application/x-ndjson"}, commit.encode())
    assert status == 400 and b"never uploaded" in body
    # An upload href is bound to its object: a forged signature is refused.
    status, _, _ = request("PUT", actions["upload"]["href"].replace("sig=", "sig=0"), {}, data)
    assert status == 403
    # Above the inline cap, a current client is stopped at preupload with what to do.
    code = ("from huggingface_hub import HfApi; HfApi().upload_file(path_or_fileobj=b'x' * 2_000_000, "
            "path_in_repo='big2.bin', repo_id='alice/l')")
    proxy2, _, tokens2 = _setup(make_proxy, regular_upload_max_bytes="1M", xet="false")  # the cap is for no-Xet
    run_client("", client_env(proxy2.url, tmp_path / "c", tokens2["alice"]),
               args=["python", "-c", "from huggingface_hub import HfApi; HfApi().create_repo('alice/l')"])
    result = run_client("", client_env(proxy2.url, tmp_path / "c", tokens2["alice"]),
                        args=["python", "-c", code], check=False)
    assert result.returncode != 0 and "HF_HUB_DISABLE_XET=1" in result.stderr and "413" in result.stderr


CARDS = r"""
import json, subprocess, sys
from huggingface_hub import HfApi, ModelCard, ModelCardData, metadata_update
api, out = HfApi(), {}
api.create_repo("alice/card", private=True)
card = ModelCard.from_template(ModelCardData(license="mit", language="en", tags=["x"]))
card.push_to_hub("alice/card")
info = api.model_info("alice/card")
out["card"] = [info.card_data.license, info.card_data.language, info.tags]
metadata_update("alice/card", {"pipeline_tag": "text-classification"}, overwrite=True)
out["pipeline"] = api.model_info("alice/card").pipeline_tag
try:
    api.upload_file(path_or_fileobj=b"---\nlicense: [unclosed\n---\n", path_in_repo="README.md", repo_id="alice/card")
except ValueError as e:
    out["invalid"] = "Invalid metadata" in str(e)
for i in range(120):
    api.upload_file(path_or_fileobj=str(i).encode(), path_in_repo="n.txt", repo_id="alice/card")
commits = api.list_repo_commits("alice/card", formatted=True)
out["commits"] = [len(commits), commits[0].title, commits[-1].title, commits[0].formatted_title]
api.create_tag("alice/card", tag="v1")
api.super_squash_history("alice/card")
out["squashed"] = [len(api.list_repo_commits("alice/card")), api.list_repo_files("alice/card"),
                   api.list_repo_commits("alice/card", revision="v1")[0].title]
api.create_repo("alice/other")
models = list(api.list_models(author="alice", expand=["cardData", "sha"]))
out["listed"] = sorted(m.id for m in models)
out["listed_card"] = [m.card_data.license if m.card_data else None for m in models if m.id == "alice/card"]
out["search"] = [m.id for m in api.list_models(search="oth", author="alice")]
out["filter"] = [m.id for m in api.list_models(filter="license:mit", author="alice", sort="last_modified")]
out["whoami"] = api.whoami()["name"]
api.move_repo("alice/other", "alice/renamed")
out["moved"] = [api.repo_exists("alice/renamed"), api.repo_exists("alice/other")]
api.delete_repo("alice/renamed")
api.delete_repo("alice/renamed", missing_ok=True)
out["deleted"] = api.repo_exists("alice/renamed")
print(json.dumps(out))
"""


def test_cards_history_listing_and_the_cli(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    """Model cards (validate-yaml without a token), metadata_update, 121 commits over pages, super-squash, list_models
    with expand and search, move and delete, and the hf CLI's upload, branch and tag commands."""
    proxy, rest, tokens = _setup(make_proxy)
    env = client_env(proxy.url, tmp_path / "hf", tokens["alice"])
    out = json.loads(run_client("", env, args=["python", "-c", CARDS], timeout=400).stdout)
    assert out["card"] == ["mit", "en", ["x", "license:mit"]] and out["pipeline"] == "text-classification"
    assert out["invalid"]
    count, newest, oldest, formatted = out["commits"]
    assert count == 123 and newest == "Upload n.txt with huggingface_hub" and oldest == "initial commit" and formatted
    files, tagged = out["squashed"][1:]
    assert out["squashed"][0] == 1 and files == [".gitattributes", "README.md", "n.txt"]
    assert tagged == "Upload n.txt with huggingface_hub"  # the tag still names its commit
    assert out["listed"] == ["alice/card", "alice/other"] and out["listed_card"] == ["mit"]
    assert out["search"] == ["alice/other"] and out["filter"] == ["alice/card"] and out["whoami"] == "alice"
    assert out["moved"] == [True, False] and out["deleted"] is False
    events = rest.call("GET", "/audit/writes?limit=1000")
    assert {"repo.move", "repo.delete", "squash", "repo.create"} <= {e["action"] for e in events}
    # The hf CLI: upload (creating the repo and a branch), branches and tags.
    folder = _folder(tmp_path)
    hf = str(Path(os.sys.executable).parent / "hf")
    run_client("", env, args=[hf, "upload", "alice/cli", str(folder), ".", "--private"])
    run_client("", env, args=[hf, "upload", "alice/cli", str(folder / "config.json"), "cfg/config.json",
                              "--revision", "newb"])
    run_client("", env, args=[hf, "repos", "tag", "create", "alice/cli", "v2", "-m", "second"])
    listed = run_client("", env, args=[hf, "repos", "tag", "list", "alice/cli"]).stdout
    assert "v2" in listed
    code = ("from huggingface_hub import HfApi; api = HfApi(); "
            "print(sorted(api.list_repo_files('alice/cli', revision='newb')))")
    assert "cfg/config.json" in run_client("", env, args=["python", "-c", code]).stdout


def test_multipart_lfs_uploads(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    """Above the multipart threshold the client sends parts (no token on them: each URL is signed) and then
    completes; huggingface_hub 2.x (HF_HUB_DISABLE_XET=1) and 0.36 alike."""
    from tests.clients import client_python

    proxy, _, tokens = _setup(make_proxy, hosted_upload_mode="lfs", lfs_multipart_threshold_bytes="5M",
                              lfs_multipart_chunk_bytes="5M", xet="false")  # 0.36 would otherwise take Xet
    data = os.urandom(12 * 1024 * 1024 + 7)  # three parts, the last short
    (tmp_path / "big.bin").write_bytes(data)
    code = ("import sys; from huggingface_hub import HfApi, hf_hub_download; api = HfApi(); "
            "api.create_repo(sys.argv[2], exist_ok=True); "
            "api.upload_file(path_or_fileobj=sys.argv[1], path_in_repo='big.bin', repo_id=sys.argv[2]); "
            "print(hf_hub_download(sys.argv[2], 'big.bin'))")
    for python, repo, extra in (("python", "alice/mp", {"HF_HUB_DISABLE_XET": "1"}),
                                (str(client_python("huggingface_hub==0.36.2")), "alice/mp-old", {})):
        env = client_env(proxy.url, tmp_path / repo.replace("/", "-"), tokens["alice"], **extra)
        got = run_client("", env, args=[python, "-c", code, str(tmp_path / "big.bin"), repo]).stdout
        assert Path(got.strip().splitlines()[-1]).read_bytes() == data
    assert not list((proxy.data_dir / "uploads" / "parts").iterdir())  # parts are gone once assembled
    def part_puts() -> int:  # the access log is written in batches
        return sum(1 for line in proxy.log().splitlines() if "PUT /_hubproxy/lfs/part/" in line and " 200\"" in line)

    assert wait_until(lambda: part_puts() == 6), part_puts()


def test_failure_modes_are_clear(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    """Documented failure modes stay as documented: with Xet off and ``hosted_upload_mode: lfs`` the default client
    (hf_xet) fails on the Xet token hubproxy refuses (404 with a message, never a hang), and git clients are told
    no."""
    import shutil
    import subprocess
    import time

    proxy, _, tokens = _setup(make_proxy, hosted_upload_mode="lfs", xet="false")
    env = client_env(proxy.url, tmp_path / "hf", tokens["alice"])
    code = ("from huggingface_hub import HfApi; api = HfApi(); api.create_repo('alice/x'); "
            "api.upload_file(path_or_fileobj=b'x' * 100_000, path_in_repo='x.bin', repo_id='alice/x')")
    result = run_client("", env, args=["python", "-c", code], check=False, timeout=120)
    assert result.returncode != 0 and "xet-write-token" in result.stderr
    status, headers, _ = request("GET", proxy.url + "/api/models/alice/x/xet-write-token/main",
                                 {"Authorization": f"Bearer {tokens['alice']}"})
    assert status == 404 and "HF_HUB_DISABLE_XET=1" in headers["x-error-message"]
    if shutil.which("git"):
        started = time.monotonic()
        git = subprocess.run(["git", "ls-remote", f"{proxy.url}/alice/x"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        assert git.returncode != 0 and "not found" in git.stderr and time.monotonic() - started < 30
