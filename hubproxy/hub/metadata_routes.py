"""The metadata routes of a repo: repo info, tree, paths-info, refs, commits (and the Xet token refusal)."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from hubproxy.hub.errors import HubError, bad_request
from hubproxy.hub.metadata import Metadata
from hubproxy.hub.routing import Route, parse_bool, validate_repo_path
from hubproxy.limits import BodyTooLarge, read_body

#: Query keys passed on to the upstream for repo info (M1).
INFO_QUERY_KEYS = {"blobs", "securityStatus", "expand", "expand[]", "files_metadata"}
COMMITS_QUERY_KEYS = {"p", "limit", "expand", "expand[]", "cursor"}
MAX_PATHS_INFO = 1000
#: A paths-info body: 1,000 paths of up to 1,024 bytes each, percent-encoded.
MAX_PATHS_INFO_BODY = 4 * 1024 * 1024


class MetadataRoutes:
    """Parses a metadata request's parameters and asks ``Metadata`` for the answer."""

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata

    async def answer(self, request: Request, route: Route, base: str) -> Response:
        """The answer to a metadata route of a repo the caller may see (``route.repo_id`` is canonical)."""
        method = request.method
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
            if not (cursor_text.isascii() and cursor_text.isdigit() and len(cursor_text) <= 12):
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
        try:
            body = await read_body(request, MAX_PATHS_INFO_BODY)
        except BodyTooLarge as exc:
            raise HubError(413, "PayloadTooLarge", str(exc)) from None
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
