"""A running hubproxy's parts, made once at start (in dependency order) and closed at stop.

The ASGI app (``app.py``) holds one ``Runtime``; tests of the fast tier build one in process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from hubproxy.admin.api import AdminApi
from hubproxy.admin.service import AdminService
from hubproxy.audit.downloads import AuditLog
from hubproxy.auth.authenticator import Authenticator
from hubproxy.auth.gate import Gate
from hubproxy.cache.blobs import BlobCache
from hubproxy.cache.events import CacheEvent, CacheWatcher
from hubproxy.cache.fill import FillManager
from hubproxy.cache.filler import WARMER_THREADS, WARMERS, Filler
from hubproxy.cache.lease import FillLeases
from hubproxy.cache.spool import Spool
from hubproxy.cache.upload import UPLOAD_THREADS, uploaders
from hubproxy.cache.usage import Usage
from hubproxy.config import Settings, default_db_url, trusted_networks
from hubproxy.db import make_engine, record_database
from hubproxy.hosted.access import Namespaces
from hubproxy.hosted.api import HostedApi
from hubproxy.hosted.blobio import HostedBlobs
from hubproxy.hosted.commits import HostedCommits
from hubproxy.hosted.committer import Committer
from hubproxy.hosted.delivery import WebhookDelivery
from hubproxy.hosted.lfs import LfsTransfers
from hubproxy.hosted.lifecycle import Lifecycle
from hubproxy.hosted.source import HostedSource
from hubproxy.hub.api import HubApi
from hubproxy.hub.errors import hide_origin
from hubproxy.hub.listing import Listing
from hubproxy.hub.metadata_routes import MetadataRoutes
from hubproxy.hub.names import RepoNames
from hubproxy.hub.origin import client_address
from hubproxy.hub.relay import RelayRoute, shared_secret
from hubproxy.hub.resolve import Resolver
from hubproxy.maintenance import maintain
from hubproxy.observability import tracing
from hubproxy.repos.index import RepoIndex
from hubproxy.repos.upstream import UpstreamSource
from hubproxy.store import make_store
from hubproxy.store.base import BlobStore
from hubproxy.threads import start_threads
from hubproxy.upstream.client import UpstreamClient
from hubproxy.xet.cas import PATH as XET_PATH
from hubproxy.xet.cas import XetCas
from hubproxy.xet.convert import XetConverter
from hubproxy.xet.files import XetFiles

log = logging.getLogger(__name__)

#: Worker threads of the event loop's default executor.
WORKER_THREADS = 32


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


def hosted_api(settings: Settings, engine: Engine, index: RepoIndex, cache: BlobCache, spool: Spool,
               secret: bytes) -> HostedApi:
    """The parts that serve hosted repos, over the same index, cache and store as mirrored ones."""
    trusted = trusted_networks(settings.trusted_proxies)
    blobs = HostedBlobs(cache, engine, str(settings.data_dir / "uploads"))
    source = HostedSource(engine, index, cache, settings.xet)
    namespaces = Namespaces(engine, settings.personal_namespaces, settings.token_cache_seconds)
    commits = HostedCommits(settings, source, blobs, Committer(engine, blobs), lambda r: client_address(r, trusted))
    lfs = LfsTransfers(engine, cache.store, spool, secret, str(settings.data_dir / "uploads" / "parts"),
                       settings.lfs_multipart_threshold_bytes, settings.lfs_multipart_chunk_bytes, settings.xet)
    xet = None
    if settings.xet:
        xorbs = make_store(settings, "xorbs")
        xet = XetCas(engine, xorbs, XetFiles(engine, cache.store, xorbs, spool), secret, blobs.tmp_dir,
                     namespaces.may_read)
    return HostedApi(settings, namespaces, source, Lifecycle(engine, index, blobs), commits, lfs,
                     lambda r: client_address(r, trusted), xet)


def process_name() -> str:
    """This process among replicas and workers (in leases and claims)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class Runtime:
    """Every part of a running hubproxy."""

    settings: Settings
    engine: Engine
    store: BlobStore
    upstream: UpstreamClient
    index: RepoIndex
    source: UpstreamSource
    names: RepoNames
    cache: BlobCache
    auth: Authenticator
    audit: AuditLog
    hub: HubApi
    admin: AdminApi
    relay: RelayRoute
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    draining: bool = False

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        # Disk, hashing, store and database calls run in worker threads: a fill alone keeps several busy
        # (its parts' writes, its hash, its upload), so the default pool (cores + 4) would queue them.
        workers = ThreadPoolExecutor(WORKER_THREADS, "hubproxy-io")
        start_threads(workers, WORKER_THREADS)  # now, not in a request's submit (``threads.py``)
        start_threads(WARMERS, WARMER_THREADS)
        asyncio.get_running_loop().set_default_executor(workers)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = make_store(settings)
        spool = Spool(settings.data_dir, settings.fill_direct_writes)
        removed = await asyncio.to_thread(spool.clean)
        if removed:
            log.info("removed %d unfinished fills left by a previous run", removed)
        if settings.tracing and not tracing.enabled():
            tracing.setup()
        engine = await asyncio.to_thread(make_engine, settings.db_url)
        tracing.instrument_engine(engine)
        record_database(settings.data_dir, settings.db_url, default_db_url(settings.data_dir))
        upstream = UpstreamClient(settings)
        await upstream.start()
        hide_origin(settings.upstream_url)
        leases = None
        if settings.store == "s3":  # replicas do not share a spool: coordinate fills through the database
            from hubproxy.store import s3  # (boto3 is imported only for S3)

            start_threads(uploaders, UPLOAD_THREADS)  # blobs go up while they fill
            start_threads(s3.bucket_calls, s3.BUCKET_THREADS_STARTED)  # reads and stores wait on the bucket in these
            leases = FillLeases(engine, process_name(), advertise_url(settings), settings.fill_lease_seconds)
        secret = await asyncio.to_thread(shared_secret, engine)
        filler = Filler(upstream, settings.fill_retries, settings.fill_connections, settings.fill_part_bytes,
                        settings.fill_single_stream_mbps, settings.fill_held_mib * 1024 * 1024)
        fills = FillManager(store, spool, engine, filler, leases)
        cache = BlobCache(settings, store, spool, fills, upstream, Usage(engine), secret)
        index = RepoIndex(engine)
        source = UpstreamSource(settings, index, upstream)
        names = RepoNames(source, settings.revision_ttl)
        auth = Authenticator(engine, settings.token_cache_seconds)
        audit = AuditLog(engine, settings.data_dir)
        gate = Gate(engine, settings.anonymous_project, settings.token_cache_seconds)
        hosted = hosted_api(settings, engine, index, cache, spool, secret)
        hub = HubApi(Resolver(settings, source, cache), MetadataRoutes(settings, source), Listing(index, upstream),
                     names, settings.public_url, settings.path_prefix, auth, settings.anonymous_access == "read",
                     audit, settings.trusted_proxies, gate, hosted)
        admin = AdminApi(AdminService(engine, store, hosted.xet.xorbs if hosted.xet else None,
                                      hosted.namespaces.invalidate), auth,
                         docs_public=settings.anonymous_access == "read")
        runtime = cls(settings, engine, store, upstream, index, source, names, cache, auth, audit, hub, admin,
                      RelayRoute(cache, secret, settings.serve_chunk_size))
        delivery = WebhookDelivery(engine, hosted.webhooks, hosted.namespaces,
                                   (settings.public_url or advertise_url(settings)).rstrip("/"), process_name())
        await asyncio.to_thread(delivery.start)
        runtime.tasks = [asyncio.create_task(delivery.run(), name="webhooks")]
        if hosted.xet is not None:
            converter = XetConverter(engine, store, secret, advertise_url(settings) + XET_PATH,
                                     settings.xet_convert_min_bytes, hosted.commits.blobs.tmp_dir)
            hosted.commits.on_commit.append(converter.wake.set)
            runtime.tasks.append(asyncio.create_task(converter.run(), name="xet-convert"))
        uploads_to = [store] + ([hosted.xet.xorbs] if hosted.xet is not None else [])
        runtime.tasks += [asyncio.create_task(audit.run(), name="audit"),
                          asyncio.create_task(CacheWatcher(engine, runtime.apply).run(), name="cache-events"),
                          asyncio.create_task(maintain(settings, engine, cache, auth, uploads_to), name="maintenance")]
        if settings.anonymous_access == "read":
            log.warning("anonymous access is on: anyone who reaches hubproxy can download what the upstream serves")
        if settings.offline:
            log.warning("offline mode: serving only what is cached")
        return runtime

    def apply(self, event: CacheEvent) -> None:
        """A deletion another process (or this one) made: forget what memory says about it."""
        if event.kind == "blob" and event.blob:
            self.cache.forget(event.blob)
        elif event.kind == "repo" and event.repo_type and event.repo_id:
            self.index.forget_repo(event.repo_type, event.repo_id)
            self.names.forget(event.repo_type, event.repo_id)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.audit.flush()
        self.audit.close()
        log.info("audit queue flushed; stopped")
        await self.cache.usage.flush()
        await self.auth.flush()
        await self.cache.fills.close()
        await self.upstream.close()
        self.engine.dispose()
