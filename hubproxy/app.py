"""The ASGI application: the lifespan that starts and stops a ``Runtime``, and one dispatch of every request.

Each request's path is parsed once (after ``path_prefix``) into a route kind, which picks its handler
and labels its metrics, so the label is right whatever prefix hubproxy is served under.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hubproxy import __version__
from hubproxy.admin.openapi import PREFIX as ADMIN_PREFIX
from hubproxy.config import Settings, load_settings
from hubproxy.db import ping_database
from hubproxy.hub.errors import HubError
from hubproxy.hub.relay import PATH as RELAY_PATH
from hubproxy.hub.routing import Route, RouteKind, classify, split_raw_path
from hubproxy.observability import metrics
from hubproxy.observability.access import AccessLog
from hubproxy.observability.logs import setup_logging
from hubproxy.observability.middleware import ObservabilityMiddleware
from hubproxy.runtime import Runtime

log = logging.getLogger(__name__)

#: Seconds each readiness check may take.
READY_TIMEOUT = 3.0
#: Routes that are not the Hub's: (kind, path).
LOCAL_ROUTES = {"/health": RouteKind.HEALTH, "/ready": RouteKind.READY, "/metrics": RouteKind.METRICS}


def _on_shutdown_signal(callback: Callable[[], None]) -> None:
    """Call ``callback`` first when SIGTERM or SIGINT arrives, then the server's own handler."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Callable[..., Any] = previous) -> None:
            callback()
            previous(signum, frame)

        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (an embedded server): nothing to watch
            return


class HubproxyApp:
    """hubproxy as an ASGI application."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.draining = False
        self.local: dict[RouteKind, Callable[[Request], Awaitable[Response]]] = {
            RouteKind.HEALTH: self.health, RouteKind.READY: self.ready, RouteKind.METRICS: self.metrics_page}

    def start_draining(self) -> None:
        if not self.draining:
            self.draining = True
            log.info("shutting down: no new connections; finishing downloads in flight (up to %ss)",
                     self.settings.shutdown_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        scope = self._strip_prefix(scope)
        if scope is None:
            prefix = self.settings.path_prefix
            await HubError(404, None, f"Not found: hubproxy is served under {prefix}").to_response()(
                {"type": "http", "method": "GET"}, receive, send)
            return
        request = Request(scope, receive)
        try:
            route = self._route(scope)
        except HubError as exc:
            scope.setdefault("state", {})["route"] = RouteKind.OTHER.value
            await exc.to_response()(scope, receive, send)
            return
        scope.setdefault("state", {})["route"] = route.kind.value
        response = await self._answer(request, route)
        await response(scope, receive, send)

    def _strip_prefix(self, scope: Scope) -> Scope | None:
        prefix = self.settings.path_prefix
        if not prefix or scope["path"] in LOCAL_ROUTES:
            return scope
        raw = scope.get("raw_path") or scope["path"].encode()
        if not (raw == prefix.encode() or raw.startswith(prefix.encode() + b"/")):
            return None
        return {**scope, "raw_path": raw[len(prefix):] or b"/", "path": scope["path"][len(prefix):] or "/",
                "root_path": prefix}

    def _route(self, scope: Scope) -> Route:
        path = scope["path"]
        if path in LOCAL_ROUTES:
            return Route(LOCAL_ROUTES[path])
        if path.startswith(RELAY_PATH):
            return Route(RouteKind.RELAY)
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):  # not /admin/...: "admin" may be a namespace
            return Route(RouteKind.ADMIN)
        return classify(split_raw_path(scope.get("raw_path") or path.encode()))

    async def _answer(self, request: Request, route: Route) -> Any:
        if route.kind in self.local:
            return await self.local[route.kind](request)
        runtime = self.runtime
        if runtime is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        if route.kind == RouteKind.ADMIN:
            return await runtime.admin(request)
        if route.kind == RouteKind.RELAY:
            try:
                return await runtime.relay(request)
            except HubError as exc:
                return exc.to_response()
        return await runtime.hub(request, route)

    # -- local routes ------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        runtime = self.runtime
        if runtime is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__, "offline": self.settings.offline,
                             "fills_in_flight": len(runtime.cache.fills.active)})

    async def ready(self, request: Request) -> Response:
        """Ready for traffic: started, not draining, database and store reachable."""
        runtime = self.runtime
        if runtime is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        if self.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        checks: dict[str, str] = {}
        for name, probe in (("database", lambda: ping_database(runtime.engine)), ("store", runtime.store.ping)):
            try:
                await asyncio.wait_for(asyncio.to_thread(probe), READY_TIMEOUT)
                checks[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
                checks[name] = f"{exc.__class__.__name__}: {str(exc)[:200]}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "unavailable", "checks": checks},
                            status_code=200 if ok else 503)

    async def metrics_page(self, request: Request) -> Response:
        if self.settings.metrics_access == "token":
            header = request.headers.get("authorization", "")
            runtime = self.runtime
            who = (await runtime.auth.authenticate(header[7:].strip())
                   if runtime is not None and header[:7].lower() == "bearer " else None)
            if who is None:
                return JSONResponse({"error": "a valid hubproxy token is required (metrics_access: token)"},
                                    status_code=401)
        body, media = metrics.exposition(request.headers.get("accept", ""))
        return Response(body, media_type=media)

    # -- lifespan -------------------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            self.runtime = await Runtime.start(self.settings)
        except Exception as exc:  # noqa: BLE001
            log.exception("startup failed")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        _on_shutdown_signal(self.start_draining)
        log.info("hubproxy %s ready; upstream %s; data in %s", __version__, self.settings.upstream_url,
                 self.settings.data_dir)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        self.start_draining()
        await self.runtime.close()
        await send({"type": "lifespan.shutdown.complete"})


def create_app(settings: Settings) -> ASGIApp:
    """The hubproxy ASGI application, with request ids, metrics and the access log around it."""
    access = AccessLog(settings.log_format) if settings.access_log else None
    return ObservabilityMiddleware(HubproxyApp(settings), access)


def app_from_env() -> ASGIApp:
    """App factory for worker processes: settings come from HUBPROXY_* variables."""
    from hubproxy.memory import limit_malloc_arenas

    limit_malloc_arenas()
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    return create_app(settings)
