"""Where a request comes from: the client's address and the base URL it used, believing proxies only when trusted."""

from __future__ import annotations

import ipaddress
import re

from starlette.requests import Request

from hubproxy.hub.errors import bad_request

Networks = list[ipaddress.IPv4Network | ipaddress.IPv6Network]
_HOST = re.compile(r"[A-Za-z0-9.:\[\]_-]{1,255}")


def _is_trusted(addr: str | None, trusted: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(addr or "")
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(request: Request, trusted: Networks) -> str | None:
    """The caller's address: the peer, or the right-most untrusted hop of X-Forwarded-For behind trusted proxies."""
    peer = request.client.host if request.client else None
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def public_base(request: Request, configured: str | None, trusted: Networks | None = None) -> str:
    """The base URL clients used (for Link headers): configured, or from the request.

    ``X-Forwarded-Proto``/``-Host`` are believed only from a trusted proxy (``trusted_proxies``);
    from anyone else they would let a client point hubproxy's links at a host of its choosing.
    """
    if configured:
        return configured.rstrip("/")
    proto, host = request.url.scheme, request.headers.get("host") or request.url.netloc
    peer = request.client.host if request.client else None
    if trusted and _is_trusted(peer, trusted):
        proto = request.headers.get("x-forwarded-proto", proto).split(",")[0].strip()
        host = request.headers.get("x-forwarded-host", host).split(",")[0].strip()
    if proto not in ("http", "https") or not _HOST.fullmatch(host):
        raise bad_request("The Host header is not a host name")
    return f"{proto}://{host}"
