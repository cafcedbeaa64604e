"""``HEAD``/``GET /{P}{repo}/resolve/{rev}/{path}``: headers, ranges, cache or fill.

Every answer is a direct 200/206 from hubproxy (protocol D3): clients are never sent to an
upstream or CDN host, and no Xet header ever reaches them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
from starlette.requests import Request

from hubproxy.cache.fill import FillManager, read_fill
from hubproxy.cache.index import FileInfo, Index
from hubproxy.cache.lease import Holder
from hubproxy.cache.mismatch import CLOSED_RANGE_SECONDS
from hubproxy.cache.usage import Usage
from hubproxy.config import Settings
from hubproxy.hub.errors import HubError, entry_not_found
from hubproxy.hub.metadata import Metadata, unavailable_error
from hubproxy.hub.relay import HEADER, PATH, sign
from hubproxy.hub.routing import RESOLVE_PREFIX, Route
from hubproxy.hub.serving import BodyResponse, parse_range
from hubproxy.store.base import BlobStore, is_blob_key
from hubproxy.upstream.client import UpstreamClient, UpstreamUnavailable, iter_body

log = logging.getLogger(__name__)

#: A range starting this far beyond what a fill has written is fetched from the upstream directly.
FOLLOW_WINDOW = 16 * 1024 * 1024
#: Free space a fill leaves on the store's filesystem (the database and logs may live there too).
ROOM_MARGIN = 64 * 1024


def normalize_etag(value: str | None) -> str | None:
    """The client's normalization: drop ``W/`` and quotes (D4)."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None


def resolve_path(route: Route, rev: str) -> str:
    """The upstream resolve path for ``route`` at ``rev``."""
    prefix = RESOLVE_PREFIX[route.repo_type]
    return f"/{prefix}{route.repo_id}/resolve/{quote(rev, safe='')}/{quote(route.path)}"


