"""The admin REST API under ``/admin/api/v1``: users, tokens, projects, members, policies, audit, cache.

Every endpoint is declared once in ``ENDPOINTS``; the router, the input checks, the OpenAPI document
(``/admin/api/v1/openapi.json``) and the self-contained docs page (``/admin/api/v1/docs``, no external
assets, so it works air-gapped) all come from that table. Callers need a hubproxy token of a global
admin, or of a maintainer of the project a project endpoint names. Every change is recorded as an
admin event (actor, action, target, before, after).
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from hubproxy import __version__
from hubproxy.audit import admin as admin_audit
from hubproxy.audit import downloads
from hubproxy.auth import identity as ident
from hubproxy.auth import policy
from hubproxy.auth.authenticator import Authenticator
from hubproxy.auth.identity import Authenticated, IdentityError
from hubproxy.cache import manage
from hubproxy.store.base import BlobStore

PREFIX = "/admin/api/v1"
MAX_OFFSET = 1_000_000_000
STR = {"type": "string"}
STR_LIST = {"type": "array", "items": {"type": "string"}}
OBJ = {"type": "object"}
LIST = {"type": "array", "items": {"type": "object"}}
REPO_BODY = {"type": "object", "required": ["repo_id"], "additionalProperties": False, "properties": {
    "repo_type": {"type": "string", "enum": ["model", "dataset", "space"]}, "repo_id": STR, "revision": STR}}


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Ctx:
    """One admin request."""

    request: Request
    path: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]
    who: Authenticated
    api: AdminApi

    @property
    def engine(self) -> Engine:
        return self.api.engine

    @property
    def actor(self) -> str:
        return self.who.principal.name

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (IdentityError, manage.CacheError) as exc:
            text = str(exc)
            raise AdminError(409 if "exists already" in text else 404 if text.startswith("no ") else 400, text) from None

    async def event(self, action: str, target: str, before: Any = None, after: Any = None) -> None:
        await asyncio.to_thread(admin_audit.record, self.engine, self.actor, action, target, before, after)


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Callable[[Ctx], Awaitable[Any]]
    summary: str
    response: dict[str, Any] = field(default_factory=lambda: OBJ)
    body: dict[str, Any] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: int = 200
    project_scoped: bool = False  # maintainers of the {project} may call it

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")


# -- handlers -------------------------------------------------------------------------------------
async def list_users(c: Ctx) -> Any:
    return [p.as_dict() for p in await c.run(ident.list_principals, c.engine)]


async def create_user(c: Ctx) -> Any:
    b = c.body
    p = await c.run(ident.create_principal, c.engine, b["name"], b.get("kind", "user"), bool(b.get("is_admin")),
                    b.get("fullname", ""))
    await c.event("user.create", p.name, None, p.as_dict())
    return p.as_dict()


async def set_user_disabled(c: Ctx, disabled: bool) -> Any:
    before = await c.run(ident.get_principal, c.engine, c.path["name"])
    after = await c.run(ident.set_disabled, c.engine, c.path["name"], disabled)
    await c.event("user.disable" if disabled else "user.enable", after.name, before.as_dict(), after.as_dict())
    return after.as_dict()


async def disable_user(c: Ctx) -> Any:
    return await set_user_disabled(c, True)


async def enable_user(c: Ctx) -> Any:
    return await set_user_disabled(c, False)


async def list_tokens(c: Ctx) -> Any:
    return [t.as_dict() for t in await c.run(ident.list_tokens, c.engine, c.query.get("user"))]


async def create_token(c: Ctx) -> Any:
    b = c.body
    days = b.get("expires_days")
    token, info = await c.run(ident.create_token, c.engine, b["user"], b.get("name", "default"), b.get("role", "read"),
                              float(days) * 86400 if days else None)
    await c.event("token.create", f"{b['user']}/{info.id}", None, info.as_dict())
    return {**info.as_dict(), "token": token}


async def revoke_token(c: Ctx) -> Any:
    if not c.path["id"].isdigit():
        raise AdminError(400, "token id must be a number")
    await c.run(ident.revoke_token, c.engine, int(c.path["id"]))
    await c.event("token.revoke", c.path["id"])
    return {"revoked": int(c.path["id"])}


async def list_projects(c: Ctx) -> Any:
    return [p.as_dict() for p in await c.run(policy.list_projects, c.engine)]


async def create_project(c: Ctx) -> Any:
    b = c.body
    p = await c.run(policy.create_project, c.engine, b["name"], b.get("allow", []), b.get("deny", []),
                    b.get("pull_new", True))
    await c.event("project.create", p.name, None, p.as_dict())
    return p.as_dict()


async def set_policy(c: Ctx) -> Any:
    b = c.body
    before = await c.run(policy.get_project, c.engine, c.path["project"])
    after = await c.run(policy.set_policy, c.engine, c.path["project"], b.get("allow", []), b.get("deny", []),
                        b.get("pull_new", True))
    await c.event("project.policy", after.name, before.as_dict(), after.as_dict())
    return after.as_dict()


async def set_member(c: Ctx) -> Any:
    role = c.body["role"]
    await c.run(policy.set_member, c.engine, c.path["project"], c.path["user"], role)
    await c.event("project.member", f"{c.path['project']}/{c.path['user']}", None, {"role": role})
    return {"project": c.path["project"], "user": c.path["user"], "role": role}


async def remove_member(c: Ctx) -> Any:
    await c.run(policy.set_member, c.engine, c.path["project"], c.path["user"], None)
    await c.event("project.member", f"{c.path['project']}/{c.path['user']}", None, {"role": None})
    return {"project": c.path["project"], "user": c.path["user"], "role": None}


def _number(c: Ctx, name: str, default: float | None = None) -> float | None:
    value = c.query.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise AdminError(400, f"{name} must be a number") from None
    if number != number or abs(number) > 1e15:  # NaN, or beyond any time or count we store
        raise AdminError(400, f"{name} is out of range")
    return number


def _page(c: Ctx) -> tuple[int, int]:
    """The `limit` and `offset` query parameters, checked."""
    limit = int(_number(c, "limit", 100) or 100)
    offset = int(_number(c, "offset", 0) or 0)
    if not 0 < limit <= 10_000 or not 0 <= offset <= MAX_OFFSET:
        raise AdminError(400, f"limit must be 1..10000 and offset 0..{MAX_OFFSET}")
    return limit, offset


async def audit_downloads(c: Ctx) -> Any:
    limit, offset = _page(c)
    rows = await c.run(downloads.query, c.engine, since=_number(c, "since"), until=_number(c, "until"),
                       principal=c.query.get("user"), repo_id=c.query.get("repo"), limit=limit, offset=offset)
    fmt = c.query.get("format", "json")
    if fmt == "jsonl":
        return Response("".join(json.dumps(r) + "\n" for r in rows), media_type="application/x-ndjson")
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=downloads.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return Response(buf.getvalue(), media_type="text/csv")
    if fmt != "json":
        raise AdminError(400, "format must be json, jsonl or csv")
    return rows


async def project_audit(c: Ctx) -> Any:
    """A project's own download events (maintainers see their project, nothing else)."""
    limit, offset = _page(c)
    await c.run(policy.get_project, c.engine, c.path["project"])
    return await c.run(downloads.query, c.engine, since=_number(c, "since"), until=_number(c, "until"),
                       project=c.path["project"], limit=limit, offset=offset)


