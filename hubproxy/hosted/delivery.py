"""Delivering webhooks: write events become deliveries, deliveries are POSTed, failures are retried.

A background loop in every process (``Runtime``) does three small transactions a round: it turns write
events after the shared cursor into deliveries for the webhooks that watch their repos (one per webhook
and event: a unique index makes replicas agree), claims due deliveries for a while (so two replicas never
send the same one at once), and records each answer. A delivery is retried with growing pauses until it
gets a 2xx or ``MAX_ATTEMPTS`` answers. Nothing here runs in a request's path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from hubproxy.auth.identity import Authenticated, get_principal
from hubproxy.background import wake_or_timeout
from hubproxy.db import upsert
from hubproxy.db.models import audit_writes, refs, webhook_cursor, webhook_deliveries
from hubproxy.errors import NotFound
from hubproxy.hosted import rows
from hubproxy.hosted.access import Namespaces
from hubproxy.hosted.webhooks import Webhooks, payload, watches

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8
CLAIM_SECONDS = 60.0
BATCH = 200


class WebhookDelivery:
    """The delivery loop of one process (``owner`` names it in claims)."""

    def __init__(self, engine: Engine, hooks: Webhooks, namespaces: Namespaces, base_url: str, owner: str,
                 interval: float = 1.0) -> None:
        self.engine = engine
        self.hooks = hooks
        self.namespaces = namespaces
        self.base_url = base_url
        self.owner = owner
        self.interval = interval
        self.wake = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0)) as client:
            while True:
                await wake_or_timeout(self.wake, self.interval)
                self.wake.clear()
                try:
                    await self.enqueue()
                    await self.deliver(client)
                except SQLAlchemyError as exc:
                    log.warning("webhook delivery: database error %s", exc.__class__.__name__)
                except Exception:  # noqa: BLE001 - a bug must not end deliveries for good
                    log.exception("webhook delivery round failed")

    # -- events -> deliveries ---------------------------------------------------------------------
    async def enqueue(self) -> None:
        events, hooks = await asyncio.to_thread(self._new_events)
        if not events:
            return
        made = []
        for event in events:
            for hook in hooks:
                if watches(hook, event) and await self._may_read(hook, event):
                    private, head = await asyncio.to_thread(self._repo_state, event)
                    body = payload(event, hook, self.base_url, private, head)
                    made.append({"webhook_id": hook["id"], "event_id": event["id"], "payload": json.dumps(body),
                                 "attempts": 0, "next_at": time.time(), "claimed_until": 0.0})
        await asyncio.to_thread(self._store, made, max(e["id"] for e in events))

    def start(self) -> None:
        """Before serving: on a database that never delivered, events start from now (not from history)."""
        with self.engine.begin() as conn:
            last = conn.execute(select(func.coalesce(func.max(audit_writes.c.id), 0))).scalar() or 0
            upsert(conn, webhook_cursor, {"name": "writes", "last_event": last}, update=False)

    def _new_events(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self.engine.connect() as conn:
            cursor = conn.execute(select(webhook_cursor.c.last_event).where(webhook_cursor.c.name == "writes")).scalar()
            found = conn.execute(select(audit_writes).where(audit_writes.c.id > cursor)
                                 .order_by(audit_writes.c.id).limit(BATCH)).all()
        events = [{**r._mapping, "detail": json.loads(r.detail) if r.detail else None} for r in found]
        return events, (self.hooks.enabled() if events else [])

    async def _may_read(self, hook: dict[str, Any], event: dict[str, Any]) -> bool:
        try:
            principal = await asyncio.to_thread(get_principal, self.engine, hook["owner"])
        except NotFound:
            return False
        if principal.disabled:
            return False
        owner = await self.namespaces.owner(event["repo_id"].split("/")[0])
        if owner is None:
            return False
        visibility = await asyncio.to_thread(self._visibility, event)
        who = Authenticated(principal, 0, "webhook", "read")
        return (await self.namespaces.rights(who, owner, visibility)).read

    def _visibility(self, event: dict[str, Any]) -> str:
        with self.engine.connect() as conn:
            repo = rows.find_repo(conn, event["repo_type"], event["repo_id"])
        return repo.visibility if repo is not None else "private"

    def _repo_state(self, event: dict[str, Any]) -> tuple[bool, str | None]:
        with self.engine.connect() as conn:
            repo = rows.find_repo(conn, event["repo_type"], event["repo_id"])
            head = conn.execute(select(refs.c.commit).where(
                refs.c.repo_type == event["repo_type"], refs.c.repo_id == event["repo_id"],
                refs.c.name == "main")).scalar() if repo is not None else None
        return (repo is None or repo.visibility != "public"), head

    def _store(self, made: list[dict[str, Any]], last: int) -> None:
        with self.engine.begin() as conn:
            if made:
                upsert(conn, webhook_deliveries, made, update=False)
            conn.execute(update(webhook_cursor).where(webhook_cursor.c.name == "writes",
                                                      webhook_cursor.c.last_event < last).values(last_event=last))

    # -- deliveries -> POSTs ----------------------------------------------------------------------
    async def deliver(self, client: aiohttp.ClientSession) -> None:
        due = await asyncio.to_thread(self._claim)
        if not due:
            return
        secrets_by_hook = {h["id"]: h for h in await asyncio.to_thread(self.hooks.enabled)}
        for delivery_id, hook_id, body, attempts in due:
            hook = secrets_by_hook.get(hook_id)
            if hook is None:  # disabled or deleted meanwhile
                await asyncio.to_thread(self._record, delivery_id, attempts, None, "webhook disabled or deleted",
                                        final=True)
                continue
            headers = {"Content-Type": "application/json"}
            if hook["secret"]:
                headers["X-Webhook-Secret"] = hook["secret"]
            try:
                async with client.post(hook["url"], data=body.encode(), headers=headers) as resp:
                    ok = 200 <= resp.status < 300
                    status, error = resp.status, None if ok else (await resp.text(errors="replace"))[:500]
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status, error = None, f"{exc.__class__.__name__}: {exc}"[:500]
            await asyncio.to_thread(self._record, delivery_id, attempts + 1, status, error)

    def _claim(self) -> list[tuple[int, str, str, int]]:
        now = time.time()
        with self.engine.begin() as conn:
            ids = [r[0] for r in conn.execute(select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.delivered_at.is_(None), webhook_deliveries.c.next_at <= now,
                webhook_deliveries.c.claimed_until < now).order_by(webhook_deliveries.c.id).limit(50))]
            claimed = []
            for delivery_id in ids:  # one by one: a replica that claimed it first keeps it
                if _claim_one(conn, delivery_id, self.owner, now):
                    claimed.append(delivery_id)
            if not claimed:
                return []
            found = conn.execute(select(webhook_deliveries.c.id, webhook_deliveries.c.webhook_id,
                                        webhook_deliveries.c.payload, webhook_deliveries.c.attempts)
                                 .where(webhook_deliveries.c.id.in_(claimed)).order_by(webhook_deliveries.c.id))
            return [tuple(r) for r in found]  # type: ignore[misc]

    def _record(self, delivery_id: int, attempts: int, status: int | None, error: str | None,
                final: bool = False) -> None:
        ok = status is not None and 200 <= status < 300
        values: dict[str, Any] = {"attempts": attempts, "status": status, "error": error, "claimed_until": 0.0}
        if ok or final or attempts >= MAX_ATTEMPTS:
            values["delivered_at"] = time.time()  # done: delivered, or given up (status and error say which)
        else:
            values["next_at"] = time.time() + min(2.0 ** attempts, 300.0)
        with self.engine.begin() as conn:
            conn.execute(update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(**values))


def _claim_one(conn: Connection, delivery_id: int, owner: str, now: float) -> bool:
    return conn.execute(update(webhook_deliveries).where(
        webhook_deliveries.c.id == delivery_id, webhook_deliveries.c.claimed_until < now)
        .values(claimed_by=owner, claimed_until=now + CLAIM_SECONDS)).rowcount == 1
