"""The admin REST API in process: read tokens, the last admin, input checks, the OpenAPI document and docs."""

from __future__ import annotations

import json

from hubproxy.admin.service import Actor
from tests.fast.inprocess import InProcessHub

API = "/admin/api/v1"


def call(app: InProcessHub, method: str, path: str, token: str | None, body: object = None) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, _, data = app.request(method, API + path, headers, json.dumps(body).encode() if body is not None else None)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode()


def test_read_tokens_change_nothing_and_the_last_admin_stays(make_app, pg_url: str) -> None:  # noqa: ANN001
    app = make_app(token_cache_seconds="0", database_url=pg_url)
    root = app.admin.bootstrap(Actor.operator())["token"]
    status, tok = call(app, "POST", "/tokens", root, {"user": "admin", "role": "read"})
    reader = tok["token"]
    assert call(app, "GET", "/users", reader)[0] == 200
    assert call(app, "POST", "/users", reader, {"name": "mallory", "is_admin": True})[0] == 403
    assert call(app, "POST", "/tokens", reader, {"user": "admin", "role": "write"})[0] == 403
    assert [u["name"] for u in call(app, "GET", "/users", root)[1]] == ["admin"]
    assert call(app, "POST", "/users/admin/disable", root)[0] == 409  # nobody could undo it
    assert call(app, "GET", "/projects", root)[0] == 200  # still an admin
    # A NUL reaches PostgreSQL from nowhere: strings with control characters are refused up front.
    assert call(app, "POST", "/projects", root, {"name": "team", "allow": ["models:*"]})[0] == 201
    assert call(app, "POST", "/users", root, {"name": "x\u0000y"})[0] == 400
    status, _, _ = app.request("PUT", API + "/projects/team/members/a%00b",
                           {"Authorization": f"Bearer {root}", "Content-Type": "application/json"},
                           b'{"role": "viewer"}')
    assert status == 400
    big = b'{"name": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    assert app.request("POST", API + "/users", {"Authorization": f"Bearer {root}"}, big)[0] == 413


def test_openapi_and_docs(app: InProcessHub) -> None:
    status, spec = call(app, "GET", "/openapi.json", None)
    assert status == 200 and spec["openapi"].startswith("3.") and f"{API}/users" in spec["paths"]
    status, _, page = app.request("GET", API + "/docs")
    assert status == 200 and b"/admin/api/v1/projects/{project}/policy" in page and b"<script" not in page