async def audit_admin_events(c: Ctx) -> Any:
    limit, offset = _page(c)
    return await c.run(admin_audit.query, c.engine, since=_number(c, "since"), actor=c.query.get("actor"),
                       limit=limit, offset=offset)


async def cache_list(c: Ctx) -> Any:
    return [r.as_dict() for r in await c.run(manage.list_cached, c.engine)]


def _repo(c: Ctx) -> tuple[str, str, str | None]:
    return c.body.get("repo_type", "model"), c.body["repo_id"], c.body.get("revision")


async def cache_pin(c: Ctx) -> Any:
    rt, rid, rev = _repo(c)
    commit = await c.run(manage.pin, c.engine, rt, rid, rev or "main")
    await c.event("cache.pin", f"{rt}:{rid}@{commit}")
    return {"pinned": commit}


async def cache_unpin(c: Ctx) -> Any:
    rt, rid, rev = _repo(c)
    n = await c.run(manage.unpin, c.engine, rt, rid, rev)
    await c.event("cache.unpin", f"{rt}:{rid}@{rev or '*'}")
    return {"unpinned": n}


async def cache_purge(c: Ctx) -> Any:
    rt, rid, rev = _repo(c)
    count, size = await c.run(manage.purge, c.engine, c.api.store, rt, rid, rev)
    await c.event("cache.purge", f"{rt}:{rid}@{rev or '*'}", None, {"blobs": count, "bytes": size})
    return {"blobs": count, "bytes": size}


async def cache_verify(c: Ctx) -> Any:
    report = await c.run(manage.verify, c.engine, c.api.store)
    await c.event("cache.verify", "store", None, report.as_dict())
    return report.as_dict()


USER_BODY = {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
    "name": STR, "kind": {"type": "string", "enum": ["user", "service"]}, "is_admin": {"type": "boolean"},
    "fullname": STR}}
TOKEN_BODY = {"type": "object", "required": ["user"], "additionalProperties": False, "properties": {
    "user": STR, "name": STR, "role": {"type": "string", "enum": ["read", "write"]},
    "expires_days": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 36500}}}
