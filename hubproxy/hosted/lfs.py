"""LFS uploads to hosted repos: the batch answer, the upload (PUT) and verify hrefs it hands out.

The Python clients send neither a token nor the batch's headers with the PUT, so each href authorizes
itself: it names the repo, the object and its size, the uploader and an expiry, signed with the cluster
secret (every replica accepts it). The bytes are hashed on the way into the store; an object whose bytes
do not hash to its oid is refused and nothing is kept. An uploaded object is recorded for its repo: a
commit may reference only objects uploaded to that repo or already in it, and the batch answers "already
stored" only for those, so knowing a private file's sha256 is not enough to copy it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response

from hubproxy import signing
from hubproxy.cache.ingest import IngestError, begin_ingest
from hubproxy.cache.spool import Spool
from hubproxy.hosted import rows
from hubproxy.hosted.common import PRS_DISABLED, json_body
from hubproxy.hosted.multipart import Multipart, part_count
from hubproxy.hub.errors import HubError, bad_request
from hubproxy.hub.routing import RESOLVE_PREFIX, validate_repo_id
from hubproxy.limits import read_body, receive_into
from hubproxy.repos.model import RepoRef
from hubproxy.store.base import BlobStore
from hubproxy.threads import run_in

PUT_PATH = "/_hubproxy/lfs/upload/"
VERIFY_PATH = "/_hubproxy/lfs/verify/"
PART_PATH = "/_hubproxy/lfs/part/"
#: Seconds an href stays valid: long enough for retries and a slow link.
VALIDITY = 24 * 3600
MAX_BATCH_BODY = 1024 * 1024
MAX_OBJECTS = 1000
LFS_JSON = "application/vnd.git-lfs+json"


def _is_oid(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class LfsTransfers:
    """The LFS batch endpoint of hosted repos and the transfer routes its hrefs point at."""

    def __init__(self, engine: Engine, store: BlobStore, spool: Spool, secret: bytes, parts_dir: str,
                 multipart_threshold: int, chunk: int, xet: bool = False) -> None:
        self.xet = xet
        self.engine = engine
        self.store = store
        self.spool = spool
        self.secret = secret
        self.multipart = Multipart(parts_dir, engine, store, spool, VALIDITY)
        self.threshold = multipart_threshold
        self.chunk = chunk

    def _href(self, base: str, path: str, repo: RepoRef, oid: str, size: int, principal: str, part: int = 0) -> str:
        expires = str(int(time.time()) + VALIDITY)
        sig = signing.mac(self.secret, repo.type, repo.id, oid, str(size), principal, expires, str(part))
        query = urlencode({"by": principal, "exp": expires, "sig": sig, **({"part": part} if part else {})})
        return f"{base}{path}{repo.type}/{quote(repo.id)}/{oid}/{size}?{query}"

    def _upload_action(self, base: str, repo: RepoRef, oid: str, size: int, principal: str) -> dict[str, Any]:
        """One PUT for most objects; above the threshold, a URL per part and the completion URL (``href``)."""
        action: dict[str, Any] = {"href": self._href(base, PUT_PATH, repo, oid, size, principal)}
        if size > self.threshold:
            count = part_count(size, self.chunk)
            action["header"] = {"chunk_size": str(self.chunk), **{
                str(n): self._href(base, PART_PATH, repo, oid, size, principal, n) for n in range(1, count + 1)}}
        return action

    async def batch(self, request: Request, repo: RepoRef, principal: str, base: str) -> Response:
        """``POST {repo}.git/info/lfs/objects/batch`` (the caller may write to the repo)."""
        data = await json_body(request, MAX_BATCH_BODY)
        if data.get("operation") != "upload":
            raise bad_request("hubproxy's LFS endpoint takes uploads only (download files with /resolve)")
        if not isinstance(data.get("ref"), dict):  # no ref: an upload for a pull request
            raise HubError(403, None, PRS_DISABLED)
        if self.xet and "xet" in (data.get("transfers") or []):
            # Clients before huggingface_hub 1.20 offer Xet and follow this answer: they upload through the CAS.
            return Response(json.dumps({"transfer": "xet", "objects": [
                {"oid": o.get("oid"), "size": o.get("size")} for o in data.get("objects") or []
                if isinstance(o, dict)]}).encode(), media_type=LFS_JSON)
        objects = data.get("objects")
        if not isinstance(objects, list) or len(objects) > MAX_OBJECTS:
            raise bad_request(f"objects must be a list of at most {MAX_OBJECTS}")
        out = []
        for obj in objects:
            oid, size = (obj.get("oid"), obj.get("size")) if isinstance(obj, dict) else (None, None)
            if not _is_oid(oid) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
                out.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                            "error": {"code": 422, "message": "oid must be a sha256 and size a whole number"}})
                continue
            if await self._usable(repo, oid, size):
                out.append({"oid": oid, "size": size})
                continue
            out.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": self._upload_action(base, repo, oid, size, principal),
                "verify": {"href": self._href(base, VERIFY_PATH, repo, oid, size, principal)}}})
        body = json.dumps({"transfer": "basic", "objects": out}, separators=(",", ":")).encode()
        return Response(body, media_type=LFS_JSON)

    async def _usable(self, repo: RepoRef, oid: str, size: int) -> bool:
        def look() -> bool:
            with self.engine.connect() as conn:
                known = rows.usable_object(conn, repo.type, repo.id, oid)
            return known == size and self.store.stat(oid) == size

        return await asyncio.to_thread(look)

    def _signed(self, request: Request, prefix: str) -> tuple[RepoRef, str, int, str]:
        """The repo, oid, size and uploader an href names, once its signature and expiry are checked."""
        parts = request.url.path[request.url.path.index(prefix) + len(prefix):].split("/")
        if len(parts) != 5 or parts[0] not in RESOLVE_PREFIX or not _is_oid(parts[3]) or not parts[4].isdigit():
            raise HubError(404, None, "Not found")
        repo = RepoRef(parts[0], validate_repo_id(parts[1:3]))
        q = request.query_params
        by, expires, sig, part = q.get("by", ""), q.get("exp", ""), q.get("sig", ""), q.get("part", "0")
        if not (signing.unexpired(expires)
                and signing.valid(self.secret, sig, repo.type, repo.id, parts[3], parts[4], by, expires, part)):
            raise HubError(403, None, "This upload link is not valid (or has expired); ask for a new one")
        return repo, parts[3], int(parts[4]), by

    async def transfer(self, request: Request) -> Response:
        """``PUT`` of an object's bytes, or ``POST`` of its verification."""
        if request.url.path.find(VERIFY_PATH) >= 0 and request.method == "POST":
            return await self._verify(request)
        if request.url.path.find(PUT_PATH) >= 0 and request.method == "PUT":
            return await self._put(request)
        if request.url.path.find(PUT_PATH) >= 0 and request.method == "POST":
            return await self._complete(request)
        if request.url.path.find(PART_PATH) >= 0 and request.method == "PUT":
            return await self._part(request)
        raise HubError(405, None, f"Method {request.method} not allowed here")

    async def _put(self, request: Request) -> Response:
        repo, oid, size, by = self._signed(request, PUT_PATH)
        ingest = await run_in(self.store.pool, begin_ingest, self.store, self.spool, self.engine, oid, size)
        if ingest is not None:
            try:
                await receive_into(request, ingest.write)
                await run_in(self.store.pool, ingest.finish)
            except IngestError as exc:
                ingest.abort()
                raise HubError(400, None, f"Upload refused, nothing was stored: {exc}") from None
            except BaseException:
                ingest.abort()
                raise
        else:  # stored already (perhaps for another repo): the bytes must still prove they are the object
            digest, seen = hashlib.sha256(), 0
            async for chunk in request.stream():
                digest.update(chunk)
                seen += len(chunk)
            if seen != size or digest.hexdigest() != oid:
                raise HubError(400, None, f"Upload refused: the bytes sent are not LFS object {oid}")
        await asyncio.to_thread(self._record, repo, oid, size, by)
        return Response(b"", status_code=200)

    async def _part(self, request: Request) -> Response:
        repo, oid, size, by = self._signed(request, PART_PATH)
        number = int(request.query_params.get("part", "0"))
        count = part_count(size, self.chunk)
        if not 1 <= number <= count:
            raise HubError(404, None, "Not found")
        length = self.chunk if number < count else size - self.chunk * (count - 1)
        etag = await self.multipart.put_part(request, self.multipart.folder(repo, oid, by), number, length)
        return Response(b"", status_code=200, headers={"ETag": etag})

    async def _complete(self, request: Request) -> Response:
        repo, oid, size, by = self._signed(request, PUT_PATH)
        await self.multipart.complete(request, self.multipart.folder(repo, oid, by), oid, size, self.chunk)
        await asyncio.to_thread(self._record, repo, oid, size, by)
        return Response(b"{}", media_type=LFS_JSON)

    def _record(self, repo: RepoRef, oid: str, size: int, by: str) -> None:
        with self.engine.begin() as conn:
            rows.add_upload(conn, repo.type, repo.id, oid, size, by or None)

    async def _verify(self, request: Request) -> Response:
        repo, oid, size, _ = self._signed(request, VERIFY_PATH)
        await read_body(request, MAX_BATCH_BODY)
        if not await self._usable(repo, oid, size):
            raise HubError(404, None, f"LFS object {oid} was not uploaded to {repo.id}")
        return Response(b"{}", media_type=LFS_JSON)
