"""The admin REST API: operations, permissions, admin events, OpenAPI document, docs page, fuzzing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from huggingface_hub import hf_hub_download

from tests.fakehub import FakeHub
from tests.helpers import ROOT, request

API = "/admin/api/v1"


def call(proxy, method: str, path: str, token: str | None, body: object = None) -> tuple[int, object]:  # noqa: ANN001
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, _, data = request(method, proxy.url + API + path, headers,
                              json.dumps(body).encode() if body is not None else None)
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode()


def bootstrap(proxy, database_url: str | None = None) -> str:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBPROXY_")}
    if database_url:
        env["HUBPROXY_DATABASE_URL"] = database_url
    return json.loads(subprocess.run([sys.executable, "-m", "hubproxy", "admin", "bootstrap", "--json", "--data-dir",
                                      str(proxy.data_dir)], capture_output=True, text=True, cwd=ROOT, env=env,
                                     check=True).stdout)["token"]


def test_admin_api_end_to_end(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    proxy = make_proxy(token_cache_seconds="0")
    root = bootstrap(proxy)
    assert call(proxy, "GET", "/users", None)[0] == 401
    assert call(proxy, "GET", "/users", "hf_" + "z" * 34)[0] == 401
    status, user = call(proxy, "POST", "/users", root, {"name": "lead"})
    assert status == 201 and user["name"] == "lead"
    assert call(proxy, "POST", "/users", root, {"name": "lead"})[0] == 409
    assert call(proxy, "POST", "/users", root, {"name": 5})[0] == 400
    status, tok = call(proxy, "POST", "/tokens", root, {"user": "lead", "role": "read", "expires_days": 30})
    lead = tok["token"]
    assert status == 201 and lead.startswith("hf_")
    assert call(proxy, "GET", "/users", lead)[0] == 403  # not an admin
    assert call(proxy, "POST", "/projects", root, {"name": "team", "allow": ["models:alice/*"]})[0] == 201
    assert call(proxy, "PUT", "/projects/team/members/lead", root, {"role": "maintainer"})[0] == 200
    # A maintainer manages their own project's members, never its upstream policy, and nothing else.
    assert call(proxy, "PUT", "/projects/team/policy", lead, {"allow": ["*"], "pull_new": True})[0] == 403
    assert call(proxy, "PUT", "/projects/team/policy", root, {"allow": ["models:alice/files"], "pull_new": True})[0] == 200
    assert call(proxy, "POST", "/projects", lead, {"name": "mine"})[0] == 403
    assert call(proxy, "GET", "/projects", root)[1][0]["rules"] == [{"effect": "allow", "pattern": "models:alice/files"}]
    # The lead's token has role read: it may look at its project but never change it.
    status, tok = call(proxy, "POST", "/tokens", root, {"user": "lead", "role": "write"})
    lead_write = tok["token"]
    assert call(proxy, "PUT", "/projects/team/members/admin", lead, {"role": "viewer"})[0] == 403
    assert call(proxy, "PUT", "/projects/team/members/admin", lead_write, {"role": "viewer"})[0] == 200
    assert call(proxy, "GET", "/projects/team/audit", lead)[0] == 200
    local = hf_hub_download("alice/files", "config.json", endpoint=proxy.url, cache_dir=tmp_path, token=lead)
    assert Path(local).exists()
    status, events = call(proxy, "GET", "/audit/downloads?user=lead", root)
    deadline = time.monotonic() + 10
    while not events and time.monotonic() < deadline:
        time.sleep(0.3)
        status, events = call(proxy, "GET", "/audit/downloads?user=lead", root)
    assert status == 200 and events[0]["project"] == "team"
    status, text = call(proxy, "GET", "/audit/downloads?format=csv", root)
    assert status == 200 and text.startswith("ts,principal")
    status, cached = call(proxy, "GET", "/cache", root)
    assert status == 200 and any(r["repo_id"] == "alice/files" for r in cached)
    assert call(proxy, "POST", "/cache/pin", root, {"repo_id": "alice/files"})[0] == 200
    assert call(proxy, "POST", "/cache/pin", root, {"repo_id": "alice/never"})[0] in (400, 404)
    # The maintainer reads their own project's downloads, and no other project's.
    status, project_events = call(proxy, "GET", "/projects/team/audit", lead)
    assert status == 200 and [e["repo_id"] for e in project_events] == ["alice/files"]
    assert call(proxy, "POST", "/projects", root, {"name": "elsewhere", "allow": ["models:gpt2"]})[0] == 201
    assert call(proxy, "GET", "/projects/elsewhere/audit", lead)[0] == 403
    assert call(proxy, "GET", "/projects/elsewhere/audit", root) == (200, [])
    # A change made with the CLI is an admin event too, by "cli:<os user>".
    subprocess.run([sys.executable, "-m", "hubproxy", "admin", "user-create", "from-cli", "--data-dir",
                    str(proxy.data_dir)], capture_output=True, cwd=ROOT, check=True)
    token_id = call(proxy, "GET", "/tokens?user=lead", root)[1][0]["id"]
    assert call(proxy, "DELETE", f"/tokens/{token_id}", root)[0] == 200
    assert call(proxy, "GET", "/projects", lead)[0] == 401  # revoked
    status, admin_events = call(proxy, "GET", "/audit/admin", root)
    actions = [e["action"] for e in admin_events]
    for action in ("user.create", "token.create", "project.create", "project.member", "project.policy",
                   "cache.pin", "token.revoke"):
        assert action in actions
    cli_event = next(e for e in admin_events if e["target"] == "from-cli")
    assert cli_event["action"] == "user.create" and cli_event["actor"].startswith("cli:")
    policy_event = next(e for e in admin_events if e["action"] == "project.policy")
    assert policy_event["actor"] == "admin" and policy_event["before"]["rules"] != policy_event["after"]["rules"]
    member_event = next(e for e in admin_events if e["target"] == "team/admin")
    assert member_event["actor"] == "lead" and member_event["before"] == {"role": None}


def test_fuzz_admin_api_from_its_openapi(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    """schemathesis from the OpenAPI document: no 5xx with an admin token; nothing but 401 without one."""
    proxy = make_proxy()
    root = bootstrap(proxy)
    schemathesis = str(Path(sys.executable).with_name("schemathesis"))
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    common = [schemathesis, "run", f"{proxy.url}{API}/openapi.json", "--max-examples", "25", "--phases",
              "examples,coverage,fuzzing", "--generation-deterministic", "--request-timeout", "20"]
    authed = subprocess.run(common + ["-H", f"Authorization: Bearer {root}", "--checks", "not_a_server_error,ignored_auth"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert authed.returncode == 0, authed.stdout[-4000:] + authed.stderr[-2000:]
    anonymous = subprocess.run(common + ["--checks", "not_a_server_error", "--max-examples", "5"],
                               capture_output=True, text=True, env=env, timeout=600)
    assert anonymous.returncode == 0, anonymous.stdout[-4000:]
    for path in ("/users", "/tokens", "/projects", "/audit/downloads", "/cache"):
        assert call(proxy, "GET", path, None)[0] == 401
