"""The admin API's endpoints, declared once: route, inputs, and the service operation each one calls.

The router, input checks, the OpenAPI document and the docs page all come from ``ENDPOINTS``.
Handlers are plain functions of one ``Call``; they run in a worker thread and return JSON-ready
data (or a ``Text`` for CSV and JSON Lines exports).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hubproxy.admin import schema as s
from hubproxy.admin.service import Actor, AdminService
from hubproxy.audit.downloads import to_csv
from hubproxy.errors import Invalid
from hubproxy.hosted.rows import WRITE_COLUMNS


@dataclass
class Call:
    """One admin request, checked against its endpoint's declaration."""

    service: AdminService
    actor: Actor
    path: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any]


@dataclass(frozen=True)
class Text:
    """A non-JSON answer (exports)."""

    body: str
    media_type: str


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Callable[[Call], Any]
    summary: str
    response: dict[str, Any] = field(default_factory=lambda: s.OBJ)
    body: dict[str, Any] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: int = 200

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + r"\Z")


def _page(c: Call) -> dict[str, Any]:
    return {"limit": c.query.get("limit", 100), "offset": c.query.get("offset", 0),
            "since": c.query.get("since"), "until": c.query.get("until")}


def _repo(c: Call) -> tuple[str, str, str | None]:
    return c.body.get("repo_type", "model"), c.body["repo_id"], c.body.get("revision")


def _token_id(c: Call) -> int:
    if not c.path["id"].isascii() or not c.path["id"].isdigit() or len(c.path["id"]) > 18:
        raise Invalid("token id must be a number")
    return int(c.path["id"])


def _downloads(c: Call) -> Any:
    rows = c.service.download_events(c.actor, principal=c.query.get("user"), repo_id=c.query.get("repo"),
                                     **_page(c))
    fmt = c.query.get("format", "json")
    if fmt == "jsonl":
        return Text("".join(json.dumps(r) + "\n" for r in rows), "application/x-ndjson")
    if fmt == "csv":
        return Text(to_csv(rows), "text/csv")
    return rows


def _writes(c: Call) -> Any:
    rows = c.service.write_events(c.actor, since=c.query.get("since"), repo=c.query.get("repo"),
                                  by=c.query.get("actor"), limit=c.query.get("limit", 100))
    fmt = c.query.get("format", "json")
    if fmt == "jsonl":
        return Text("".join(json.dumps(r) + "\n" for r in rows), "application/x-ndjson")
    if fmt == "csv":
        return Text(to_csv(rows, WRITE_COLUMNS), "text/csv")
    return rows


def _admin_events(c: Call) -> Any:
    return c.service.admin_events(c.actor, since=c.query.get("since"), by=c.query.get("actor"),
                                  limit=c.query.get("limit", 100), offset=c.query.get("offset", 0))


