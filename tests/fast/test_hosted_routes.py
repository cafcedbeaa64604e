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
