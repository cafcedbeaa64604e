"""The Hub routes of hosted repos: reads through the shared renderer, and the write API.

``HubApi`` asks ``find`` first for every repo route: an id in a hosted namespace is answered here and
never looked up upstream. Reads go through the same metadata routes and resolver as mirrored repos,
with ``HostedSource`` behind them. Writes check the caller's rights (``access.py``): a repo the caller
may not see answers exactly like a missing one; a visible repo the caller may not change answers 403
without an error code, as the Hub does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hubproxy.auth.identity import Authenticated
from hubproxy.config import Settings
from hubproxy.hosted.access import VISIBILITIES, Namespaces
from hubproxy.hosted.card import CardError, card_data
from hubproxy.hosted.commits import HostedCommits
from hubproxy.hosted.common import PRS_DISABLED, Target, audit_of, forbidden, json_body
from hubproxy.hosted.lfs import LfsTransfers
from hubproxy.hosted.lifecycle import Lifecycle, check_ref_name
from hubproxy.hosted.listing import HostedListing
from hubproxy.hosted.rows import find_repo
from hubproxy.hosted.source import HostedSource, missing_blob
from hubproxy.hosted.webhooks import Webhooks
from hubproxy.hub.errors import HubError, bad_request, repo_not_found
from hubproxy.hub.metadata_routes import MetadataRoutes, json_response
from hubproxy.hub.resolve import Resolver
from hubproxy.hub.routing import REPO_TYPES, RESOLVE_PREFIX, Route, RouteKind, parse_bool, validate_repo_id
from hubproxy.hub.serving import BodyResponse
from hubproxy.repos.model import Entry, RepoRef
from hubproxy.xet.cas import PATH as XET_PATH
from hubproxy.xet.cas import XetCas
from hubproxy.xet.tokens import VALIDITY as XET_TOKEN_VALIDITY
from hubproxy.xet.tokens import XetGrant
from hubproxy.xet.tokens import issue as issue_xet_token


class HostedApi:
    """Hosted repos: which ids are hosted, their reads, and the repo lifecycle routes."""

    def __init__(self, settings: Settings, namespaces: Namespaces, source: HostedSource, lifecycle: Lifecycle,
                 commits: HostedCommits, lfs: LfsTransfers, client_ip: Callable[[Request], str | None],
                 xet: XetCas | None = None) -> None:
        self.settings = settings
        self.xet = xet
        self.commits = commits
        self.lfs = lfs
        self.namespaces = namespaces
        self.source = source
        self.lifecycle = lifecycle
        self.client_ip = client_ip
        self.routes = MetadataRoutes(settings, source)
        self.listing = HostedListing(namespaces, source)
        self.webhooks = Webhooks(source.engine)
        self.resolver = Resolver(settings, source, source.cache)

    # -- which ids are hosted -------------------------------------------------------------------
    async def find(self, repo_type: str, repo_id: str, who: Authenticated | None) -> Target | None:
        """The hosted target an id names, or None when its namespace is mirrored from the upstream."""
        if "/" not in repo_id:
            return None
        owner = await self.namespaces.owner(repo_id.split("/", 1)[0])
        if owner is None:
            return None
        repo = await self.source._read(lambda c: find_repo(c, repo_type, repo_id))
        rights = await self.namespaces.rights(who, owner, repo.visibility if repo else "private")
        return Target(owner, repo, rights)

    def visible(self, target: Target, who: Authenticated | None) -> Target:
        """The target if the caller may see its repo; otherwise what a missing repo answers."""
        if target.repo is None or not target.rights.read:
            raise repo_not_found(authenticated=who is not None)
        return target

    # -- reads ----------------------------------------------------------------------------------
    async def metadata(self, request: Request, route: Route, target: Target, who: Authenticated | None,
                       base: str) -> Response:
        self.visible(target, who)
        assert target.repo is not None
        if route.kind == RouteKind.XET_TOKEN and self.xet is not None:
            return await self._xet_token(request, route, target, who, base)
        return await self.routes.answer(request, replace(route, repo_id=target.repo.id), base)

    async def _xet_token(self, request: Request, route: Route, target: Target, who: Authenticated | None,
                         base: str) -> Response:
        """A short-lived token for hubproxy's Xet CAS, scoped to this repo and the caller's rights on it."""
        write = route.path == "xet-write-token"
        if write and (parse_bool(request.query_params.get("create_pr")) or route.revision == "None"):
            raise forbidden(PRS_DISABLED)
        if write and (who is None or not target.rights.write):
            raise forbidden("You don't have the rights to push to this repo")
        assert target.repo is not None
        expires = int(time.time()) + XET_TOKEN_VALIDITY
        grant = XetGrant(target.repo.type, target.repo.id, "write" if write else "read",
                         who.principal.name if who else "anonymous", expires)
        token = issue_xet_token(self.xet.secret, grant)  # type: ignore[union-attr]
        cas = f"{base}{XET_PATH}"
        return Response(json.dumps({"casUrl": cas, "accessToken": token, "exp": expires}).encode(),
                        media_type="application/json", headers={
                            "X-Xet-Cas-Url": cas, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(expires)})

    async def file(self, request: Request, route: Route, target: Target, who: Authenticated | None,
                   base: str = "") -> BodyResponse:
        self.visible(target, who)
        assert target.repo is not None
        refusal = missing_blob(f"{route.path} of {target.repo.id}")  # never fetched from anywhere else
        repo, xet = target.repo, self.xet

        async def announce(commit: str, entry: Entry) -> dict[str, str]:
            """A file held in Xet form is announced: Xet clients then download it through hubproxy's CAS."""
            xet_hash = (entry.extra or {}).get("xetHash") or await xet.hash_of(entry.blob or "")  # type: ignore[union-attr]
            if not xet_hash:
                return {}
            token_url = f"{base}/api/{repo.type}s/{repo.id}/xet-read-token/{commit}"  # type: ignore[union-attr]
            return {"X-Xet-Hash": xet_hash, "Link": f'<{token_url}>; rel="xet-auth"'}

        return await self.resolver.handle(request, replace(route, repo_id=repo.id), refusal,
                                          announce if xet is not None else None)

    # -- repo lifecycle: /api/repos/{create,delete,move} ------------------------------------------
    def repo_url(self, base: str, repo: RepoRef) -> str:
        return f"{base}/{RESOLVE_PREFIX[repo.type]}{repo.id}"

    async def repos(self, request: Request, route: Route, who: Authenticated, base: str) -> Response:
        verb = route.path
        if (verb, request.method) not in (("create", "POST"), ("delete", "DELETE"), ("move", "POST")):
            raise HubError(405 if verb in ("create", "delete", "move") else 404, None, "Not found")
        body = await json_body(request)
        audit = audit_of(who, self.client_ip(request))
        if verb == "move":
            return await self._move(body, who, audit)
        repo_type = _repo_type(body.get("type"))
        name, org = body.get("name"), body.get("organization") or who.principal.name
        if not isinstance(name, str) or not isinstance(org, str):
            raise bad_request("name (and organization, if given) must be strings")
        repo = RepoRef(repo_type, validate_repo_id([org, name]))
        target = await self.find(repo.type, repo.id, who)
        if verb == "delete":
            if target is None:
                raise repo_not_found(authenticated=True)
            self.visible(target, who)
            if not target.rights.manage:
                raise forbidden(f"You don't have the rights to delete {repo.id}")
            assert target.repo is not None
            await self.lifecycle.delete(target.repo, audit)
            return json_response({})
        return await self._create(repo, body, target, who, audit, base)

    async def _create(self, repo: RepoRef, body: dict[str, Any], target: Target | None, who: Authenticated,
                      audit: dict[str, Any], base: str) -> Response:
        if target is None:
            raise forbidden(f"{repo.id.split('/')[0]} is not a hosted namespace on this hubproxy (its repos are "
                            "mirrored from the upstream); ask an admin to assign it to your project")
        if target.repo is not None and target.rights.read:
            url = self.repo_url(base, RepoRef(repo.type, target.repo.id))
            message = f"You already created this {repo.type} repo"
            return Response(json.dumps({"error": message, "url": url}).encode(), status_code=409,
                            media_type="application/json", headers={"X-Error-Message": message})
        if not target.rights.write:
            raise forbidden(f"You don't have the rights to create repos in {repo.id.split('/')[0]}")
        await self.lifecycle.create(repo, _visibility(body, self.settings.hosted_default_visibility),
                                    who.principal.name, audit)
        return json_response({"url": self.repo_url(base, repo), "name": repo.id})

    async def _move(self, body: dict[str, Any], who: Authenticated, audit: dict[str, Any]) -> Response:
        repo_type = _repo_type(body.get("type"))
        old, new = body.get("fromRepo"), body.get("toRepo")
        if not (isinstance(old, str) and isinstance(new, str) and old.count("/") == 1 and new.count("/") == 1):
            raise bad_request("fromRepo and toRepo must be repo ids of the form namespace/name")
        old_id, new_id = validate_repo_id(old.split("/")), validate_repo_id(new.split("/"))
        source = await self.find(repo_type, old_id, who)
        if source is None:
            raise repo_not_found(authenticated=True)
        self.visible(source, who)
        assert source.repo is not None
        dest = await self.find(repo_type, new_id, who)
        if not source.rights.manage or dest is None or not dest.rights.write:
            raise forbidden(f"You don't have the rights to move {source.repo.id} to {new_id}")
        await self.lifecycle.move(source.repo, new_id, audit)
        return json_response({})

    # -- settings, branches, tags, squash --------------------------------------------------------
    async def settings_route(self, request: Request, target: Target, who: Authenticated) -> Response:
        if request.method != "PUT":
            raise HubError(405, None, f"Method {request.method} not allowed here")
        body = await json_body(request)
        if not target.rights.manage:
            raise forbidden("You don't have the rights to change this repo's settings")
        assert target.repo is not None
        changes: dict[str, Any] = {}
        if "private" in body or "visibility" in body:
            changes["visibility"] = _visibility(body, target.repo.visibility)
        if "gated" in body:
            gated = body["gated"]
            if gated not in ("auto", "manual", False, None):
                raise bad_request("gated must be 'auto', 'manual' or false")
            changes["gated"] = gated or None
        if changes:
            await self.lifecycle.settings(target.repo, changes, audit_of(who, self.client_ip(request)))
        return json_response({})

    async def refs_route(self, request: Request, route: Route, target: Target, who: Authenticated) -> Response:
        repo, audit = target.ref, audit_of(who, self.client_ip(request))
        name = route.revision or ""
        body = await json_body(request) if request.method == "POST" else {}
        if route.path == "branch" and request.method == "POST":
            if not target.rights.write:
                raise forbidden("You don't have the rights to create branches in this repo")
            start = body.get("startingPoint") or None
            commit = (await self.source.resolve(repo, start if isinstance(start, str) else None)).commit
            await self.lifecycle.create_ref(repo, "branch", check_ref_name(name, "branch"), commit, None, audit)
        elif route.path == "tag" and request.method == "POST":
            tag, message = body.get("tag"), body.get("message")
            if not isinstance(tag, str):
                raise bad_request("tag must be a string")
            if not target.rights.manage:
                raise forbidden("You don't have the rights to create tags in this repo")
            commit = (await self.source.resolve(repo, name or None)).commit
            await self.lifecycle.create_ref(repo, "tag", check_ref_name(tag, "tag"), commit,
                                            message if isinstance(message, str) else None, audit)
        elif route.path in ("branch", "tag") and request.method == "DELETE":
            if not target.rights.manage:
                raise forbidden(f"You don't have the rights to delete {route.path}es in this repo")
            await self.lifecycle.delete_ref(repo, route.path, name, audit)
        elif route.path == "super-squash" and request.method == "POST":
            if not target.rights.manage:
                raise forbidden("You don't have the rights to squash this repo's history")
            message = body.get("message") or f"Super-squash branch '{name or 'main'}'"
            await self.lifecycle.squash(repo, name or "main", str(message), who.principal.name, audit)
        else:
            raise HubError(405, None, f"Method {request.method} not allowed here")
        return json_response({})

    async def discussions(self, request: Request, target: Target) -> Response:
        """Pull requests and discussions are not supported: reading them shows none, opening one is refused."""
        if request.method == "GET":
            return json_response({"discussions": [], "count": 0, "start": 0, "numClosedDiscussions": 0})
        raise forbidden(PRS_DISABLED)

    async def auth_check(self, request: Request, route: Route, target: Target) -> Response:
        if route.revision == "write" and not target.rights.write:
            raise forbidden("You don't have write access to this repo")
        return json_response({})


