"""``GET /api/{models,datasets,spaces}``: repo listings and search, filtered by policy (``docs/protocol.md``,
"Metadata").

The upstream's listing is passed on with every repo the caller may not see removed (so a page may
hold fewer entries than asked for; its ``Link`` still leads to the next one). When the upstream
cannot answer, or hubproxy is offline, the repos hubproxy holds are listed instead.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hubproxy.hub.errors import HubError
from hubproxy.repos.index import RepoIndex
from hubproxy.upstream.answers import STALE_WARNING, from_upstream
from hubproxy.upstream.client import UpstreamClient, UpstreamUnavailable

#: Query parameters passed on to the upstream (the ones huggingface_hub's list_* functions send).
PASSED = frozenset({"search", "author", "filter", "sort", "direction", "limit", "full", "config", "cardData",
                    "expand", "cursor", "gated", "apps", "inference", "pipeline_tag", "library", "language",
                    "model_name", "dataset_name", "task_categories", "task_ids", "size_categories", "tags",
                    "trained_dataset", "emissions_thresholds", "fetch_config"})
LOCAL_LIMIT = 1000
#: Whether the caller may see a repo: (repo type, repo id) -> bool.
Visible = Callable[[str, str], Awaitable[bool]]


class Listing:
    """Answers listing requests."""

    def __init__(self, index: RepoIndex, upstream: UpstreamClient) -> None:
        self.index = index
        self.upstream = upstream

    async def handle(self, request: Request, repo_type: str, base_url: str, visible: Visible,
                     first: list[dict[str, Any]] | None = None) -> Response:
        """One page of the listing, with only the repos ``visible`` allows (after ``first``: hosted repos)."""
        first = first or []
        params = [(k, v) for k, v in request.query_params.multi_items() if k in PASSED or k.startswith("expand")]
        try:
            resp = await self.upstream.fetch("GET", f"/api/{repo_type}s", params=params)
        except UpstreamUnavailable:
            return await self._local(repo_type, dict(params), visible, first)
        if resp.status >= 500:
            return await self._local(repo_type, dict(params), visible, first)
        answer = from_upstream(resp)
        if answer.status != 200:
            return answer.to_response()
        try:
            items = answer.json()
        except ValueError:
            items = None
        if not isinstance(items, list):
            raise HubError(502, "UpstreamError", "the upstream's listing is not a JSON list")
        shown = [item for item in items if isinstance(item, dict) and await visible(repo_type, _id_of(item))]
        headers = {}
        link = resp.headers.get("Link")
        if link:
            headers["Link"] = link.replace(self.upstream.base, base_url)
        return Response(json.dumps(first + shown, separators=(",", ":")), media_type="application/json",
                        headers=headers)

    async def _local(self, repo_type: str, params: dict[str, str], visible: Visible,
                     first: list[dict[str, Any]]) -> Response:
        """The repos this hubproxy holds, for when the upstream cannot list."""
        search = params.get("search", "").lower()
        author = params.get("author", "")
        try:
            limit = max(1, min(int(params.get("limit") or LOCAL_LIMIT), LOCAL_LIMIT))
        except ValueError:
            raise HubError(400, "BadRequest", "limit must be a number") from None
        rows = await self.index.repos_holding_files(repo_type)
        items: list[dict[str, Any]] = list(first)
        hosted = {item["id"] for item in first}
        for repo_id, sha in rows:
            if repo_id in hosted:
                continue
            if search not in repo_id.lower() or (author and not repo_id.startswith(author + "/")):
                continue
            if not await visible(repo_type, repo_id):
                continue
            item: dict[str, Any] = {"id": repo_id, "private": False, "sha": sha}
            if repo_type == "model":
                item["modelId"] = repo_id
            items.append(item)
            if len(items) >= limit:
                break
        return Response(json.dumps(items, separators=(",", ":")), media_type="application/json",
                        headers={"X-HF-Warning": STALE_WARNING})


def _id_of(item: dict[str, Any]) -> str:
    value = item.get("id") or item.get("modelId") or ""
    return value if isinstance(value, str) else ""
