"""Dispatch of the Hub surface: parse the raw path, then call resolve or a metadata handler."""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from urllib.parse import parse_qsl

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from hubproxy.audit.downloads import AuditLog, DownloadEvent
from hubproxy.auth.authenticator import Authenticator
from hubproxy.auth.gate import Gate
from hubproxy.auth.identity import Authenticated
from hubproxy.config import trusted_networks
from hubproxy.hub.errors import HubError, bad_request
from hubproxy.hub.listing import Listing
from hubproxy.hub.metadata import Metadata
from hubproxy.hub.resolve import Resolver
from hubproxy.hub.routing import (
    REPO_TYPES,
    Route,
    parse_api,
    parse_bool,
    parse_resolve,
    split_raw_path,
    validate_repo_path,
)
from hubproxy.observability import metrics
from hubproxy.store.base import StoreUnavailable
from hubproxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

#: Query keys passed on to the upstream for repo info (M1).
INFO_QUERY_KEYS = {"blobs", "securityStatus", "expand", "expand[]", "files_metadata"}
COMMITS_QUERY_KEYS = {"p", "limit", "expand", "expand[]", "cursor"}
MAX_PATHS_INFO = 1000


def client_address(request: Request, trusted: list) -> str | None:  # noqa: ANN001
    """The caller's address: the peer, or the right-most untrusted hop of X-Forwarded-For behind trusted proxies."""
    peer = request.client.host if request.client else None

    def is_trusted(addr: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(addr or "")
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not trusted or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    return hops[0] if hops else peer


def public_base(request: Request, configured: str | None) -> str:
    """The base URL clients used (for Link headers): configured, or from the request."""
    if configured:
        return configured.rstrip("/")
    proto = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or request.url.netloc
    return f"{proto}://{host.split(',')[0].strip()}"


class HubApi:
    """The Hub-compatible routes."""

    def __init__(self, resolver: Resolver, metadata: Metadata, upstream: UpstreamClient, public_url: str | None,
                 path_prefix: str = "", auth: Authenticator | None = None, anonymous_read: bool = True,
                 audit: AuditLog | None = None, trusted_proxies: str = "", gate: Gate | None = None) -> None:
        self.audit = audit
        self.gate = gate
        self.trusted = trusted_networks(trusted_proxies)
        self.path_prefix = path_prefix
        self.auth = auth
        self.anonymous_read = anonymous_read
        self.resolver = resolver
        self.metadata = metadata
        self.upstream = upstream
        self.public_url = public_url
        self.listings = Listing(metadata.index.engine, upstream, metadata)

    async def __call__(self, request: Request) -> Response:
        try:
            return await self.dispatch(request)
        except HubError as exc:
            return exc.to_response()
        except StoreUnavailable as exc:
            log.warning("blob store error on %s %s: %s", request.method, request.url.path, exc)
            return HubError(503, "StoreUnavailable", "hubproxy's blob store is unavailable; try again shortly",
                            {"Retry-After": "5"}).to_response()
        except SQLAlchemyError as exc:
            log.warning("database error on %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
            return HubError(503, "DatabaseUnavailable", "hubproxy's database is unavailable; try again shortly",
                            {"Retry-After": "5"}).to_response()
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            return HubError(500, "InternalError", "hubproxy failed to answer this request").to_response()

    async def dispatch(self, request: Request):  # noqa: ANN201 - Response or BodyResponse
        segments = split_raw_path(request.scope.get("raw_path") or request.scope["path"].encode())
        method = request.method
        if segments and segments[0] == "api":
            rest = segments[1:]
            if rest == ["whoami-v2"]:
                return await self.whoami(request)
            if rest == ["agent-harnesses"]:
                return Response(b'{"standardEnvVars":[],"harnesses":{}}', media_type="application/json")
            if rest and rest[0] == "telemetry":
                return Response(b"", status_code=200)
            who = await self.caller(request)
            if rest and rest[0] in REPO_TYPES and rest[1:] in ([], [""]) and method == "GET":
                return await self.listing(request, REPO_TYPES[rest[0]], who)
            route = parse_api(rest)
            if self.gate is not None:
                await self.gate.check(who, route.repo_type, route.repo_id)
            return await self.api(request, route, method)
        who = await self.caller(request)
        route = parse_resolve(segments)
        if route is None:
            raise HubError(404, None, "Not found")
        if method not in ("GET", "HEAD"):
            raise HubError(405, None, f"Method {method} not allowed on resolve")
        project = None
        if self.gate is not None:
            project = (await self.gate.check(who, route.repo_type, route.repo_id)).project
        if method == "GET" and self.audit is not None:
            return await self._audited_download(request, route, who, project)
        return await self.resolver.handle(request, route)

    async def _audited_download(self, request: Request, route: Route, who: Authenticated | None,  # noqa: ANN202
                                project: str | None):
        """A download, recorded when it ends with the bytes really sent (aborted ones too)."""
        assert self.audit is not None
        audit = self.audit
        t0 = time.monotonic()
        base = {
            "ts": time.time(), "principal": who.principal.name if who else None,
            "token_id": who.token_id if who else None, "project": project,
            "client_ip": client_address(request, self.trusted), "user_agent": request.headers.get("user-agent", "")[:500],
            "repo_type": route.repo_type, "repo_id": route.repo_id, "revision": route.revision, "path": route.path,
            "range": request.headers.get("range"),
        }
        try:
            response = await self.resolver.handle(request, route)
        except HubError as exc:
            audit.record(DownloadEvent(**base, commit=exc.headers.get("X-Repo-Commit"), bytes_sent=0,
                                       status=exc.status, cache=None, duration=time.monotonic() - t0, complete=True))
            raise

        def done(sent: int, complete: bool) -> None:
            if sent:
                metrics.SERVED_BYTES.labels(response.source or "unknown").inc(sent)
            audit.record(DownloadEvent(**base, commit=response.headers.get("X-Repo-Commit"), bytes_sent=sent,
                                       status=response.status, cache=response.source,
                                       duration=time.monotonic() - t0, complete=complete))

        response.on_done = done
        return response

    def base_url(self, request: Request) -> str:
        """hubproxy's own base URL as this client reaches it (for Link headers)."""
        base = public_base(request, self.public_url)
        return base if self.public_url else base + self.path_prefix

    async def listing(self, request: Request, repo_type: str, who: Authenticated | None) -> Response:
        """Repo listings and search, showing only what the caller may see."""
        gate = self.gate

        async def visible(t: str, repo_id: str) -> bool:
            return bool(repo_id) and (gate is None or await gate.visible(who, t, repo_id))

        return await self.listings.handle(request, repo_type, self.base_url(request), visible)

    async def api(self, request: Request, route: Route, method: str) -> Response:
        base = self.base_url(request)
        md = self.metadata
        if route.kind == "xet-token":
            raise HubError(404, "XetNotSupported",
                           "hubproxy serves files over plain HTTP; Xet is not available here (set HF_HUB_DISABLE_XET=1 to upload)")
        if route.kind == "paths-info":
            if method != "POST":
                raise HubError(405, None, "paths-info takes POST")
            paths, expand = await self._paths_form(request)
            answer = await md.paths_info(route.repo_type, route.repo_id, route.revision or "main", paths, expand)
            return answer.to_response()
        if method not in ("GET", "HEAD"):
            raise HubError(405, None, f"Method {method} not allowed here")
        query = list(request.query_params.multi_items())
        if route.kind == "info":
            items = [(k, v) for k, v in query if k in INFO_QUERY_KEYS]
            return (await md.repo_info(route.repo_type, route.repo_id, route.revision, items)).to_response()
        if route.kind == "tree":
            params = request.query_params
            recursive = parse_bool(params.get("recursive"))
            expand = parse_bool(params.get("expand"))
            cursor_text = params.get("cursor") or "0"
            if not cursor_text.isdigit():
                raise bad_request(f"Invalid cursor: {cursor_text[:50]!r}")
            answer = await md.tree(route.repo_type, route.repo_id, route.revision or "main", route.path,
                                   recursive, expand, int(cursor_text), base)
            return answer.to_response()
        if route.kind == "refs":
            include_prs = parse_bool(request.query_params.get("include_prs"))
            return (await md.refs(route.repo_type, route.repo_id, include_prs)).to_response()
        if route.kind == "commits":
            items = [(k, v) for k, v in query if k in COMMITS_QUERY_KEYS]
            return (await md.commits(route.repo_type, route.repo_id, route.revision or "main", items, base)).to_response()
        raise HubError(501, "NotImplemented", f"hubproxy does not serve /{route.path} yet")

    async def _paths_form(self, request: Request) -> tuple[list[str], bool]:
        body = await request.body()
        ctype = request.headers.get("content-type", "")
        if "json" in ctype:
            try:
                data = json.loads(body or b"{}")
                paths = list(data.get("paths", []))
                expand = bool(data.get("expand", False))
            except (ValueError, AttributeError, TypeError):
                raise bad_request("paths-info body is not valid JSON") from None
        else:
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            paths = [v for k, v in pairs if k == "paths"]
            expand = parse_bool(next((v for k, v in pairs if k == "expand"), None))
        if len(paths) > MAX_PATHS_INFO:
            raise HubError(413, "TooManyPaths", f"At most {MAX_PATHS_INFO} paths per paths-info request")
        for p in paths:
            if not isinstance(p, str):
                raise bad_request("paths must be strings")
            validate_repo_path(p.strip("/").split("/"), "paths-info path")
        return [p.strip("/") for p in paths], expand

    async def caller(self, request: Request, *, required: bool = False) -> Authenticated | None:
        """The caller's identity from ``Authorization: Bearer``, or None for anonymous.

        An unknown, expired or revoked token is a 401 when anonymous access is off (or ``required``);
        with anonymous read on, such a caller is served as anonymous (a stale Hub token in a user's
        environment must not break the zero-setup experience).
        """
        header = request.headers.get("authorization", "")
        who = None
        if header[:7].lower() == "bearer ":
            who = await self.auth.authenticate(header[7:].strip())
            if who is None and (required or not self.anonymous_read):
                raise HubError(401, None, "Invalid credentials in Authorization header")
        if who is None and (required or not self.anonymous_read):
            if required:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            raise HubError(401, "RepoNotFound", "Repository not found")
        return who

    async def whoami(self, request: Request) -> Response:
        """hubproxy's own identities (M13); never passed upstream."""
        who = await self.caller(request, required=True)
        assert who is not None
        p = who.principal
        body = {
            "type": "user", "id": str(p.id), "name": p.name, "fullname": p.fullname or p.name,
            "isPro": False, "canPay": False, "orgs": [], "emailVerified": False,
            "auth": {"type": "access_token", "accessToken": {"displayName": who.token_name, "role": who.role}},
            "hubproxy": {"kind": p.kind, "admin": p.is_admin},
        }
        return Response(json.dumps(body).encode(), media_type="application/json")
