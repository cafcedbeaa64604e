"""Access control as outside testers attacked it: other spellings of ids, hidden versus missing repos,
viewers and what is really stored. Real clients with tokens, raw HTTP where a client would hide the answer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from tests.fakehub import FakeHub
from tests.helpers import admin_json, hubproxy_cli, request


def _secured(make_proxy, fakehub: FakeHub, deny: list[str]) -> tuple:  # noqa: ANN001
    """A proxy with anonymous access off, a project allowing acme/*, and a developer's and a viewer's token."""
    proxy = make_proxy(anonymous_access="off", token_cache_seconds="0", revision_ttl="0")
    d = proxy.data_dir
    tokens = {"admin": admin_json(d, "bootstrap")["token"]}
    args = ["project-create", "research", "--allow", "models:acme/*"]
    for pattern in deny:
        args += ["--deny", pattern]
    admin_json(d, *args)
    for user, role in (("dev", "developer"), ("viewer", "viewer")):
        admin_json(d, "user-create", user)
        admin_json(d, "member-set", "research", user, "--role", role)
        tokens[user] = admin_json(d, "token-create", user)["token"]
    return proxy, tokens


def test_other_spellings_of_a_denied_repo_stay_denied(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    for name in ("acme/tiny", "acme/secret-model", "acme/allowed"):
        fakehub.add_commit("model", name, {"config.json": json.dumps({"name": name}).encode()})
    fakehub.renames[("model", "acme/old-name")] = "acme/secret-model"
    proxy, tokens = _secured(make_proxy, fakehub, ["models:acme/tiny", "models:acme/secret-*"])
    auth = {"Authorization": f"Bearer {tokens['dev']}"}
    # A trailing newline (or any control character) is no repo id at all.
    for target in ("/acme/tiny%0A/resolve/main/config.json", "/api/models/acme/tiny%0A/tree/main",
                   "/api/models/acme/tiny%0a", "/acme/ti%00ny/resolve/main/config.json"):
        status, headers, body = request("GET", proxy.url + target, auth)
        assert status == 400 and headers["x-error-code"] == "BadRequest", target
        assert "\n" not in headers.get("link", "")

    def download(repo: str) -> str:
        return hf_hub_download(repo, "config.json", endpoint=proxy.url, token=tokens["dev"],
                               cache_dir=tmp_path / repo.replace("/", "_"))

    for spelling in ("acme/Secret-Model", "ACME/SECRET-MODEL", "acme/old-name", "acme/TINY"):
        with pytest.raises(RepositoryNotFoundError):
            download(spelling)
    # An allowed repo works under any spelling, and is known by one canonical id everywhere.
    assert json.loads(Path(download("ACME/Allowed")).read_text()) == {"name": "acme/allowed"}
    assert json.loads(Path(download("acme/allowed")).read_text()) == {"name": "acme/allowed"}
    assert HfApi(endpoint=proxy.url, token=tokens["dev"]).model_info("Acme/ALLOWED").id == "acme/allowed"
    deadline = time.monotonic() + 15
    while len(events := admin_json(proxy.data_dir, "audit", "--user", "dev", "--format", "json")) < 6:
        assert time.monotonic() < deadline, events
        time.sleep(0.3)
    assert {e["repo_id"] for e in events if e["outcome"] == "complete"} == {"acme/allowed"}
    refused = {e["repo_id"] for e in events if e["outcome"] == "refused"}
    assert refused == {"acme/secret-model", "acme/tiny"}  # audited under the names the upstream gave
    cached = json.loads(hubproxy_cli(proxy.data_dir, "cache", "ls", "--json").stdout)
    assert [r["repo_id"] for r in cached] == ["acme/allowed"]


ROUTES = [
    ("HEAD", "/{r}/resolve/main/config.json"), ("GET", "/{r}/resolve/main/config.json"),
    ("GET", "/{r}/resolve/" + "a" * 40 + "/config.json"), ("GET", "/{r}/resolve/refs%2Fpr%2F1/x.bin"),
    ("GET", "/api/models/{r}"), ("HEAD", "/api/models/{r}"), ("GET", "/api/models/{r}?blobs=true"),
    ("GET", "/api/models/{r}/revision/main"), ("GET", "/api/models/{r}/revision/" + "b" * 40),
    ("GET", "/api/models/{r}/tree/main"), ("GET", "/api/models/{r}/tree/main/sub?recursive=true"),
    ("GET", "/api/models/{r}/tree/main?expand=true&cursor=5"), ("POST", "/api/models/{r}/paths-info/main"),
    ("GET", "/api/models/{r}/refs"), ("GET", "/api/models/{r}/refs?include_prs=1"),
    ("GET", "/api/models/{r}/commits/main"), ("GET", "/api/models/{r}/xet-read-token/main"),
    ("GET", "/api/models/{r}/xet-write-token/main"), ("GET", "/api/models/{r}/auth-check"),
    ("POST", "/api/models/{r}/preupload/main"), ("POST", "/api/models/{r}/commit/main"),
    ("POST", "/api/models/{r}/branch/dev"), ("DELETE", "/api/models/{r}/branch/dev"),
    ("POST", "/api/models/{r}/tag/main"), ("GET", "/api/models/{r}/discussions"),
    ("PUT", "/api/models/{r}/settings"), ("GET", "/api/models/{r}/treesize/main/x"),
    ("GET", "/api/models/{r}/safetensors-metadata/model.safetensors"), ("POST", "/api/models/{r}/super-squash/main"),
    ("GET", "/api/models/{r}/lfs-files"),
]


def _answer(proxy, method: str, path: str, token: str | None) -> tuple:  # noqa: ANN001
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, h, body = request(method, proxy.url + path, headers, b"{}" if method in ("POST", "PUT") else None)
    kept = {k: v for k, v in h.items() if k not in ("date", "x-request-id")}
    return status, kept, body


def test_hidden_and_missing_repos_cannot_be_told_apart(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    fakehub.add_commit("model", "acme/hidden-one", {"config.json": b"{}"})
    proxy, tokens = _secured(make_proxy, fakehub, ["models:acme/hidden-*"])
    for token in (tokens["dev"], None):
        for method, template in ROUTES:
            hidden = _answer(proxy, method, template.format(r="acme/hidden-one"), token)
            missing = _answer(proxy, method, template.format(r="acme/never-was"), token)
            assert hidden == missing, (method, template, token is None, hidden, missing)
            assert hidden[0] == (404 if token else 401), (method, template)
            answer = json.dumps(hidden[1]) + hidden[2].decode(errors="replace")
            assert f"127.0.0.1:{fakehub.port}" not in answer and fakehub.url not in answer
    # Both are remembered the same way: asking again costs neither an upstream request.
    fakehub.reset_counts()
    for name in ("acme/hidden-one", "acme/never-was"):
        assert _answer(proxy, "GET", f"/api/models/{name}", tokens["dev"])[0] == 404
    time.sleep(0.2)
    assert fakehub.count() <= 2  # revision_ttl is 0 here: at most one look each, never a difference


def test_the_upstream_address_never_reaches_a_client(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    from tests.helpers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    proxy = make_proxy(upstream=dead)
    for target in ("/api/models/alice/files", "/alice/files/resolve/main/config.json", "/api/models/alice/files/tree/main"):
        status, headers, body = request("GET", proxy.url + target)
        assert status in (502, 504)
        assert dead.split("//")[1] not in json.dumps(headers) + body.decode(), (target, headers, body)


def test_viewers_get_only_what_is_stored(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    fakehub.add_commit("model", "acme/fresh", {"config.json": b'{"fresh": 1}'})
    proxy, tokens = _secured(make_proxy, fakehub, [])

    def viewer_download() -> str:
        return hf_hub_download("acme/fresh", "config.json", endpoint=proxy.url, token=tokens["viewer"],
                               cache_dir=tmp_path / f"v{time.monotonic_ns()}")

    # A developer's probe of a missing file leaves a negative entry: that is no content.
    auth = {"Authorization": f"Bearer {tokens['dev']}"}
    assert request("HEAD", proxy.url + "/acme/fresh/resolve/main/nope.txt", auth)[0] == 404
    with pytest.raises(GatedRepoError):
        viewer_download()
    hf_hub_download("acme/fresh", "config.json", endpoint=proxy.url, token=tokens["dev"], cache_dir=tmp_path / "dev")
    assert json.loads(Path(viewer_download()).read_text()) == {"fresh": 1}
    # A viewer reads what is stored, and pulls nothing else of the repo either.
    fakehub.add_commit("model", "acme/fresh", {"extra.json": b'{"new": 1}'})
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/fresh", "extra.json", endpoint=proxy.url, token=tokens["viewer"],
                        cache_dir=tmp_path / "extra")
    hubproxy_cli(proxy.data_dir, "cache", "purge", "acme/fresh")
    with pytest.raises(GatedRepoError):  # at once: the gate asks what is stored, it does not remember
        viewer_download()
