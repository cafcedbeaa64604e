"""Whether a URL may be fetched on a direct connection of hubproxy's own, bypassing the HTTP libraries.

Fills' ranged parts (``upstream/ranged.py``) and S3 reads relayed to clients (``store/rawget.py``) open
plain sockets instead of going through aiohttp or botocore, which honour ``HTTPS_PROXY``/``HTTP_PROXY``/
``NO_PROXY``. Such a connection must never skip a proxy those libraries would use, so it is only made
when no proxy variable applies to the URL (read per call, as those libraries do per request).
"""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit


def route(url: str) -> tuple[str, str] | None:
    """``(scheme, host:port)`` to connect to for ``url``, or None if it must go through the HTTP library
    (a proxy applies to it, or it is not plain http/https)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    proxies = urllib.request.getproxies_environment()
    if proxies.get(parts.scheme) and not urllib.request.proxy_bypass_environment(parts.hostname, proxies):
        return None
    return parts.scheme, parts.netloc.lower()
