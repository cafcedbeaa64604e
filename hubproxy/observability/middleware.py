"""The ASGI middleware: request ids, per-request metrics, the access log and (optionally) the request span."""

from __future__ import annotations

import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hubproxy.http_protocol import DIRECT_BYTES
from hubproxy.observability import metrics, tracing
from hubproxy.observability.access import AccessLog
from hubproxy.observability.logs import REQUEST_ID, redact

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id(scope: Scope) -> str:
    """The caller's ``X-Request-Id`` if it is sane (and nothing token-like), else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text) and redact(text) == text:
                return text
    return os.urandom(16).hex()  # as random as uuid4, without building a UUID object


class ObservabilityMiddleware:
    """One wrapper around the app (one per request, one per sent message): adds ``X-Request-Id`` to every answer
    and to the logs, counts requests by route and status, times the first and last byte, writes the access log,
    and (tracing on) opens the request's span.

    The route label is the route kind the app parsed (``RouteKind``), never a path or a repo id.
    """

    def __init__(self, app: ASGIApp, access: AccessLog | None = None) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        shared = scope.setdefault("state", {})  # the app records the request's route kind here
        state = {"status": 500, "bytes": 0, "ttfb": None}
        rid = request_id(scope)
        rid_bytes = rid.encode()
        rid_token = REQUEST_ID.set(rid)

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid_bytes)]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                direct = message.get(DIRECT_BYTES)  # bytes that went out zero-copy (http_protocol.py)
                if state["ttfb"] is None and (body or direct is not None or not message.get("more_body", False)):
                    state["ttfb"] = time.perf_counter() - started
                state["bytes"] += len(body) + (direct or 0)
            await send(message)

        try:
            if tracing.enabled():
                await self._traced(scope, receive, observe, state, shared)
            else:  # the hot path pays nothing for tracing being possible
                await self.app(scope, receive, observe)
        finally:
            elapsed = time.perf_counter() - started
            route = shared.get("route", "other")
            status = str(state["status"])
            metrics.REQUESTS.labels(route, scope["method"], status).inc()
            metrics.DURATION.labels(route).observe(elapsed)
            if state["ttfb"] is not None:
                metrics.TTFB.labels(route).observe(state["ttfb"])
            if self.access is not None and route not in ("health", "ready", "metrics"):
                client = scope.get("client")
                self.access.record(scope["method"], scope["path"], route, state["status"], state["bytes"], elapsed,
                                   state["ttfb"], client[0] if client else None, rid, shared.get("cache"))
            REQUEST_ID.reset(rid_token)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, state: dict, shared: dict) -> None:
        """The request inside a server span that continues the client's ``traceparent``, if it sent one."""
        incoming = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])
                    if k in (b"traceparent", b"tracestate")}
        with tracing.span(f"{scope['method']} request", "server", incoming, **{
                "http.request.method": scope["method"], "url.path": scope["path"]}) as current:
            await self.app(scope, receive, send)
            current.set_attribute("http.response.status_code", state["status"])
            current.set_attribute("hubproxy.route", shared.get("route", "other"))
