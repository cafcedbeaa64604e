"""Builds the ASGI app: routes, middleware, and the lifespan that owns DB, store and upstream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hubproxy import __version__
from hubproxy.admin.api import AdminApi
from hubproxy.admin.service import AdminService
from hubproxy.audit import downloads as audit_downloads
from hubproxy.audit.downloads import AuditLog
from hubproxy.auth.authenticator import Authenticator
from hubproxy.auth.gate import Gate
from hubproxy.cache import events as cache_events
from hubproxy.cache import manage
from hubproxy.cache.events import CacheEvent, CacheWatcher
from hubproxy.cache.fill import FillManager
from hubproxy.cache.index import Index
from hubproxy.cache.lease import FillLeases
from hubproxy.cache.usage import Usage
from hubproxy.config import Settings, default_db_url, load_settings
from hubproxy.db import make_engine, ping_database, record_database
from hubproxy.hub.api import HubApi
from hubproxy.hub.errors import HubError, hide_origin
from hubproxy.hub.metadata import Metadata
from hubproxy.hub.names import RepoNames
from hubproxy.hub.relay import PATH as RELAY_PATH
from hubproxy.hub.relay import RelayRoute, shared_secret
from hubproxy.hub.resolve import Resolver
from hubproxy.observability import metrics
from hubproxy.observability.access import AccessLog
from hubproxy.observability.logs import setup_logging
from hubproxy.observability.middleware import ObservabilityMiddleware, RequestIdMiddleware
from hubproxy.store import make_store
from hubproxy.store.base import BlobStore
from hubproxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request may need, created in the lifespan."""

    settings: Settings
    index: Index
    store: BlobStore
    upstream: UpstreamClient
    fills: FillManager
    metadata: Metadata
    hub: HubApi
    admin: AdminApi
    relay: RelayRoute


async def _maintain(settings: Settings, index: Index, store: BlobStore, fills: FillManager,
                    usage: Usage, auth: Authenticator) -> None:
    """Every ``maintenance_interval`` (or after a fill): write access statistics, evict to the budget."""
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fills.committed.wait(), settings.maintenance_interval)
        fills.committed.clear()
        try:
            await usage.flush()
            await auth.flush()
            await asyncio.to_thread(audit_downloads.prune, index.engine, settings.audit_retention_days)
            await asyncio.to_thread(cache_events.prune, index.engine)
            await asyncio.to_thread(fills.mismatches.prune)
            if settings.cache_max_bytes:
                evicted = await asyncio.to_thread(manage.evict, index.engine, store, settings.cache_max_bytes,
                                                  fills.protected())
                for key in evicted:
                    fills.present.discard(key)
                if evicted:
                    metrics.EVICTIONS.inc(len(evicted))
                    log.info("evicted %d blobs to stay under %d bytes", len(evicted), settings.cache_max_bytes)
            metrics.CACHE_BYTES.set(await asyncio.to_thread(manage.total_size, index.engine))
        except Exception as exc:  # noqa: BLE001 - try again next round
            log.warning("cache maintenance failed: %s", exc)


def advertise_url(settings: Settings) -> str:
    """Where other replicas reach this one."""
    if settings.advertise_url:
        return settings.advertise_url.rstrip("/")
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"http://{host}:{settings.port}{settings.path_prefix}"


def configure_logging(settings: Settings) -> None:
    setup_logging(settings.log_level, settings.log_format)


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


def app_from_env() -> ASGIApp:
    """App factory for worker processes: settings come from HUBPROXY_* variables."""
    from hubproxy.cli.serve import limit_malloc_arenas

    limit_malloc_arenas()
    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)