@dataclass
class Resolver:
    """Answers resolve requests."""

    settings: Settings
    index: Index
    store: BlobStore
    upstream: UpstreamClient
    fills: FillManager
    metadata: Metadata
    usage: Usage
    #: Signs relay requests to the replica holding a fill lease (see ``relay.py``).
    relay_secret: bytes = b""

    async def file_info(self, route: Route, commit: str) -> FileInfo:
        """What the path is at the commit: the index, or one upstream HEAD (recorded for good)."""
        info = self.index.peek_file(route.repo_type, route.repo_id, commit, route.path)
        if info is None:
            info = await self.index.get_file(route.repo_type, route.repo_id, commit, route.path)
        if info is not None and not info.left_out:
            return info
        key = f"HEAD|{route.repo_type}|{route.repo_id}|{commit}|{route.path}"
        return await self.metadata.single_flight(key, lambda: self._head_upstream(route, commit, info))

    async def _head_upstream(self, route: Route, commit: str, known: FileInfo | None = None) -> FileInfo:
        try:
            resp = await self.upstream.head_file(resolve_path(route, commit))
        except UpstreamUnavailable as exc:
            if known is not None and known.left_out:
                raise entry_not_found(commit, f"{route.path} was left out of the bundle imported at this site, "
                                              "and the upstream cannot be asked") from None
            # The commit's full listing, if held, knows every file of it and that no other exists. A listed
            # file is answered only if its bytes are stored too: HEAD must promise no more than GET keeps.
            listed = await self.metadata.listed_file(route.repo_type, route.repo_id, commit, route.path)
            if listed is not None and (listed.blob is None or await self.fills.has_blob(listed.blob)):
                await self.index.put_file(route.repo_type, route.repo_id, commit, route.path, listed)
                return listed
            raise unavailable_error(exc, f"{route.path} of {route.repo_id} at {commit}") from None
        code = resp.headers.get("X-Error-Code")
        if resp.status == 404 and code == "EntryNotFound":
            info = FileInfo(None, 0, False, "")
            await self.index.put_file(route.repo_type, route.repo_id, commit, route.path, info)
            return info
        if resp.status >= 400:
            if resp.status >= 500:
                raise HubError(502, code or "UpstreamError", f"Upstream answered {resp.status} for {route.path}")
            raise HubError(resp.status, code, resp.headers.get("X-Error-Message", f"Upstream answered {resp.status}"))
        linked = normalize_etag(resp.headers.get("X-Linked-Etag"))
        etag = linked or normalize_etag(resp.headers.get("ETag"))
        size_text = resp.headers.get("X-Linked-Size") or (
            resp.headers.get("Content-Length") if resp.status < 300 else None)
        if not etag or size_text is None or not size_text.isdigit():
            raise HubError(502, "UpstreamError", f"Upstream metadata for {route.path} lacks an ETag or a size")
        info = FileInfo(etag, int(size_text), linked is not None, etag)
        await self.index.put_file(route.repo_type, route.repo_id, commit, route.path, info)
        return info

    async def handle(self, request: Request, route: Route, pull_refusal: HubError | None = None) -> BodyResponse:
        """The answer to a resolve request. ``pull_refusal``: raised instead of fetching content from the
        upstream (the caller may read what is stored, but not pull)."""
        assert route.revision is not None
        commit = await self.metadata.resolve_commit(route.repo_type, route.repo_id, route.revision)
        info = await self.file_info(route, commit)
        if info.blob is None:
            raise entry_not_found(commit)
        rng = parse_range(request.headers.get("range"), info.size)
        if rng is not None and rng[0] > 0 and is_blob_key(info.blob):
            rng = await self._after_mismatch(info.blob or "", request.headers.get("range", ""), rng)
        headers = file_headers(commit, info, route.path)
        if rng is None:
            start, end, status = 0, info.size, 200
        else:
            start, end, status = rng[0], rng[1], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        if self.settings.s3_redirect and info.is_lfs and is_blob_key(info.blob) and await self.fills.stored_now(info.blob):
            url = await asyncio.to_thread(self.store.presign, info.blob)
            if url:
                # A different origin: clients read the metadata on this 302 itself (D2, D6, P7).
                headers = file_headers(commit, info, route.path)
                headers.update({"Location": url, "Content-Length": "0"})
                self.usage.touch(info.blob)
                response = BodyResponse(302, headers)
                response.source = "redirect"
                return response
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            return BodyResponse(status, headers)
        body, source = await self._body(route, commit, info, start, end, pull_refusal)
        response = BodyResponse(status, headers, body)
        response.source = source
        return response

    async def _after_mismatch(self, key: str, header: str, rng: tuple[int, int]) -> tuple[int, int] | None:
        """A range of a blob whose fill once failed verification: see ``cache/mismatch.py``."""
        failed_at = await self.fills.mismatches.failed_at(key)
        if failed_at is None:
            return rng
        if header.replace(" ", "").endswith("-"):  # a resume: the whole file, so the client starts over
            return None
        if time.time() - failed_at < CLOSED_RANGE_SECONDS:
            raise HubError(503, "BlobFailedVerification", "the upstream recently sent wrong bytes for this file; "
                           "download it whole", {"Retry-After": str(int(CLOSED_RANGE_SECONDS))})
        return rng

    async def _body(self, route: Route, commit: str, info: FileInfo, start: int, end: int,
                    pull_refusal: HubError | None = None) -> tuple[AsyncIterator[bytes], str]:
        """The bytes, and where they come from: hit, miss (a fill), relay or passthrough (not stored)."""
        key = info.blob
        assert key is not None
        chunk = self.settings.serve_chunk_size
        if pull_refusal is not None and not (is_blob_key(key) and await self.fills.has_blob(key)):
            raise pull_refusal
        if not is_blob_key(key):
            # Not content-addressed upstream: nothing to verify against, so pass it through uncached.
            return await self._upstream_body(route, commit, info, start, end), "passthrough"
        self.usage.touch(key)
        if await self.fills.has_blob(key):
            stored = await self._stored_body(key, start, end)
            if stored is not None:
                return stored, "hit"
        if self.fills.get(key) is None:
            if self.upstream.offline:
                raise unavailable_error(UpstreamUnavailable("offline", offline=True),
                                        f"{route.path} of {route.repo_id} at {commit}")
            if not await self._room_for(info.size):
                log.warning("store full: serving %s of %s straight from the upstream, uncached",
                            route.path, route.repo_id)
                return await self._upstream_body(route, commit, info, start, end), "passthrough"
        fill = await self.fills.start(key, info.size, resolve_path(route, commit))
        if isinstance(fill, Holder):
            return await self._relay_or_take_over(route, commit, info, start, end, fill)
        if fill is None:  # another process stored it meanwhile
            stored = await self._stored_body(key, start, end)
            if stored is not None:
                return stored, "hit"
            raise HubError(503, "CacheBusy", "the blob changed state while it was being opened; retry",
                           {"Retry-After": "1"})
        if start > fill.written + FOLLOW_WINDOW:
            return await self._upstream_body(route, commit, info, start, end), "passthrough"
        return read_fill(fill, start, end, chunk), "miss"

    async def _relay_or_take_over(self, route: Route, commit: str, info: FileInfo, start: int, end: int,
                                  holder: Holder) -> tuple[AsyncIterator[bytes], str]:
        """Another replica fills this blob: stream its bytes. If it is gone, at the start or midway, this
        replica takes the fill over and the same answer goes on from its own fill."""
        key = info.blob or ""
        if not holder.url:  # the lease keeps changing hands: pass the bytes through
            return await self._upstream_body(route, commit, info, start, end), "passthrough"
        try:
            relay = await self._upstream_body(route, commit, info, start, end, url=holder.url + PATH + key,
                                              headers={HEADER: sign(self.relay_secret, key)})
        except HubError as exc:
            if exc.status not in (403, 404, 502, 504):
                raise
            log.warning("fill lease holder %s cannot relay (%s); taking over %s", holder.url, exc.status, key)
            return await self._take_over(route, commit, info, start, end, holder)

        async def body() -> AsyncIterator[bytes]:
            pos = start
            try:
                async for chunk in relay:
                    yield chunk
                    pos += len(chunk)
                return
            except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("relay from %s broke at byte %d (%s); taking over %s", holder.url, pos,
                            exc.__class__.__name__, key)
            rest, _ = await self._take_over(route, commit, info, pos, end, holder)
            async for chunk in rest:
                yield chunk

        return body(), "relay"

    async def _take_over(self, route: Route, commit: str, info: FileInfo, start: int, end: int,
                         dead: Holder) -> tuple[AsyncIterator[bytes], str]:
        """Bytes ``[start, end)`` once the replica that held the fill lease is gone: fill here (or relay
        whoever took over first, or read what was stored meanwhile), and where they come from."""
        key = info.blob or ""
        fill = await self.fills.start(key, info.size, resolve_path(route, commit), dead_owner=dead.owner)
        if isinstance(fill, Holder) and fill.url and fill.owner != dead.owner:
            return await self._upstream_body(route, commit, info, start, end, url=fill.url + PATH + key,
                                             headers={HEADER: sign(self.relay_secret, key)}), "relay"
        if isinstance(fill, Holder):
            return await self._upstream_body(route, commit, info, start, end), "passthrough"
        if fill is None:
            stored = await self._stored_body(key, start, end)
            if stored is not None:
                return stored, "hit"
            return await self._upstream_body(route, commit, info, start, end), "passthrough"
        return read_fill(fill, start, end, self.settings.serve_chunk_size), "miss"

    async def _room_for(self, size: int) -> bool:
        """Whether the store's filesystem can take a blob of ``size`` bytes (with a little to spare)."""
        free = await asyncio.to_thread(self.store.free_bytes)
        return free >= size + ROOM_MARGIN

    async def _stored_body(self, key: str, start: int, end: int) -> AsyncIterator[bytes] | None:
        """The bytes from the store, or None if the blob is no longer there (evicted)."""
        body = await self.store.reader(key, start, end, self.settings.serve_chunk_size)
        if body is None:
            self.fills.present.discard(key)
            return None
        return self.fills.track(key, body)

    async def _upstream_body(self, route: Route, commit: str, info: FileInfo, start: int, end: int,
                             url: str | None = None, headers: dict[str, str] | None = None) -> AsyncIterator[bytes]:
        """Stream a range straight from the upstream, or from ``url`` (a replica filling it); not stored."""
        whole = start == 0 and end == info.size
        try:
            resp = await self.upstream.open_stream(url or resolve_path(route, commit), start,
                                                   None if whole else end - 1, headers, direct=url is not None)
        except UpstreamUnavailable as exc:
            raise unavailable_error(exc, f"{route.path} of {route.repo_id} at {commit}") from None
        if resp.status not in (200, 206):
            resp.release()
            if url is not None and resp.status in (403, 404):  # a replica that no longer has it
                raise HubError(resp.status, None, f"the replica at {url} cannot relay {route.path}")
            raise HubError(502, "UpstreamError", f"Upstream answered {resp.status} for {route.path}")
        skip = start if resp.status == 200 else 0

        async def body() -> AsyncIterator[bytes]:
            remaining = end - start
            try:
                async for data in iter_body(resp, skip):
                    if len(data) > remaining:
                        data = data[:remaining]
                    remaining -= len(data)
                    yield data
                    if remaining <= 0:
                        break
                if remaining > 0:
                    raise OSError("upstream ended the body early")
            finally:
                resp.release()

        return body()


def file_headers(commit: str, info: FileInfo, path: str) -> dict[str, str]:
    """The headers clients read on every resolve answer (D1, D3, D4, D17)."""
    name = path.rsplit("/", 1)[-1]
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    headers = {
        "X-Repo-Commit": commit,
        "ETag": f'"{info.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{ascii_name}\";",
    }
    if info.is_lfs:
        headers["X-Linked-Etag"] = f'"{info.etag}"'
        headers["X-Linked-Size"] = str(info.size)
    return headers
