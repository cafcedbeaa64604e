"""Access in process: hidden repos answer like missing ones on every route, and what needs a token."""

from __future__ import annotations

import json
import time

from hubproxy.admin.service import Actor
from tests.fakehub import FakeHub
from tests.fast.inprocess import InProcessHub
from tests.helpers import free_port

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


def _answer(app: InProcessHub, method: str, path: str, token: str | None) -> tuple:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, h, body = app.request(method, path, headers, b"{}" if method in ("POST", "PUT") else None)
    kept = {k: v for k, v in h.items() if k not in ("date", "x-request-id")}
    return status, kept, body


def test_hidden_and_missing_repos_cannot_be_told_apart(make_app, fakehub: FakeHub) -> None:  # noqa: ANN001
    fakehub.add_commit("model", "acme/hidden-one", {"config.json": b"{}"})
    app = make_app(anonymous_access="off", token_cache_seconds="0", revision_ttl="0")
    tokens = app.secured(["models:acme/*"], ["models:acme/hidden-*"])
    for token in (tokens["dev"], None):
        for method, template in ROUTES:
            hidden = _answer(app, method, template.format(r="acme/hidden-one"), token)
            missing = _answer(app, method, template.format(r="acme/never-was"), token)
            assert hidden == missing, (method, template, token is None, hidden, missing)
            assert hidden[0] == (404 if token else 401), (method, template)
            answer = json.dumps(hidden[1]) + hidden[2].decode(errors="replace")
            assert f"127.0.0.1:{fakehub.port}" not in answer and fakehub.url not in answer
    # Both are remembered the same way: asking again costs neither an upstream request.
    fakehub.reset_counts()
    for name in ("acme/hidden-one", "acme/never-was"):
        assert _answer(app, "GET", f"/api/models/{name}", tokens["dev"])[0] == 404
    time.sleep(0.2)
    assert fakehub.count() <= 2  # revision_ttl is 0 here: at most one look each, never a difference


def test_the_upstream_address_never_reaches_a_client(make_app) -> None:  # noqa: ANN001
    dead = f"http://127.0.0.1:{free_port()}"
    app = make_app(upstream=dead)
    for target in ("/api/models/alice/files", "/alice/files/resolve/main/config.json", "/api/models/alice/files/tree/main"):
        status, headers, body = app.request("GET", target)
        assert status in (502, 504)
        assert dead.split("//")[1] not in json.dumps(headers) + body.decode(), (target, headers, body)


def test_what_answers_without_a_token(make_app) -> None:  # noqa: ANN001
    closed = make_app(anonymous_access="off", metrics_access="token")
    token = closed.admin.bootstrap(Actor.operator())["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert closed.request("GET", "/health")[0] == 200
    assert closed.request("GET", "/ready")[0] == 200
    for path in ("/metrics", "/admin/api/v1/openapi.json", "/admin/api/v1/docs", "/api/models/alice/files"):
        assert closed.request("GET", path)[0] == 401, path
        assert closed.request("GET", path, auth)[0] == 200, path
    open_metrics = make_app(anonymous_access="off")
    assert open_metrics.request("GET", "/metrics")[0] == 200  # the default: scrapers need no token
    assert open_metrics.request("GET", "/admin/api/v1/openapi.json")[0] == 401
