"""Relays between replicas: the replica holding a blob's fill lease serves its bytes to the others.

A relay request names only the blob (``/_hubproxy/relay/<key>``): it is no client download, so it is
neither checked against a policy nor audited (the replica that relays records its client's download).
It is signed instead: ``X-Hubproxy-Relay: <expiry>.<hmac>`` with a secret every replica reads from the
shared database (``cluster_secrets``), so relays work whatever the anonymous access and projects are,
and nobody else can use the route. The holder answers from its fill in progress (with the held-back
tail, exactly as for its own clients) or from its store; otherwise 404, and the asker takes over.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.requests import Request

from hubproxy import signing
from hubproxy.cache.fillbody import FillBody
from hubproxy.db import upsert
from hubproxy.db.models import cluster_secrets
from hubproxy.hub.errors import HubError
from hubproxy.hub.serving import BodyResponse, byte_answer
from hubproxy.store.base import is_blob_key
from hubproxy.threads import run_in

if TYPE_CHECKING:
    from hubproxy.cache.blobs import BlobCache

PATH = "/_hubproxy/relay/"
HEADER = "X-Hubproxy-Relay"
#: Seconds a signature is valid (a relay request is sent right after it is signed).
VALIDITY = 300


def shared_secret(engine: Engine) -> bytes:
    """The replicas' relay secret, made by whichever replica asks first (this module owns ``cluster_secrets``)."""
    with engine.begin() as conn:
        upsert(conn, cluster_secrets, {"name": "relay", "value": secrets.token_hex(32)}, update=False)
        value = conn.execute(select(cluster_secrets.c.value).where(cluster_secrets.c.name == "relay")).scalar_one()
        return bytes.fromhex(value)


def sign(secret: bytes, key: str, now: float | None = None) -> str:
    expiry = str(int((now or time.time()) + VALIDITY))
    return f"{expiry}.{signing.mac(secret, key, expiry)}"


def verify(secret: bytes, key: str, signature: str) -> bool:
    expiry, _, mac = signature.partition(".")
    return signing.unexpired(expiry) and signing.valid(secret, mac, key, expiry)


class RelayRoute:
    """Serves this replica's fills and stored blobs to the other replicas."""

    def __init__(self, cache: BlobCache, secret: bytes, chunk: int) -> None:
        self.cache = cache
        self.secret = secret
        self.chunk = chunk

    async def __call__(self, request: Request) -> BodyResponse:
        key = request.url.path[len(PATH):]
        if request.method not in ("GET", "HEAD") or not is_blob_key(key):
            raise HubError(404, None, "Not found")
        if not verify(self.secret, key, request.headers.get(HEADER, "")):
            raise HubError(403, None, "relay requests must be signed by a replica")
        fill = self.cache.fills.get(key)
        size = fill.size if fill is not None and fill.error is None else None
        total = size if size is not None else await run_in(self.cache.store.pool, self.cache.store.stat, key)
        if total is None:
            raise HubError(404, None, "this replica neither fills nor stores the blob")
        start, end, status, headers = byte_answer(request.headers.get("range"), total)
        if request.method == "HEAD":
            return BodyResponse(status, headers)
        if fill is not None and size is not None:
            body = await FillBody.open(fill, start, end, self.chunk)
        else:
            stored = await self.cache.stored_body(key, start, end)
            if stored is None:
                raise HubError(404, None, "the blob is no longer stored here")
            body = stored
        return BodyResponse(status, headers, body)