ENDPOINTS = [
    Endpoint("GET", "/users", lambda c: c.service.list_users(c.actor), "List users and service accounts", s.LIST),
    Endpoint("POST", "/users", lambda c: c.service.create_user(
        c.actor, c.body["name"], c.body.get("kind", "user"), bool(c.body.get("is_admin")), c.body.get("fullname", "")),
        "Create a user or service account", s.OBJ, s.USER_BODY, status=201),
    Endpoint("POST", "/users/{name}/disable", lambda c: c.service.set_user_disabled(c.actor, c.path["name"], True),
             "Disable an account (its tokens stop working; never the last enabled admin)"),
    Endpoint("POST", "/users/{name}/enable", lambda c: c.service.set_user_disabled(c.actor, c.path["name"], False),
             "Enable an account again"),
    Endpoint("GET", "/tokens", lambda c: c.service.list_tokens(c.actor, c.query.get("user")),
             "List tokens (never their values)", s.LIST, query={"user": s.STR}),
    Endpoint("POST", "/tokens", lambda c: c.service.create_token(
        c.actor, c.body["user"], c.body.get("name", "default"), c.body.get("role", "read"), c.body.get("expires_days")),
        "Create a token; the value is returned once", s.OBJ, s.TOKEN_BODY, status=201),
    Endpoint("DELETE", "/tokens/{id}", lambda c: c.service.revoke_token(c.actor, _token_id(c)), "Revoke a token"),
    Endpoint("GET", "/projects", lambda c: c.service.list_projects(c.actor), "List projects and their policies",
             s.LIST),
    Endpoint("POST", "/projects", lambda c: c.service.create_project(
        c.actor, c.body["name"], c.body.get("allow", []), c.body.get("deny", []), c.body.get("pull_new", True)),
        "Create a project with an upstream policy", s.OBJ, s.PROJECT_BODY, status=201),
    Endpoint("PUT", "/projects/{project}/policy", lambda c: c.service.set_policy(
        c.actor, c.path["project"], c.body.get("allow", []), c.body.get("deny", []), c.body.get("pull_new", True)),
        "Replace a project's upstream policy (admins only)", s.OBJ, s.POLICY_BODY),
    Endpoint("PUT", "/projects/{project}/members/{user}", lambda c: c.service.set_member(
        c.actor, c.path["project"], c.path["user"], c.body["role"]),
        "Add a member or change its role (admins and the project's maintainers)", s.OBJ, s.MEMBER_BODY),
    Endpoint("DELETE", "/projects/{project}/members/{user}", lambda c: c.service.set_member(
        c.actor, c.path["project"], c.path["user"], None),
        "Remove a member (admins and the project's maintainers)"),
    Endpoint("GET", "/audit/downloads", _downloads, "Download events, newest first (json, jsonl or csv)",
             s.LIST, query=s.AUDIT_QUERY),
    Endpoint("GET", "/projects/{project}/audit", lambda c: c.service.project_download_events(
        c.actor, c.path["project"], **_page(c)),
        "A project's download events (admins and the project's maintainers)", s.LIST,
        query={**s.TIME_QUERY, **s.PAGE_QUERY}),
    Endpoint("GET", "/namespaces", lambda c: c.service.list_namespaces(c.actor),
             "Hosted namespaces and the projects owning them", s.LIST),
    Endpoint("PUT", "/namespaces/{name}", lambda c: c.service.assign_namespace(c.actor, c.path["name"],
                                                                               c.body["project"]),
             "Make a namespace hosted, owned by a project (repos cached from the upstream in it are purged)",
             s.OBJ, {"type": "object", "required": ["project"], "additionalProperties": False,
                     "properties": {"project": s.STR}}),
    Endpoint("DELETE", "/namespaces/{name}", lambda c: c.service.remove_namespace(c.actor, c.path["name"]),
             "Stop hosting a namespace (refused while it holds hosted repos)"),
    Endpoint("GET", "/audit/writes", _writes,
             "Changes to hosted repos (repos, commits, branches, tags, settings), newest first (json, jsonl or csv)",
             s.LIST, query={"since": {"type": "number"}, "repo": s.STR, "actor": s.STR,
                            "limit": s.PAGE_QUERY["limit"], "format": s.AUDIT_QUERY["format"]}),
    Endpoint("GET", "/audit/admin", _admin_events, "Admin events, newest first", s.LIST,
             query={"since": {"type": "number"}, "actor": s.STR, **s.PAGE_QUERY}),
    Endpoint("GET", "/cache", lambda c: c.service.cache_list(c.actor),
             "Cached repo revisions with sizes, hits and pins", s.LIST),
    Endpoint("POST", "/cache/pin", lambda c: c.service.cache_pin(c.actor, *_repo(c)),
             "Pin a repo revision (keep it from eviction)", s.OBJ, s.REPO_BODY),
    Endpoint("POST", "/cache/unpin", lambda c: c.service.cache_unpin(c.actor, *_repo(c)),
             "Unpin a repo (one revision, or all)", s.OBJ, s.REPO_BODY),
    Endpoint("POST", "/cache/purge", lambda c: c.service.cache_purge(c.actor, *_repo(c)),
             "Forget a repo (or a revision) and delete unused blobs", s.OBJ, s.REPO_BODY),
    Endpoint("POST", "/cache/verify", lambda c: c.service.cache_verify(c.actor),
             "Re-hash every blob; quarantine mismatches"),
]
