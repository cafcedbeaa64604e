"""Hosted repos in ``GET /api/{models,datasets,spaces}``: search, author, filter, sort, expand, pages.

Hosted repos the caller may see come first, in pages of ``limit`` (``Link`` with ``hosted_offset``);
after the last of them the upstream's listing continues (without repos of hosted namespaces). A query
for an author that is a hosted namespace lists hosted repos only.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from hubproxy.auth.identity import Authenticated
from hubproxy.hosted import rows
from hubproxy.hosted.access import Namespaces
from hubproxy.hosted.source import HostedSource, iso
from hubproxy.hub.errors import bad_request
from hubproxy.repos import rows as repo_rows

DEFAULT_LIMIT = 1000
SORTS = {"lastModified": "lastModified", "last_modified": "lastModified", "createdAt": "createdAt",
         "created_at": "createdAt", "id": "id"}


class HostedListing:
    """Lists hosted repos as the Hub lists repos."""

    def __init__(self, namespaces: Namespaces, source: HostedSource) -> None:
        self.namespaces = namespaces
        self.source = source

    async def page(self, request: Request, repo_type: str, who: Authenticated | None,
                   base: str) -> tuple[list[dict[str, Any]], str | None, bool]:
        """Hosted repos for this request: the page, its ``Link`` if more hosted repos follow, and whether the
        listing ends with them (an author that is a hosted namespace)."""
        params = request.query_params
        author = params.get("author") or ""
        only_hosted = bool(author) and await self.namespaces.owner(author) is not None
        if params.get("cursor"):  # a page of the upstream's listing: hosted repos were listed before it
            return [], None, False
        try:
            offset = max(0, int(params.get("hosted_offset") or 0))
            limit = max(1, min(int(params.get("limit") or DEFAULT_LIMIT), DEFAULT_LIMIT))
        except ValueError:
            raise bad_request("limit and hosted_offset must be whole numbers") from None
        items = await self._matching(repo_type, params, who)
        shown = items[offset:offset + limit]
        link = None
        if offset + limit < len(items):
            query = urlencode([(k, v) for k, v in params.multi_items() if k != "hosted_offset"]
                              + [("hosted_offset", str(offset + limit))])
            link = f'<{base}/api/{repo_type}s?{query}>; rel="next"'
        return [_shaped(i, params) for i in shown], link, only_hosted

    async def _matching(self, repo_type: str, params: Any, who: Authenticated | None) -> list[dict[str, Any]]:
        search = (params.get("search") or "").lower()
        author = (params.get("author") or "").lower()
        filters = [f for f in params.getlist("filter") if f]
        found = await self.source._read(lambda c: [(r, _head_info(c, r)) for r in rows.list_repos(c, repo_type)])
        items = []
        for repo, (sha, info, last) in found:
            if search and search not in repo.id.lower() or author and not repo.id.lower().startswith(author + "/"):
                continue
            owner = await self.namespaces.owner(repo.id.split("/")[0])
            if owner is None or not (await self.namespaces.rights(who, owner, repo.visibility)).read:
                continue
            item = {"_id": f"{repo_type}:{repo.id}", "id": repo.id, "author": repo.id.split("/")[0], "sha": sha,
                    "lastModified": iso(last or repo.updated_at), "createdAt": iso(repo.created_at),
                    "private": repo.visibility != "public", "gated": repo.gated or False, "disabled": False,
                    "downloads": 0, "likes": 0, **info}
            tags = set(item.get("tags") or []) | {item.get("library_name"), item.get("pipeline_tag")}
            if all(f in tags for f in filters):
                items.append(item)
        key = SORTS.get(params.get("sort") or "id", "id")
        items.sort(key=lambda i: i.get(key) or "", reverse=key != "id")
        return items


def _head_info(conn: Any, repo: rows.HostedRepo) -> tuple[str | None, dict[str, Any], float | None]:
    ref = repo_rows.get_ref(conn, repo.type, repo.id, "main")
    if ref is None:
        return None, {}, None
    info = json.loads(repo_rows.get_commit_info(conn, repo.type, repo.id, ref.commit) or "{}")
    head = rows.commit_row(conn, repo.type, repo.id, ref.commit)
    return ref.commit, info, head.created_at if head else None


def _shaped(item: dict[str, Any], params: Any) -> dict[str, Any]:
    """An item as the query asks: ``expand`` keeps only what is named; ``cardData``/``full`` add the card."""
    if item.get("id") and item["_id"].startswith("model:"):
        item["modelId"] = item["id"]
    expand = params.getlist("expand") + params.getlist("expand[]")
    if expand:
        return {k: item[k] for k in ("_id", "id", *expand) if k in item}
    wanted = params.get("cardData") in ("true", "True", "1") or params.get("full") in ("true", "True", "1")
    return item if wanted else {k: v for k, v in item.items() if k != "cardData"}

