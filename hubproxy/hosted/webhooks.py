"""Webhooks on hosted repos: the management API ``huggingface_hub`` calls (``/api/settings/webhooks``) and
the payloads (``docs/protocol.md``, "Webhooks").

A webhook watches repos (by id) or namespaces (``user``/``org``) and receives, for every change to a
hosted repo it watches, the Hub's version-3 payload: ``repo`` create/delete/move, ``repo.content`` updates
with the refs that moved, ``repo.config`` updates. Payloads are made from the write audit
(``audit_writes``), so nothing that did not happen is announced and nothing that did is missed; delivery
is ``delivery.py``'s job. A webhook only ever tells its owner about repos its owner may read.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response

from hubproxy.auth.identity import Authenticated
from hubproxy.db.models import webhooks
from hubproxy.hosted.common import forbidden, json_body
from hubproxy.hub.errors import HubError, bad_request
from hubproxy.hub.metadata_routes import json_response
from hubproxy.hub.routing import RESOLVE_PREFIX

WATCH_TYPES = ("model", "dataset", "space", "user", "org")
DOMAINS = ("repo", "discussion")
MAX_WEBHOOKS_PER_OWNER = 100


def _row(r: Any) -> dict[str, Any]:
    return {"id": r.id, "url": r.url, "watched": json.loads(r.watched), "domains": json.loads(r.domains),
            "secret": r.secret, "disabled": bool(r.disabled), "owner": r.owner, "created_at": r.created_at}


def _shown(hook: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hook.items() if k not in ("owner", "created_at")}


def _validated(body: dict[str, Any]) -> dict[str, Any]:
    watched, domains, url = body.get("watched"), body.get("domains"), body.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise bad_request("url must be an http(s) URL (hubproxy runs no jobs)")
    if not isinstance(watched, list) or not watched or len(watched) > 100 or not all(
            isinstance(w, dict) and w.get("type") in WATCH_TYPES and isinstance(w.get("name"), str) and w["name"]
            for w in watched):
        raise bad_request(f"watched must list {{type, name}} items; type is one of {', '.join(WATCH_TYPES)}")
    if not isinstance(domains, list) or not set(domains) <= set(DOMAINS):
        raise bad_request("domains must be a list of 'repo' and 'discussion'")
    secret = body.get("secret")
    if secret is not None and (not isinstance(secret, str) or not secret.isascii() or len(secret) > 256):
        raise bad_request("secret must be ASCII text")
    return {"url": url, "watched": [{"type": w["type"], "name": w["name"]} for w in watched],
            "domains": list(dict.fromkeys(domains)) or ["repo"], "secret": secret}


class Webhooks:
    """The webhooks table and ``/api/settings/webhooks``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def enabled(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(select(webhooks).where(webhooks.c.disabled.is_(False)))]

    async def _owned(self, who: Authenticated, hook_id: str) -> dict[str, Any]:
        def load() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(select(webhooks).where(webhooks.c.id == hook_id)).first()

        row = await asyncio.to_thread(load)
        if row is None or (row.owner != who.principal.name and not who.principal.is_admin):
            raise HubError(404, None, "Webhook not found")
        return _row(row)

    async def handle(self, request: Request, rest: str, who: Authenticated) -> Response:
        parts = [p for p in rest.split("/") if p]
        method = request.method
        if not parts:
            if method == "GET":
                return json_response([_shown(h) for h in await self._list(who)])
            if method == "POST":
                return json_response({"webhook": _shown(await self._create(who, await json_body(request)))})
        elif len(parts) <= 2:
            hook = await self._owned(who, parts[0])
            verb = parts[1] if len(parts) == 2 else ""
            if method == "GET" and not verb:
                return json_response({"webhook": _shown(hook)})
            if who.role == "read":
                raise forbidden("A read token cannot change webhooks")
            if method == "DELETE" and not verb:
                await asyncio.to_thread(self._write, delete(webhooks).where(webhooks.c.id == hook["id"]))
                return json_response({})
            if method == "POST" and verb in ("", "enable", "disable"):
                changes = _validated({**_shown(hook), **await json_body(request)}) if not verb else \
                    {"disabled": verb == "disable"}
                values = {k: json.dumps(v) if k in ("watched", "domains") else v for k, v in changes.items()}
                await asyncio.to_thread(self._write, update(webhooks).where(webhooks.c.id == hook["id"]).values(**values))
                return json_response({"webhook": _shown(await self._owned(who, hook["id"]))})
        raise HubError(405 if len(parts) <= 2 else 404, None, "Not found")

    def _write(self, statement: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(statement)

    async def _list(self, who: Authenticated) -> list[dict[str, Any]]:
        def load() -> list[dict[str, Any]]:
            with self.engine.connect() as conn:
                query = select(webhooks).order_by(webhooks.c.created_at)
                if not who.principal.is_admin:
                    query = query.where(webhooks.c.owner == who.principal.name)
                return [_row(r) for r in conn.execute(query)]

        return await asyncio.to_thread(load)

    async def _create(self, who: Authenticated, body: dict[str, Any]) -> dict[str, Any]:
        if who.role == "read":
            raise forbidden("A read token cannot create webhooks")
        hook = _validated(body)
        if len(await self._list(who)) >= MAX_WEBHOOKS_PER_OWNER:
            raise HubError(409, None, f"At most {MAX_WEBHOOKS_PER_OWNER} webhooks per user")
        hook_id = secrets.token_hex(12)
        await asyncio.to_thread(self._write, insert(webhooks).values(
            id=hook_id, owner=who.principal.name, url=hook["url"], secret=hook["secret"],
            watched=json.dumps(hook["watched"]), domains=json.dumps(hook["domains"]), disabled=False,
            created_at=time.time()))
        return await self._owned(who, hook_id)


def watches(hook: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether a webhook watches the repo of an event made after it (by the repo's id, or its namespace)."""
    repo_type, repo_id = event["repo_type"], event["repo_id"]
    namespace = repo_id.split("/")[0].lower()
    return "repo" in hook["domains"] and event["ts"] >= hook["created_at"] and any(
        (w["type"] == repo_type and w["name"].lower() == repo_id.lower())
        or (w["type"] in ("user", "org") and w["name"].lower() == namespace) for w in hook["watched"])


def payload(event: dict[str, Any], hook: dict[str, Any], base: str, private: bool, head: str | None) -> dict[str, Any]:
    """The Hub's version-3 webhook payload for one write event."""
    action, repo_type = event["action"], event["repo_type"]
    detail = event.get("detail") or {}
    name = detail.get("from", event["repo_id"]) if action == "repo.move" else event["repo_id"]
    repo = {"type": repo_type, "name": name, "id": f"{repo_type}:{name}", "private": private,
            "owner": {"id": name.split("/")[0]}, "headSha": head, "head_sha": head,
            "url": {"web": f"{base}/{RESOLVE_PREFIX[repo_type]}{name}", "api": f"{base}/api/{repo_type}s/{name}"}}
    out: dict[str, Any] = {"repo": repo, "webhook": {"id": hook["id"], "version": 3}}
    if action in ("repo.create", "repo.delete"):
        out["event"] = {"action": action.split(".")[1], "scope": "repo"}
    elif action == "repo.move":
        out["event"] = {"action": "move", "scope": "repo"}
        out["movedTo"] = {"name": event["repo_id"], "owner": {"id": event["repo_id"].split("/")[0]}}
    elif action == "repo.settings":
        after = detail.get("after") or {}
        out["event"] = {"action": "update", "scope": "repo.config"}
        out["updatedConfig"] = {"private": after.get("visibility") != "public"}
    else:
        prefix = "refs/tags/" if action.startswith("tag.") else "refs/heads/"
        out["event"] = {"action": "update", "scope": "repo.content"}
        out["updatedRefs"] = [{"ref": prefix + (event.get("ref") or "main"), "oldSha": event.get("old_commit"),
                               "newSha": event.get("new_commit")}]
    return out
