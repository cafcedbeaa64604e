"""hubproxy's Xet CAS: the routes ``hf_xet`` calls under ``casUrl`` (``{base}/_hubproxy/xet``).

Upload: ``POST /v1/xorbs/default/{xorb}`` (the body is walked, every chunk decompressed and hashed, and
the merkle root must be the xorb's name; stored with a footer in the store's ``xorbs`` folder) and
``POST /v1/shards`` (``files.py``: checked, each file rebuilt and sha256-verified into the blob store, and
recorded as uploaded to the token's repo, so the commit that follows may name it). The upload-grant and
v2 shard routes answer 404, which the client takes as "use the v1 routes"; the dedup query answers 404
(nothing is deduplicated across uploads yet, which is always a valid answer).
Download: ``GET /v1/reconstructions/{file}`` (v2 answers 404) for files of the token's repo, with
signed, short-lived URLs to ``/_hubproxy/xet/xorb/{xorb}`` that serve byte ranges of stored xorbs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response

from hubproxy import signing
from hubproxy.hosted import rows
from hubproxy.hub.errors import HubError
from hubproxy.hub.serving import BodyResponse, byte_answer, parse_range
from hubproxy.limits import BodyTooLarge, read_body, spool_body
from hubproxy.store.base import BlobStore
from hubproxy.threads import run_in
from hubproxy.xet import registry, tokens
from hubproxy.xet.files import XetFiles, check_shard, refused
from hubproxy.xet.hashes import from_string, to_string
from hubproxy.xet.reconstruction import plan
from hubproxy.xet.registry import StoredChunk
from hubproxy.xet.shard import ShardError, read_shard
from hubproxy.xet.xorb import MAX_XORB_BYTES, XorbError, footer, read_xorb

PATH = "/_hubproxy/xet"
URL_VALIDITY = 3600


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json")


class XetCas:
    """The CAS routes; ``files`` registers shards, ``xorbs`` is the store's xorb folder."""

    def __init__(self, engine: Engine, xorbs: BlobStore, files: XetFiles, secret: bytes, tmp_dir: str,
                 may_read: Callable[[str, str, str], Awaitable[bool]]) -> None:
        #: ``(user, repo type, repo id) -> bool``: whether a user may read a repo (hosted rights).
        self.may_read = may_read
        self._known: dict[str, tuple[str | None, float]] = {}
        self.engine = engine
        self.xorbs = xorbs
        self.files = files
        self.secret = secret
        self.tmp_dir = tmp_dir

    async def handle(self, request: Request, base: str) -> Response | BodyResponse:
        parts = request.url.path[request.url.path.index(PATH) + len(PATH):].strip("/").split("/")
        method = request.method
        if parts[0] == "xorb" and len(parts) == 2 and method in ("GET", "HEAD"):
            return await self._xorb_bytes(request, parts[1])
        route = "/".join(p for p in parts[:2])
        if route == "v1/xorbs" and len(parts) == 4 and method == "POST":
            return await self._upload_xorb(request, parts[3])
        if route == "v1/shards" and method == "POST":
            return await self._upload_shard(request)
        if route == "v1/reconstructions" and len(parts) == 3 and method == "GET":
            return await self._reconstruction(request, parts[2], base)
        if route in ("v1/chunks", "v1/xorb-grants", "v2/shards", "v2/reconstructions", "v1/xorbs"):
            tokens.check(self.secret, request.headers.get("authorization", ""), "read")
            await _drain(request)
            return _json({"error": "not available here"}, 404)
        raise HubError(404, None, "Not found")

    # -- uploads ----------------------------------------------------------------------------------
    async def _upload_xorb(self, request: Request, name: str) -> Response:
        grant = tokens.check(self.secret, request.headers.get("authorization", ""), "write")
        try:
            raw = from_string(name)
        except ValueError:
            raise HubError(400, None, "bad xorb hash") from None
        try:
            path = await spool_body(request, self.tmp_dir, "upload-", MAX_XORB_BYTES + 1024 * 1024)
        except BodyTooLarge:
            raise HubError(413, None, "a xorb is at most 64 MiB") from None
        try:
            inserted = await run_in(self.xorbs.pool, self._store_xorb, name, raw, path)
        finally:
            if os.path.exists(path):
                os.unlink(path)

        def owned() -> None:  # whoever sends the bytes may use the xorb in this repo
            with self.engine.begin() as conn:
                registry.add_xorb_repo(conn, name, grant.repo_type, grant.repo_id)

        await asyncio.to_thread(owned)
        return _json({"was_inserted": inserted})

    def _store_xorb(self, name: str, raw: bytes, path: str) -> bool:
        try:
            with open(path, "rb") as body:
                chunks = read_xorb(body, raw)
        except XorbError as exc:
            raise HubError(400, None, f"Xorb refused, nothing was stored: {exc}") from None
        with self.engine.connect() as conn:
            known = registry.xorb_chunks(conn, name) is not None
        if known and self.xorbs.stat(name) is not None:
            return False
        length = chunks[-1].end
        with open(path, "r+b") as out:  # a footer the client sent is replaced by ours
            out.truncate(length)
            out.seek(length)
            out.write(footer(raw, chunks))
        self.xorbs.ingest(name, path)
        with self.engine.begin() as conn:
            registry.add_xorb(conn, name, length, [StoredChunk(c.start, c.end, c.size, c.hash) for c in chunks])
        return True

    async def _upload_shard(self, request: Request) -> Response:
        grant = tokens.check(self.secret, request.headers.get("authorization", ""), "write")
        try:
            shard = await asyncio.to_thread(read_shard, await read_body(request, 64 * 1024 * 1024))
        except (ShardError, BodyTooLarge) as exc:
            raise refused(str(exc)) from None
        tables = await self.files.tables(shard)
        await asyncio.to_thread(check_shard, shard, tables)
        await self._may_use(grant, {s.xorb for f in shard.files for s in f.segments})
        inserted = 0
        for f in shard.files:
            record = await self.files.materialize(f, tables)

            def keep(record: registry.XetFile = record) -> bool:
                with self.engine.begin() as conn:
                    new = registry.add_file(conn, record)
                    for segment in record.segments:
                        registry.add_xorb_repo(conn, to_string(segment.xorb), grant.repo_type, grant.repo_id)
                    rows.add_upload(conn, grant.repo_type, grant.repo_id, record.sha256, record.size, grant.user)
                return new

            inserted += await asyncio.to_thread(keep)
        return _json({"result": 1 if inserted else 0})

    async def _may_use(self, grant: tokens.XetGrant, names: set[bytes]) -> None:
        """A shard may build files from xorbs uploaded for its repo, or used by repos its uploader may read:
        knowing a xorb's chunk hashes is not enough to copy content one cannot read."""
        for name in names:
            text = to_string(name)
            repos = await asyncio.to_thread(self._xorb_repos, text)
            if (grant.repo_type, grant.repo_id) in repos:
                continue
            if not any([await self.may_read(grant.user, t, r) for t, r in repos]):
                raise refused(f"xorb {text} is not one you may use")

    def _xorb_repos(self, name: str) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            return registry.xorb_repos(conn, name)

    # -- downloads --------------------------------------------------------------------------------
    async def hash_of(self, sha256: str) -> str | None:
        """The Xet hash of a stored file, if it has a Xet form (a file converted after its commit)."""
        now = time.time()
        hit = self._known.get(sha256)
        if hit is not None and (hit[0] is not None or hit[1] > now):
            return hit[0]

        def look() -> str | None:
            with self.engine.connect() as conn:
                found = registry.file_by_sha256(conn, sha256)
            return found.hash if found is not None else None

        found = await asyncio.to_thread(look)
        if len(self._known) > 100_000:
            self._known.clear()
        self._known[sha256] = (found, now + 30)  # a miss is asked again after 30 s
        return found
    async def _reconstruction(self, request: Request, name: str, base: str) -> Response:
        grant = tokens.check(self.secret, request.headers.get("authorization", ""), "read")

        def load() -> tuple[registry.XetFile | None, bool]:
            with self.engine.connect() as conn:
                found = registry.file_by_hash(conn, name)
                mine = found is not None and rows.usable_object(conn, grant.repo_type, grant.repo_id,
                                                                 found.sha256) is not None
            return found, mine

        found, mine = await asyncio.to_thread(load)
        if found is None or not mine:  # a file of another repo is no file of this one
            raise HubError(404, None, "Unknown file")
        if found.size == 0:
            return _json({"offset_into_first_range": 0, "terms": [], "fetch_info": {}})
        rng = parse_range(request.headers.get("range"), found.size)
        start, end = (0, found.size) if rng is None else rng
        tables = await asyncio.to_thread(self._tables, {s.xorb for s in found.segments})
        made = plan(found, tables, start, end)
        fetch: dict[str, list[dict[str, Any]]] = {}
        for xorb, pieces in made.fetch.items():
            url = self._xorb_url(base, to_string(xorb))
            fetch[to_string(xorb)] = [{"range": {"start": s, "end": e}, "url": url,
                                       "url_range": {"start": a, "end": b}} for s, e, a, b in pieces]
        terms = [{"hash": to_string(t.xorb), "unpacked_length": t.size, "range": {"start": t.start, "end": t.end}}
                 for t in made.terms]
        return _json({"offset_into_first_range": made.offset, "terms": terms, "fetch_info": fetch})

    def _tables(self, names: set[bytes]) -> dict[bytes, list[StoredChunk]]:
        with self.engine.connect() as conn:
            found = {n: registry.xorb_chunks(conn, to_string(n)) for n in names}
        if any(v is None for v in found.values()):
            raise HubError(500, "XorbMissing", "a xorb of this file is missing from hubproxy's records")
        return found  # type: ignore[return-value]

    def _xorb_url(self, base: str, name: str) -> str:
        expires = str(int(time.time()) + URL_VALIDITY)
        return f"{base}{PATH}/xorb/{name}?exp={expires}&sig={signing.mac(self.secret, 'xorb', name, expires)}"

    async def _xorb_bytes(self, request: Request, name: str) -> BodyResponse:
        expires, sig = request.query_params.get("exp", ""), request.query_params.get("sig", "")
        if not (signing.unexpired(expires) and signing.valid(self.secret, sig, "xorb", name, expires)):
            raise HubError(403, None, "This xorb link is not valid (or has expired)")
        size = await run_in(self.xorbs.pool, self.xorbs.stat, name)
        if size is None:
            raise HubError(404, None, "Unknown xorb")
        start, end, status, headers = byte_answer(request.headers.get("range"), size)
        if request.method == "HEAD":
            return BodyResponse(status, headers)
        body = await self.xorbs.read(name, start, end, 4 << 20)  # whole xorbs: fewer, larger reads
        if body is None:
            raise HubError(404, None, "Unknown xorb")
        return BodyResponse(status, headers, body)


async def _drain(request: Request) -> None:
    async for _ in request.stream():
        pass
