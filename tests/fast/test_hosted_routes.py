"""Hosted repos in process: hidden ones answer like missing ones on every route; hosted blobs are primary data."""

from __future__ import annotations

import json
import os

import pytest

from hubproxy.admin.service import Actor
from hubproxy.cache import manage
from hubproxy.errors import Conflict
from hubproxy.repos.model import git_blob_sha1
from tests.fast.inprocess import InProcessHub
from tests.fast.test_access_routes import ROUTES, _answer

LFS_BATCH = ("POST", "/{r}.git/info/lfs/objects/batch")


def _users(app: InProcessHub, *names: str) -> dict[str, str]:
    operator = Actor.operator()
    tokens = {"admin": app.admin.bootstrap(operator)["token"]}
    for name in names:
        app.admin.create_user(operator, name)
        tokens[name] = app.admin.create_token(operator, name, role="write")["token"]
    return tokens


def _create(app: InProcessHub, token: str, name: str, **body: object) -> int:
    status, _, _ = app.request("POST", "/api/repos/create", {"Authorization": f"Bearer {token}"},
                               json.dumps({"name": name, **body}).encode())
    return status


def _commit(app: InProcessHub, token: str, repo: str, files: dict[str, bytes]) -> tuple[int, dict]:
    import base64

    lines = [{"key": "header", "value": {"summary": "add"}}] + [
        {"key": "file", "value": {"content": base64.b64encode(d).decode(), "path": p, "encoding": "base64"}}
        for p, d in files.items()]
    status, _, body = app.request("POST", f"/api/models/{repo}/commit/main",
                                  {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
                                  "".join(json.dumps(x) + "\n" for x in lines).encode())
    return status, json.loads(body)


def test_private_hosted_repos_answer_like_missing_ones(make_app) -> None:  # noqa: ANN001
    app = make_app(anonymous_access="off", token_cache_seconds="0")
    tokens = _users(app, "alice", "bob")
    assert _create(app, tokens["alice"], "secret", private=True) == 200
    assert _commit(app, tokens["alice"], "alice/secret", {"config.json": b"{}"})[0] == 200
    for token in (tokens["bob"], None):
        for method, template in [*ROUTES, LFS_BATCH]:
            hidden = _answer(app, method, template.format(r="alice/secret"), token)
            missing = _answer(app, method, template.format(r="alice/never-was"), token)
            assert hidden == missing, (method, template, token is None, hidden, missing)
            assert hidden[0] == (404 if token else 401) and hidden[1].get("x-error-code") == "RepoNotFound", \
                (method, template, hidden)
    # The owner sees it; another spelling of its id names the same repo.
    status, _, body = app.request("GET", "/api/models/Alice/Secret", {"Authorization": f"Bearer {tokens['alice']}"})
    assert status == 200 and json.loads(body)["id"] == "alice/secret"


def test_hosted_blobs_are_never_evicted_purged_or_quarantined(make_app) -> None:  # noqa: ANN001
    app = make_app(token_cache_seconds="0")
    tokens = _users(app, "alice")
    assert _create(app, tokens["alice"], "kept") == 200
    data = os.urandom(100_000)
    assert _commit(app, tokens["alice"], "alice/kept", {"w.bin": data})[0] == 200
    key = git_blob_sha1(data)
    runtime = app.runtime
    assert manage.evict(runtime.engine, runtime.store, 1) == []  # over budget, and still nothing to evict
    assert runtime.store.stat(key) == len(data)
    with pytest.raises(Conflict):
        manage.purge(runtime.engine, runtime.store, "model", "alice/kept")
    path = runtime.store.path(key)
    with open(path, "r+b") as f:  # bit rot
        f.write(b"\0")
    report = manage.verify(runtime.engine, runtime.store)
    assert report.hosted_corrupt == [key] and report.corrupt == [] and os.path.exists(path)


def _call(app: InProcessHub, token: str, method: str, path: str, body: dict | None = None) -> int:
    status, _, _ = app.request(method, path, {"Authorization": f"Bearer {token}"},
                               json.dumps(body).encode() if body is not None else None)
    return status


def test_project_roles_in_a_hosted_namespace(make_app) -> None:  # noqa: ANN001
    """Viewers read, developers push and branch, maintainers manage; a read token never writes; personal
    namespaces can be switched off; the write audit exports as CSV."""
    app = make_app(token_cache_seconds="0", personal_namespaces="false")
    operator = Actor.operator()
    tokens = _users(app, "vic", "dev", "maya")
    app.admin.create_project(operator, "team", [], [])
    app.admin.assign_namespace(operator, "acme", "team")
    for user, role in (("vic", "viewer"), ("dev", "developer"), ("maya", "maintainer")):
        app.admin.set_member(operator, "team", user, role)
    tokens["dev-read"] = app.admin.create_token(operator, "dev", role="read")["token"]
    assert _create(app, tokens["dev"], "bare") == 403  # no personal namespaces here
    assert _create(app, tokens["vic"], "m", organization="acme") == 403
    assert _create(app, tokens["dev-read"], "m", organization="acme") == 403
    assert _create(app, tokens["dev"], "m", organization="acme") == 200
    assert _call(app, tokens["vic"], "GET", "/api/models/acme/m") == 200  # private: members read
    assert _commit(app, tokens["vic"], "acme/m", {"a.txt": b"a"})[0] == 403
    assert _commit(app, tokens["dev-read"], "acme/m", {"a.txt": b"a"})[0] == 403
    assert _commit(app, tokens["dev"], "acme/m", {"a.txt": b"a"})[0] == 200
    assert _call(app, tokens["dev"], "POST", "/api/models/acme/m/branch/dev", {}) == 200
    assert _call(app, tokens["dev"], "POST", "/api/models/acme/m/tag/main", {"tag": "v1"}) == 403
    assert _call(app, tokens["dev"], "DELETE", "/api/models/acme/m/branch/dev") == 403
    assert _call(app, tokens["dev"], "PUT", "/api/models/acme/m/settings", {"visibility": "public"}) == 403
    assert _call(app, tokens["maya"], "POST", "/api/models/acme/m/tag/main", {"tag": "v1"}) == 200
    assert _call(app, tokens["maya"], "POST", "/api/models/acme/m/tag/main", {"tag": "v1"}) == 409  # tags stay
    assert _call(app, tokens["maya"], "DELETE", "/api/models/acme/m/branch/dev") == 200
    assert _call(app, tokens["maya"], "DELETE", "/api/models/acme/m/branch/main") == 403
    status, _, csv = app.request("GET", "/admin/api/v1/audit/writes?format=csv",
                                 {"Authorization": f"Bearer {tokens['admin']}"})
    assert status == 200 and csv.decode().splitlines()[0].startswith("id,ts,actor")
    actions = [line.split(",")[7] for line in csv.decode().splitlines()[1:]]
    assert actions == ["branch.delete", "tag.create", "branch.create", "commit", "repo.create"]
    with pytest.raises(Conflict):
        app.admin.remove_namespace(operator, "acme")  # it holds a repo


def test_an_assigned_namespace_is_hosted_at_once(make_app) -> None:  # noqa: ANN001
    """The server that assigns a namespace through its admin API hosts it at once, whatever its cache time."""
    app = make_app(token_cache_seconds="300")
    tokens = _users(app, "dev")
    app.admin.create_project(Actor.operator(), "team", [], [])
    app.admin.set_member(Actor.operator(), "team", "dev", "developer")
    assert _create(app, tokens["dev"], "m", organization="acme") == 403  # mirrored: no repos can be made there
    assert _call(app, tokens["admin"], "PUT", "/admin/api/v1/namespaces/acme", {"project": "team"}) == 200
    assert _create(app, tokens["dev"], "m", organization="acme") == 200