POLICY_PROPS = {"allow": STR_LIST, "deny": STR_LIST, "pull_new": {"type": "boolean"}}
PROJECT_BODY = {"type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {"name": STR, **POLICY_PROPS}}
POLICY_BODY = {"type": "object", "additionalProperties": False, "properties": POLICY_PROPS}
MEMBER_BODY = {"type": "object", "required": ["role"], "additionalProperties": False, "properties": {
    "role": {"type": "string", "enum": ["viewer", "developer", "maintainer"]}}}
AUDIT_QUERY = {"since": {"type": "number"}, "until": {"type": "number"}, "user": STR, "repo": STR,
               "limit": {"type": "integer", "minimum": 1, "maximum": 10000},
               "offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
               "format": {"type": "string", "enum": ["json", "jsonl", "csv"]}}

ENDPOINTS = [
    Endpoint("GET", "/users", list_users, "List users and service accounts", LIST),
    Endpoint("POST", "/users", create_user, "Create a user or service account", OBJ, USER_BODY, status=201),
    Endpoint("POST", "/users/{name}/disable", disable_user, "Disable an account (its tokens stop working)"),
    Endpoint("POST", "/users/{name}/enable", enable_user, "Enable an account again"),
    Endpoint("GET", "/tokens", list_tokens, "List tokens (never their values)", LIST, query={"user": STR}),
    Endpoint("POST", "/tokens", create_token, "Create a token; the value is returned once", OBJ, TOKEN_BODY, status=201),
    Endpoint("DELETE", "/tokens/{id}", revoke_token, "Revoke a token"),
    Endpoint("GET", "/projects", list_projects, "List projects and their policies", LIST),
    Endpoint("POST", "/projects", create_project, "Create a project with an upstream policy", OBJ, PROJECT_BODY,
             status=201),
    Endpoint("PUT", "/projects/{project}/policy", set_policy, "Replace a project's upstream policy", OBJ,
             POLICY_BODY, project_scoped=True),
    Endpoint("PUT", "/projects/{project}/members/{user}", set_member, "Add a member or change its role", OBJ,
             MEMBER_BODY, project_scoped=True),
    Endpoint("DELETE", "/projects/{project}/members/{user}", remove_member, "Remove a member", project_scoped=True),
    Endpoint("GET", "/audit/downloads", audit_downloads, "Download events, newest first (json, jsonl or csv)",
             LIST, query=AUDIT_QUERY),
    Endpoint("GET", "/projects/{project}/audit", project_audit, "A project's download events", LIST,
             query={k: AUDIT_QUERY[k] for k in ("since", "until", "limit", "offset")}, project_scoped=True),
    Endpoint("GET", "/audit/admin", audit_admin_events, "Admin events, newest first", LIST,
             query={"since": {"type": "number"}, "actor": STR, "limit": AUDIT_QUERY["limit"],
                    "offset": AUDIT_QUERY["offset"]}),
    Endpoint("GET", "/cache", cache_list, "Cached repo revisions with sizes, hits and pins", LIST),
    Endpoint("POST", "/cache/pin", cache_pin, "Pin a repo revision (keep it from eviction)", OBJ, REPO_BODY),
    Endpoint("POST", "/cache/unpin", cache_unpin, "Unpin a repo (one revision, or all)", OBJ, REPO_BODY),
    Endpoint("POST", "/cache/purge", cache_purge, "Forget a repo (or a revision) and delete unused blobs", OBJ,
             REPO_BODY),
    Endpoint("POST", "/cache/verify", cache_verify, "Re-hash every blob; quarantine mismatches"),
]


def _check(value: Any, schema: dict[str, Any], where: str) -> None:
    """The subset of JSON Schema the table uses: type, enum, required, properties, items, bounds."""
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    expected = schema.get("type")
    if expected and (not isinstance(value, kinds[expected]) or (expected in ("integer", "number")
                                                               and isinstance(value, bool))):
        raise AdminError(400, f"{where} must be a {expected}")
    if "enum" in schema and value not in schema["enum"]:
        raise AdminError(400, f"{where} must be one of {', '.join(map(str, schema['enum']))}")
    if expected == "string" and not value:
        raise AdminError(400, f"{where} must not be empty")
    if expected in ("number", "integer"):
        low = schema.get("minimum")
        if low is not None and (value < low or (schema.get("exclusiveMinimum") and value == low)):
            raise AdminError(400, f"{where} must be above {low}")
        if "maximum" in schema and value > schema["maximum"]:
            raise AdminError(400, f"{where} must be at most {schema['maximum']}")
    if expected == "object":
        for name in schema.get("required", []):
            if name not in value:
                raise AdminError(400, f"{where}.{name} is required")
        props = schema.get("properties", {})
        for name, item in value.items():
            if name not in props:
                raise AdminError(400, f"{where}.{name} is not a known field")
            _check(item, props[name], f"{where}.{name}")
    if expected == "array":
        for i, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{where}[{i}]")


class AdminApi:
    """Dispatches ``/admin/api/v1/...``."""

    def __init__(self, engine: Engine, store: BlobStore, auth: Authenticator) -> None:
        self.engine = engine
        self.store = store
        self.auth = auth

    async def __call__(self, request: Request) -> Response:
        path = request.url.path[len(PREFIX):] if request.url.path.startswith(PREFIX) else None
        if path in ("/openapi.json", "/docs") and request.method in ("GET", "HEAD"):
            spec = openapi()
            return JSONResponse(spec) if path == "/openapi.json" else HTMLResponse(docs_page(spec))
        try:
            if path is None:
                raise AdminError(404, "not found")
            endpoint, params = self._route(request.method, path)
            who = await self._admin_or_maintainer(request, endpoint, params)
            body: dict[str, Any] = {}
            if endpoint.body is not None:
                try:
                    body = json.loads(await request.body() or b"{}")
                except ValueError:
                    raise AdminError(400, "the body must be JSON") from None
                _check(body, endpoint.body, "body")
            query = dict(request.query_params)
            for name, value in query.items():
                if name not in endpoint.query:
                    raise AdminError(400, f"unknown query parameter {name!r}")
                if "enum" in endpoint.query[name] and value not in endpoint.query[name]["enum"]:
                    raise AdminError(400, f"{name} must be one of {', '.join(endpoint.query[name]['enum'])}")
            result = await endpoint.handler(Ctx(request, params, query, body, who, self))
        except AdminError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        if isinstance(result, Response):
            return result
        return JSONResponse(result, status_code=endpoint.status)

    def _route(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]]:
        allowed = False
        for endpoint in ENDPOINTS:
            m = endpoint.pattern.match(path)
            if m:
                if endpoint.method == method:
                    return endpoint, m.groupdict()
                allowed = True
        raise AdminError(405 if allowed else 404, "method not allowed" if allowed else "not found")

    async def _admin_or_maintainer(self, request: Request, endpoint: Endpoint, params: dict[str, str]
                                   ) -> Authenticated:
        header = request.headers.get("authorization", "")
        who = await self.auth.authenticate(header[7:].strip()) if header[:7].lower() == "bearer " else None
        if who is None:
            raise AdminError(401, "a valid hubproxy token is required")
        if who.principal.is_admin:
            return who
        if endpoint.project_scoped:
            roles = await asyncio.to_thread(policy.memberships, self.engine, who.principal.id)
            if any(p.name == params.get("project") and role == "maintainer" for p, role in roles):
                return who
        raise AdminError(403, "only admins (or the project's maintainers) may do this")


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the admin API, from ``ENDPOINTS``."""
    paths: dict[str, Any] = {}
    error = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": STR}}}}}
    for e in ENDPOINTS:
        op: dict[str, Any] = {
            "summary": e.summary, "operationId": f"{e.method.lower()}{re.sub(r'[^a-zA-Z]', '_', e.path)}",
            "security": [{"bearer": []}],
            "responses": {str(e.status): {"description": "ok", "content": {"application/json": {"schema": e.response}}},
                          "400": error, "401": error, "403": error, "404": error, "409": error},
            "parameters": [{"name": n, "in": "path", "required": True, "schema": STR}
                           for n in re.findall(r"\{(\w+)\}", e.path)]
                          + [{"name": n, "in": "query", "required": False, "schema": s} for n, s in e.query.items()],
        }
        if e.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": e.body}}}
        paths.setdefault(PREFIX + e.path, {})[e.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "hubproxy admin API", "version": __version__,
                 "description": "Users, tokens, projects, policies, audit and cache of a hubproxy. "
                                "Send `Authorization: Bearer <admin token>`."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


def docs_page(spec: dict[str, Any]) -> str:
    """A browsable page of the API (self-contained: no scripts, no external assets)."""
    rows = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            params = ", ".join(f"{p['name']} ({p['in']})" for p in op.get("parameters", [])) or "-"
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            rows.append(f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op['summary'])}</td><td>{html.escape(params)}</td>"
                        f"<td><pre>{html.escape(json.dumps(body, indent=1)) if body else '-'}</pre></td></tr>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{spec['info']['title']}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border-bottom:1px solid #ddd;padding:.4em;"
            "vertical-align:top;text-align:left}pre{margin:0;font-size:.8em}</style></head><body>"
            f"<h1>{spec['info']['title']} {spec['info']['version']}</h1><p>{html.escape(spec['info']['description'])}"
            f" The machine-readable document is <a href='openapi.json'>openapi.json</a>.</p>"
            "<table><tr><th>method</th><th>path</th><th>what</th><th>parameters</th><th>body</th></tr>"
            + "".join(rows) + "</table></body></html>")