def create_app(settings: Settings) -> ASGIApp:
    """The hubproxy ASGI application."""
    services: dict[str, Services] = {}
    lifecycle = {"draining": False}

    def start_draining() -> None:
        if not lifecycle["draining"]:
            lifecycle["draining"] = True
            log.info("shutting down: no new connections; finishing downloads in flight (up to %ss)",
                     settings.shutdown_timeout)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = make_store(settings)
        removed = store.clean_tmp()
        if removed:
            log.info("removed %d unfinished fills left by a previous run", removed)
        index = Index(make_engine(settings.db_url))
        record_database(settings.data_dir, settings.db_url, default_db_url(settings.data_dir))
        upstream = UpstreamClient(settings)
        hide_origin(settings.upstream_url)
        await upstream.start()
        leases = None
        if settings.store == "s3":  # replicas do not share a spool: coordinate fills through the database
            leases = FillLeases(index.engine, f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
                                advertise_url(settings), settings.fill_lease_seconds)
        fills = FillManager(settings, store, index, upstream, leases)
        metadata = Metadata(settings, index, upstream)
        usage = Usage(index.engine)
        secret = await asyncio.to_thread(shared_secret, index.engine)
        resolver = Resolver(settings, index, store, upstream, fills, metadata, usage, secret)
        auth = Authenticator(index.engine, settings.token_cache_seconds)
        if settings.anonymous_access == "read":
            log.warning("anonymous access is on: anyone who reaches hubproxy can download what the upstream serves")
        audit = AuditLog(index.engine, settings.data_dir)
        audit_task = asyncio.create_task(audit.run(), name="audit")
        names = RepoNames(metadata, index.engine, settings.revision_ttl)
        hub = HubApi(resolver, metadata, upstream, names, settings.public_url, settings.path_prefix, auth,
                     settings.anonymous_access == "read", audit, settings.trusted_proxies,
                     Gate(index.engine, settings.anonymous_project, settings.token_cache_seconds))
        services["s"] = Services(settings, index, store, upstream, fills, metadata, hub,
                                 AdminApi(AdminService(index.engine, store), auth,
                                          docs_public=settings.anonymous_access == "read"),
                                 RelayRoute(fills, secret, settings.serve_chunk_size))
        maintenance = asyncio.create_task(_maintain(settings, index, store, fills, usage, auth), name="maintenance")

        def forget(event: CacheEvent) -> None:
            if event.kind == "blob" and event.blob:
                fills.present.discard(event.blob)
            elif event.kind == "repo" and event.repo_type and event.repo_id:
                index.forget_repo(event.repo_type, event.repo_id)
                metadata.forget_repo(event.repo_type, event.repo_id)
                names.forget(event.repo_type, event.repo_id)

        watcher = asyncio.create_task(CacheWatcher(index.engine, forget).run(), name="cache-events")
        if settings.offline:
            log.warning("offline mode: serving only what is cached")
        _on_shutdown_signal(start_draining)
        log.info("hubproxy %s ready; upstream %s; data in %s", __version__, settings.upstream_url, settings.data_dir)
        try:
            yield
        finally:
            start_draining()
            for task in (maintenance, audit_task, watcher):
                task.cancel()
            await asyncio.gather(maintenance, audit_task, watcher, return_exceptions=True)
            await audit.flush()
            audit.close()
            log.info("audit queue flushed; stopped")
            await usage.flush()
            await auth.flush()
            await fills.close()
            await upstream.close()
            index.engine.dispose()

    async def health(request: Request) -> Response:
        s = services.get("s")
        if s is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__, "offline": s.settings.offline,
                             "fills_in_flight": len(s.fills.active)})

    async def ready(request: Request) -> Response:
        """Ready for traffic: started, not draining, database and store reachable."""
        s = services.get("s")
        if s is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        if lifecycle["draining"]:
            return JSONResponse({"status": "draining"}, status_code=503)
        checks: dict[str, str] = {}
        for name, probe in (("database", lambda: ping_database(s.index.engine)), ("store", s.store.ping)):
            try:
                await asyncio.wait_for(asyncio.to_thread(probe), READY_TIMEOUT)
                checks[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
                checks[name] = f"{exc.__class__.__name__}: {str(exc)[:200]}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "unavailable", "checks": checks},
                            status_code=200 if ok else 503)

    async def metrics_page(request: Request) -> Response:
        if settings.metrics_access == "token":
            s = services.get("s")
            header = request.headers.get("authorization", "")
            who = await s.hub.auth.authenticate(header[7:].strip()) if s and header[:7].lower() == "bearer " else None
            if who is None:
                return JSONResponse({"error": "a valid hubproxy token is required (metrics_access: token)"},
                                    status_code=401)
        body, media = metrics.exposition()
        return Response(body, media_type=media)

    local_routes = {"/health": health, "/ready": ready, "/metrics": metrics_page}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(lifespan, scope, receive, send)
            return
        if scope["type"] != "http":
            return
        prefix = settings.path_prefix
        if prefix and scope["path"] not in local_routes:
            raw = scope.get("raw_path") or scope["path"].encode()
            if not (raw == prefix.encode() or raw.startswith(prefix.encode() + b"/")):
                await HubError(404, None, f"Not found: hubproxy is served under {prefix}").to_response()(
                    scope, receive, send)
                return
            scope = {**scope, "raw_path": raw[len(prefix):] or b"/",
                     "path": scope["path"][len(prefix):] or "/", "root_path": prefix}
        request = Request(scope, receive)
        if scope["path"] in local_routes:
            response = await local_routes[scope["path"]](request)
        elif scope["path"].startswith(RELAY_PATH):
            try:
                response = await services["s"].relay(request)
            except HubError as exc:
                response = exc.to_response()
        elif scope["path"].startswith("/admin/"):
            response = await services["s"].admin(request)
        else:
            response = await services["s"].hub(request)
        await response(scope, receive, send)

    access = AccessLog(settings.log_format) if settings.access_log else None
    return RequestIdMiddleware(ObservabilityMiddleware(app, access))


#: Seconds each readiness check may take.
READY_TIMEOUT = 3.0


async def _run_lifespan(lifespan: Callable[[Any], contextlib.AbstractAsyncContextManager[None]],
                        scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol around our context manager."""
    await receive()  # lifespan.startup
    ctx = lifespan(None)
    try:
        await ctx.__aenter__()
    except Exception as exc:  # noqa: BLE001
        log.exception("startup failed")
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        return
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    await ctx.__aexit__(None, None, None)
    await send({"type": "lifespan.shutdown.complete"})