def _repo_type(value: Any) -> str:
    if value in (None, "model"):
        return "model"
    if value in ("dataset", "space"):
        return str(value)
    if isinstance(value, str) and value in REPO_TYPES:
        return REPO_TYPES[value]
    raise bad_request(f"Unknown repo type: {str(value)[:30]!r}")


def _visibility(body: dict[str, Any], default: str) -> str:
    """The visibility a create or settings body asks for: ``visibility`` (2.x) or ``private`` (0.36)."""
    visibility = body.get("visibility")
    if visibility is not None:
        if visibility not in VISIBILITIES:
            raise bad_request(f"visibility must be one of {', '.join(VISIBILITIES)}")
        return str(visibility)
    private = body.get("private")
    if private is None:
        return default
    if not isinstance(private, bool):
        raise bad_request("private must be true or false")
    return "private" if private else "public"


def validate_yaml(body: dict[str, Any]) -> Response:
    """``POST /api/validate-yaml``: the README's front matter parses (anonymous; the answer is always JSON)."""
    content = body.get("content")
    if not isinstance(content, str):
        return Response(json.dumps({"errors": [{"message": "content must be a string"}], "warnings": []}).encode(),
                        status_code=400, media_type="application/json")
    try:
        card_data(content)
    except CardError as exc:
        return Response(json.dumps({"errors": [{"message": str(exc)}], "warnings": []}).encode(), status_code=400,
                        media_type="application/json")
    return json_response({"errors": [], "warnings": []})
