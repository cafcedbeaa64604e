"""Dispatch of the Hub surface: one parse of the path (``routing.classify``), then a table of handlers.

Every repo route takes the same steps in the same order, so a repo the caller may not see answers
exactly like one that does not exist, on every route:

1. the caller, from ``Authorization: Bearer`` (``caller``);
2. the repo's canonical id, from the upstream (``RepoNames``): policy, cache keys and audit use it;
3. the policy (``Gate``): hidden repos answer ``RepoNotFound``, pulls a policy forbids ``GatedRepo``;
4. the answer: a file (``Resolver``) or metadata (``MetadataRoutes``).

File downloads (GET on ``/resolve``) are recorded with their outcome from step 1 on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from hubproxy.audit.downloads import AuditLog
from hubproxy.auth.authenticator import Authenticator
from hubproxy.auth.gate import Gate, not_pullable
from hubproxy.auth.identity import Authenticated
from hubproxy.auth.policy import Grant
from hubproxy.config import trusted_networks
from hubproxy.hosted.api import HostedApi, validate_yaml
from hubproxy.hosted.common import Target, json_body
from hubproxy.hub.errors import HubError, repo_not_found
from hubproxy.hub.listing import Listing
from hubproxy.hub.metadata_routes import MetadataRoutes
from hubproxy.hub.names import RepoNames
from hubproxy.hub.origin import client_address, public_base
from hubproxy.hub.recorded import note_caller, recorded_download
from hubproxy.hub.resolve import Resolver
from hubproxy.hub.routing import Route, RouteKind
from hubproxy.hub.serving import BodyResponse
from hubproxy.store.base import StoreUnavailable

log = logging.getLogger(__name__)
Handler = Callable[[Request, Route], Awaitable[Response | BodyResponse]]


def as_hub_error(exc: BaseException) -> HubError:
    """The Hub-style answer to an error that is not already one (store, database, bug)."""
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, StoreUnavailable):
        log.warning("blob store error: %s", exc)
        return HubError(503, "StoreUnavailable", "hubproxy's blob store is unavailable; try again shortly",
                        {"Retry-After": "5"})
    if isinstance(exc, SQLAlchemyError):
        log.warning("database error: %s", exc.__class__.__name__)
        return HubError(503, "DatabaseUnavailable", "hubproxy's database is unavailable; try again shortly",
                        {"Retry-After": "5"})
    log.error("unexpected error", exc_info=exc)
    return HubError(500, "InternalError", "hubproxy failed to answer this request")


class HubApi:
    """The Hub-compatible routes."""

    def __init__(self, resolver: Resolver, routes: MetadataRoutes, listings: Listing, names: RepoNames,
                 public_url: str | None, path_prefix: str = "", auth: Authenticator | None = None,
                 anonymous_read: bool = True, audit: AuditLog | None = None, trusted_proxies: str = "",
                 gate: Gate | None = None, hosted: HostedApi | None = None) -> None:
        self.resolver = resolver
        self.routes = routes
        self.listings = listings
        self.names = names
        self.public_url = public_url
        self.path_prefix = path_prefix
        self.auth = auth
        self.anonymous_read = anonymous_read
        self.audit = audit
        self.trusted = trusted_networks(trusted_proxies)
        self.gate = gate
        self.hosted = hosted
        self.handlers: dict[RouteKind, Handler] = {
            RouteKind.RESOLVE: self.file, RouteKind.WHOAMI: self.whoami, RouteKind.LISTING: self.listing,
            RouteKind.HARNESSES: self.harnesses, RouteKind.TELEMETRY: self.telemetry,
            RouteKind.REPOS: self.repos, RouteKind.VALIDATE_YAML: self.validate_yaml, RouteKind.WRITE: self.write,
            RouteKind.LFS_BATCH: self.lfs_batch, RouteKind.LFS_TRANSFER: self.lfs_transfer,
            RouteKind.WEBHOOKS: self.webhooks, RouteKind.XET_CAS: self.xet_cas,
        }

    async def __call__(self, request: Request, route: Route) -> Response | BodyResponse:
        try:
            handler = self.handlers.get(route.kind, self.metadata)
            return await handler(request, route)
        except Exception as exc:  # noqa: BLE001 - every failure is answered the Hub's way
            return as_hub_error(exc).to_response()

    # -- repo routes ---------------------------------------------------------------------
    async def metadata(self, request: Request, route: Route) -> Response:
        who = await self.caller(request)
        target = await self.hosted_target(route, who)
        if target is not None:
            assert self.hosted is not None
            return await self.hosted.metadata(request, route, target, who, self.base_url(request))
        route, _ = await self.admit(route, who)
        return await self.routes.answer(request, route, self.base_url(request))

    async def hosted_target(self, route: Route, who: Authenticated | None) -> Target | None:
        """The hosted repo (or hosted namespace) a route names; None: the id is mirrored from the upstream."""
        if self.hosted is None:
            return None
        return await self.hosted.find(route.repo_type, route.repo_id, who)

    async def file(self, request: Request, route: Route) -> BodyResponse:
        if request.method not in ("GET", "HEAD"):
            raise HubError(405, None, f"Method {request.method} not allowed on resolve")
        if self.audit is not None:
            return await recorded_download(self.audit, request, route, client_address(request, self.trusted),
                                           lambda event: self._file(request, route, event), as_hub_error)
        return await self._file(request, route, None)

    async def _file(self, request: Request, route: Route, event: dict[str, Any] | None) -> BodyResponse:
        who = await self.caller(request)
        if event is not None:
            note_caller(event, who)
        target = await self.hosted_target(route, who)
        if target is not None:
            assert self.hosted is not None
            if event is not None:
                event.update(repo_id=target.repo.id if target.repo else route.repo_id, project=target.rights.project)
            return await self.hosted.file(request, route, target, who, self.base_url(request))
        route, grant = await self.admit(route, who, event)
        if event is not None:
            event.update(project=grant.project if grant else None)
        refusal = not_pullable(who, route.repo_type, route.repo_id) if grant is not None and not grant.pull else None
        return await self.resolver.handle(request, route, refusal)

    async def admit(self, route: Route, who: Authenticated | None,
                    event: dict[str, Any] | None = None) -> tuple[Route, Grant | None]:
        """The route with the repo's canonical id, and what the caller may do with it (or a refusal).

        ``event``: a download's audit record, which gets the canonical id before the policy decides.
        """
        canonical = await self.names.canonical(route.repo_type, route.repo_id, who is not None)
        route = replace(route, repo_id=canonical)
        if event is not None:
            event["repo_id"] = canonical
        grant = await self.gate.check(who, route.repo_type, canonical) if self.gate is not None else None
        return route, grant

    def base_url(self, request: Request) -> str:
        """hubproxy's own base URL as this client reaches it (for Link headers)."""
        base = public_base(request, self.public_url, self.trusted)
        return base if self.public_url else base + self.path_prefix

    # -- writes (hosted repos) ---------------------------------------------------------------------
    def _hosted(self) -> HostedApi:
        if self.hosted is None:
            raise HubError(404, None, "Not found")
        return self.hosted

    async def repos(self, request: Request, route: Route) -> Response:
        who = await self.caller(request)
        if who is None:  # anonymous: deleting names a repo it cannot see; creating needs an account
            raise repo_not_found(False) if route.path == "delete" else HubError(
                401, None, "Invalid credentials in Authorization header")
        return await self._hosted().repos(request, route, who, self.base_url(request))

    async def validate_yaml(self, request: Request, route: Route) -> Response:
        if request.method != "POST":
            raise HubError(405, None, f"Method {request.method} not allowed here")
        return validate_yaml(await json_body(request))

    async def write(self, request: Request, route: Route) -> Response:
        """A repo's write routes (and ``auth-check``, ``discussions``); mirrored repos are read-only."""
        who = await self.caller(request)
        target = await self.hosted_target(route, who)
        if target is None:
            await self.admit(route, who)  # hidden and missing repos answer as such
            if route.path == "auth-check" and route.revision != "write":
                return Response(b"{}", media_type="application/json")
            if route.path == "discussions" and request.method == "GET":
                return Response(b'{"discussions":[],"count":0,"start":0}', media_type="application/json")
            raise HubError(403, None, "This repo is mirrored from the upstream hub: it is read-only on hubproxy")
        hosted = self._hosted()
        hosted.visible(target, who)
        if route.path == "auth-check":
            return await hosted.auth_check(request, route, target)
        if route.path == "discussions":
            return await hosted.discussions(request, target)
        if who is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        if route.path == "preupload" and request.method == "POST":
            return await hosted.commits.preupload(request, route.revision, target)
        if route.path == "commit" and request.method == "POST":
            return await hosted.commits.commit(request, route.revision, target, who, self.base_url(request))
        if route.path == "settings":
            return await hosted.settings_route(request, target, who)
        return await hosted.refs_route(request, route, target, who)

    async def lfs_batch(self, request: Request, route: Route) -> Response:
        if request.method != "POST":
            raise HubError(405, None, f"Method {request.method} not allowed here")
        who = await self.caller(request)
        target = await self.hosted_target(route, who)
        if target is None:
            await self.admit(route, who)
            raise HubError(403, None, "This repo is mirrored from the upstream hub: it is read-only on hubproxy")
        hosted = self._hosted()
        hosted.visible(target, who)
        if who is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        if not target.rights.write:
            raise HubError(403, None, "You don't have the rights to push to this repo")
        return await hosted.lfs.batch(request, target.ref, who.principal.name, self.base_url(request))

    async def webhooks(self, request: Request, route: Route) -> Response:
        who = await self.caller(request, required=True)
        assert who is not None
        return await self._hosted().webhooks.handle(request, route.path, who)

    async def xet_cas(self, request: Request, route: Route) -> Response | BodyResponse:
        hosted = self._hosted()
        if hosted.xet is None:
            raise HubError(404, None, "Xet is off on this hubproxy")
        return await hosted.xet.handle(request, self.base_url(request))

    async def lfs_transfer(self, request: Request, route: Route) -> Response:
        return await self._hosted().lfs.transfer(request)

    # -- other routes -------------------------------------------------------------------------
    async def listing(self, request: Request, route: Route) -> Response:
        """Repo listings and search (GET), showing only what the caller may see."""
        if request.method not in ("GET", "HEAD"):
            raise HubError(405, None, f"Method {request.method} not allowed here")
        who = await self.caller(request)
        gate, hosted, base = self.gate, self.hosted, self.base_url(request)
        first: list[dict[str, Any]] = []
        if hosted is not None:
            first, link, only_hosted = await hosted.listing.page(request, route.repo_type, who, base)
            if link or only_hosted:
                return Response(json.dumps(first, separators=(",", ":")).encode(), media_type="application/json",
                                headers={"Link": link} if link else None)

        async def visible(t: str, repo_id: str) -> bool:
            if not repo_id or (hosted is not None and "/" in repo_id
                               and await hosted.namespaces.owner(repo_id.split("/")[0]) is not None):
                return False  # an upstream repo in a hosted namespace is never shown
            return gate is None or await gate.visible(who, t, repo_id)

        return await self.listings.handle(request, route.repo_type, base, visible, first)

    async def harnesses(self, request: Request, route: Route) -> Response:
        return Response(b'{"standardEnvVars":[],"harnesses":{}}', media_type="application/json")

    async def telemetry(self, request: Request, route: Route) -> Response:
        return Response(b"", status_code=200)

    async def caller(self, request: Request, *, required: bool = False) -> Authenticated | None:
        """The caller's identity from ``Authorization: Bearer``, or None for anonymous.

        An unknown, expired or revoked token is a 401 when anonymous access is off (or ``required``);
        with anonymous read on, such a caller is served as anonymous (a stale Hub token in a user's
        environment must not break the zero-setup experience).
        """
        header = request.headers.get("authorization", "")
        who = None
        if header[:7].lower() == "bearer " and self.auth is not None:
            who = await self.auth.authenticate(header[7:].strip())
            if who is None and (required or not self.anonymous_read):
                raise HubError(401, None, "Invalid credentials in Authorization header")
        if who is None and (required or not self.anonymous_read):
            if required:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            raise HubError(401, "RepoNotFound", "Repository not found")
        return who

    async def _orgs(self, who: Authenticated) -> list[dict[str, Any]]:
        """The hosted namespaces of the caller's projects, as the Hub lists a user's organizations."""
        if self.hosted is None:
            return []
        return [{"type": "org", "name": name, "fullname": project, "roleInOrg": role}
                for name, project, role in await self.hosted.namespaces.of_member(who)]

    async def whoami(self, request: Request, route: Route) -> Response:
        """hubproxy's own identities; never passed upstream."""
        who = await self.caller(request, required=True)
        assert who is not None
        p = who.principal
        body = {
            "type": "user", "id": str(p.id), "name": p.name, "fullname": p.fullname or p.name,
            "isPro": False, "canPay": False, "orgs": await self._orgs(who), "emailVerified": False,
            "auth": {"type": "access_token", "accessToken": {"displayName": who.token_name, "role": who.role}},
            "hubproxy": {"kind": p.kind, "admin": p.is_admin},
        }
        return Response(json.dumps(body).encode(), media_type="application/json")
