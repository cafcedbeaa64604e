"""The metadata routes of a repo: repo info, tree, paths-info, refs, commits (and the Xet token refusal).

Each parses its request, asks the repo's source (``repos/source.py``) and renders the answer with
``render.py``; an answer that stands in for an upstream that cannot answer carries ``X-HF-Warning``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from hubproxy.config import Settings
from hubproxy.hub import render
from hubproxy.hub.errors import HubError, bad_request
from hubproxy.hub.routing import Route, RouteKind, parse_bool, validate_repo_path
from hubproxy.limits import BodyTooLarge, read_body
from hubproxy.repos.model import RepoRef
from hubproxy.repos.source import RepoSource
from hubproxy.upstream.answers import STALE_WARNING, Answer

COMMITS_QUERY_KEYS = {"p", "limit", "expand", "expand[]", "cursor"}
MAX_PATHS_INFO = 1000
#: A paths-info body: 1,000 paths of up to 1,024 bytes each, percent-encoded.
MAX_PATHS_INFO_BODY = 4 * 1024 * 1024


def json_response(data: Any, stale: bool = False, headers: dict[str, str] | None = None) -> Response:
    extra = dict(headers or {})
    if stale:
        extra["X-HF-Warning"] = STALE_WARNING
    return Response(json.dumps(data, separators=(",", ":")).encode(), media_type="application/json", headers=extra)


def replay(answer: Answer) -> Response:
    """An upstream answer passed on as it came (``Link`` already pointing at hubproxy)."""
    headers = {k: v for k, v in answer.headers.items() if k != "Content-Type"}
    if answer.stale:
        headers["X-HF-Warning"] = STALE_WARNING
    return Response(answer.body, status_code=answer.status, headers=headers,
                    media_type=answer.headers.get("Content-Type", "application/json"))


class MetadataRoutes:
    """Answers the metadata routes of repos the caller may see (``route.repo_id`` is canonical)."""

    def __init__(self, settings: Settings, source: RepoSource) -> None:
        self.settings = settings
        self.source = source

    async def answer(self, request: Request, route: Route, base: str) -> Response:
        handler = {RouteKind.INFO: self.info, RouteKind.TREE: self.tree, RouteKind.PATHS_INFO: self.paths_info,
                   RouteKind.REFS: self.refs, RouteKind.COMMITS: self.commits}.get(route.kind)
        if route.kind == RouteKind.XET_TOKEN:
            raise HubError(404, "XetNotSupported", "hubproxy serves files over plain HTTP; Xet is not available "
                                                   "here (set HF_HUB_DISABLE_XET=1 to upload)")
        if handler is None:
            raise HubError(501, "NotImplemented", f"hubproxy does not serve /{route.path} yet")
        allowed = ("POST",) if route.kind == RouteKind.PATHS_INFO else ("GET", "HEAD")
        if request.method not in allowed:
            raise HubError(405, None, f"Method {request.method} not allowed here")
        return await handler(request, RepoRef(route.repo_type, route.repo_id), route, base)

    async def refs(self, request: Request, repo: RepoRef, route: Route, base: str) -> Response:
        known, stale = await self.source.refs(repo)
        return json_response(render.refs(known, parse_bool(request.query_params.get("include_prs"))), stale)

    async def commits(self, request: Request, repo: RepoRef, route: Route, base: str) -> Response:
        query = [(k, v) for k, v in request.query_params.multi_items() if k in COMMITS_QUERY_KEYS]
        return replay(await self.source.history(repo, route.revision or "main", query, base))

    async def info(self, request: Request, repo: RepoRef, route: Route, base: str) -> Response:
        revision = route.revision
        params = request.query_params
        blobs = parse_bool(params.get("blobs")) or parse_bool(params.get("files_metadata"))
        security = parse_bool(params.get("securityStatus"))
        expand = [v for k, v in params.multi_items() if k in ("expand", "expand[]")]
        resolved = await self.source.resolve(repo, revision)
        props = set(expand) - {"siblings", "sha", "id", "_id"} | ({"securityRepoStatus"} if security else set())
        info, stale = await self.source.info(repo, resolved.commit, props)
        listing = await self.source.listing(repo, resolved.commit, fetch=blobs or "siblings" in expand)
        body = render.repo_info(info, listing, blobs, expand, security)
        return json_response(body, resolved.stale or stale or (blobs and listing is None))

    async def tree(self, request: Request, repo: RepoRef, route: Route, base: str) -> Response:
        revision, folder = route.revision or "main", route.path
        params = request.query_params
        recursive, expand = parse_bool(params.get("recursive")), parse_bool(params.get("expand"))
        cursor_text = params.get("cursor") or "0"
        if not (cursor_text.isascii() and cursor_text.isdigit() and len(cursor_text) <= 12):
            raise bad_request(f"Invalid cursor: {cursor_text[:50]!r}")
        resolved = await self.source.resolve(repo, revision)
        shown, stale = await self.source.view(repo, resolved.commit, folder, recursive)
        if shown is None:
            message = f'{folder} does not exist on "{revision}"'
            raise HubError(404, "EntryNotFound", message, {"X-Repo-Commit": resolved.commit})
        if expand:
            shown, stale_fields = await self.source.expanded(repo, resolved.commit, folder, recursive, shown)
            stale = stale or stale_fields
        size = self.settings.tree_expand_page_size if expand else self.settings.tree_page_size
        page, link = render.tree_page(repo.type, repo.id, resolved.commit, folder, shown, recursive, expand,
                                      int(cursor_text), size, base)
        return json_response(page, resolved.stale or stale, {"Link": link} if link else None)

    async def paths_info(self, request: Request, repo: RepoRef, route: Route, base: str) -> Response:
        revision = route.revision or "main"
        paths, expand = await self._paths_form(request)
        resolved = await self.source.resolve(repo, revision)
        found, stale = await self.source.paths(repo, resolved.commit, paths, expand)
        return json_response([render.tree_entry(e, expand) for e in found], resolved.stale or stale)

    async def _paths_form(self, request: Request) -> tuple[list[str], bool]:
        try:
            body = await read_body(request, MAX_PATHS_INFO_BODY)
        except BodyTooLarge as exc:
            raise HubError(413, "PayloadTooLarge", str(exc)) from None
        if "json" in request.headers.get("content-type", ""):
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
