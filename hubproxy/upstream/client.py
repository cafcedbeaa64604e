"""One aiohttp session to the upstream hub: timeouts, redirects, the upstream token.

The upstream token goes only to the upstream's own origin, never to a CDN a redirect
points at, and never comes from a client. Redirects are followed here, by hand, so that
no client is ever sent to an upstream or CDN host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from hubproxy import __version__
from hubproxy.config import Settings
from hubproxy.observability import metrics, tracing
from hubproxy.upstream.ranged import RangeConnection
from hubproxy.upstream.recent import Recent

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
#: Seconds a CDN URL from a HEAD is used for a fill (the Hub's signed URLs last far longer).
LOCATION_SECONDS = 60.0
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = f"hubproxy/{__version__}"


class UpstreamUnavailable(Exception):
    """The upstream could not be reached (connection error, timeout, or offline mode)."""

    def __init__(self, detail: str, timeout: bool = False, offline: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.timeout = timeout
        self.offline = offline


@dataclass
class UpstreamResponse:
    """A fully read upstream answer."""

    status: int
    headers: CIMultiDictProxy[str] | CIMultiDict[str]
    body: bytes
    url: str


def upstream_ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Certificate checks for the upstream: the system's CAs (``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` count), plus
    ``ca_bundle`` (a corporate CA that re-signs traffic, a private hub's CA) when given."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


@contextlib.contextmanager
def _failures_mapped(what: str) -> Iterator[None]:
    """Connection failures and timeouts become ``UpstreamUnavailable`` (and are counted)."""
    try:
        yield
    except asyncio.TimeoutError:
        metrics.UPSTREAM_ERRORS.labels("timeout").inc()
        raise UpstreamUnavailable(f"timed out on {what}", timeout=True) from None
    except aiohttp.ClientError as exc:
        metrics.UPSTREAM_ERRORS.labels("unreachable").inc()
        raise UpstreamUnavailable(f"{type(exc).__name__} on {what}: {exc}") from None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class UpstreamClient:
    """The only way hubproxy talks to its upstream."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = settings.upstream_url
        self._origin = _origin(self.base)
        self._session: aiohttp.ClientSession | None = None
        self._direct: aiohttp.ClientSession | None = None
        self.ssl_context: ssl.SSLContext | None = None
        #: Blob key -> the CDN URL the upstream's HEAD of the file just redirected to, for the fill that follows.
        self.locations: Recent[str] = Recent(LOCATION_SECONDS)

    async def start(self) -> None:
        """Open the sessions: one to the upstream and CDNs (through ``HTTPS_PROXY``/``HTTP_PROXY`` unless
        ``NO_PROXY`` says otherwise, trusting ``upstream_ca_bundle`` or the system's CAs), one direct to
        other replicas (which are inside the network, never behind the corporate proxy)."""
        ssl_context = self.ssl_context = upstream_ssl_context(self.settings.upstream_ca_bundle)
        self._session = self._new_session(ssl_context, trust_env=True)
        self._direct = self._new_session(ssl_context, trust_env=False)

    @staticmethod
    def _new_session(ssl_context: ssl.SSLContext, trust_env: bool) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=256, limit_per_host=128, ttl_dns_cache=300, ssl=ssl_context)
        return aiohttp.ClientSession(connector=connector, auto_decompress=True, read_bufsize=4 * 1024 * 1024,
                                     headers={"User-Agent": USER_AGENT}, trust_env=trust_env)

    async def close(self) -> None:
        for session in (self._session, self._direct):
            if session is not None:
                await session.close()
        self._session = self._direct = None

    @property
    def offline(self) -> bool:
        return self.settings.offline

    def url(self, path: str) -> str:
        """Absolute upstream URL for an (already encoded) path starting with ``/``."""
        return self.base + path

    def _headers(self, url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        token = self.settings.upstream_token
        if token and _origin(url) == self._origin:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _check(self) -> aiohttp.ClientSession:
        if self.settings.offline:
            raise UpstreamUnavailable("offline mode", offline=True)
        if self._session is None:
            raise UpstreamUnavailable("upstream client not started")
        return self._session

    def _timeout(self, total: float | None) -> aiohttp.ClientTimeout:
        t = self.settings.upstream_timeout
        return aiohttp.ClientTimeout(total=total, connect=t, sock_connect=t, sock_read=t)

    async def _send(self, method: str, url: str, *, headers: dict[str, str], params: Any = None, data: Any = None,
                    timeout: aiohttp.ClientTimeout, same_origin_only: bool = False, send_token: bool = True,
                    direct: bool = False, decompress: bool = True) -> aiohttp.ClientResponse:
        """The one request primitive: send, follow redirects by hand, map failures to ``UpstreamUnavailable``.

        The token goes to the upstream's origin only. With ``same_origin_only`` a redirect to another origin
        (a CDN) is returned as the answer: its 3xx carries the file's metadata. The caller releases the answer.
        """
        session = self._check()
        if direct and self._direct is not None:
            session = self._direct
        path = url
        with tracing.span(f"upstream {method}", "client", **{"http.request.method": method}), \
                _failures_mapped(f"{method} {path}"):
            headers = tracing.inject(dict(headers))
            for _ in range(MAX_REDIRECTS + 1):
                resp = await session.request(
                    method, url, params=params, data=data, allow_redirects=False, timeout=timeout,
                    headers=self._headers(url, headers) if send_token else headers, auto_decompress=decompress)
                location = resp.headers.get("Location")
                if resp.status in REDIRECTS and location:
                    target = urljoin(str(resp.url), location)
                    if not same_origin_only or _origin(target) == self._origin:
                        resp.release()
                        url, params = target, None
                        if resp.status == 303:
                            method, data = "GET", None
                        continue
                if resp.status >= 500:
                    metrics.UPSTREAM_ERRORS.labels("status_5xx").inc()
                return resp
            raise UpstreamUnavailable(f"too many redirects from {path}")

    async def fetch(self, method: str, path: str, *, params: Any = None, data: Any = None,
                    headers: dict[str, str] | None = None, timeout: float | None = None,
                    send_token: bool = True) -> UpstreamResponse:
        """Send a request, follow redirects, and read the whole (small) answer."""
        resp = await self._send(method, self.absolute(path), headers=dict(headers or {}), params=params, data=data,
                                timeout=self._timeout(timeout or self.settings.upstream_timeout * 2),
                                send_token=send_token)
        try:
            with _failures_mapped(f"reading {method} {path}"):
                body = await resp.read()
        finally:
            resp.release()
        return UpstreamResponse(resp.status, resp.headers, body, str(resp.url))

    async def head_file(self, path: str, timeout: float | None = None) -> UpstreamResponse:
        """HEAD a resolve URL the way a client does: follow same-origin redirects only."""
        resp = await self._send("HEAD", self.url(path), headers={"Accept-Encoding": "identity"},
                                timeout=self._timeout(timeout or self.settings.upstream_timeout),
                                same_origin_only=True)
        resp.release()
        return UpstreamResponse(resp.status, resp.headers, b"", str(resp.url))

    async def open_stream(self, path: str, start: int = 0, end: int | None = None,
                          extra_headers: dict[str, str] | None = None, direct: bool = False) -> aiohttp.ClientResponse:
        """GET file bytes (optionally a range), following every redirect. The caller releases it.

        ``path`` is an upstream path, or an absolute URL (another replica: it never gets the token, and
        ``direct`` sends the request past any proxy). Returns the final response whatever its status;
        raises UpstreamUnavailable on connection errors.
        """
        headers = {"Accept-Encoding": "identity", **(extra_headers or {})}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        return await self._send("GET", self.absolute(path), headers=headers, timeout=self._timeout(None),
                                direct=direct, decompress=False)

    def range_connection(self) -> RangeConnection | None:
        """A blocking connection for a fill's ranged parts (``ranged.py``); None in offline mode or before start."""
        if self.settings.offline or self.ssl_context is None:
            return None
        return RangeConnection(self.ssl_context, self.settings.upstream_timeout)

    def range_headers(self, url: str) -> dict[str, str]:
        """Headers for a ranged part sent on a ``RangeConnection``: as ``open_stream`` sends them."""
        return tracing.inject(self._headers(url, {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}))

    def absolute(self, path: str) -> str:
        """``path`` as an absolute URL (upstream paths get the upstream's origin; URLs stay as they are)."""
        return path if path.startswith(("http://", "https://")) else self.url(path)


async def iter_body(resp: aiohttp.ClientResponse, skip: int = 0) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, minus its first ``skip`` bytes.

    ``skip`` is for an upstream that ignored our Range and answered 200 with the whole file.
    """
    async for chunk in resp.content.iter_any():
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk, skip = chunk[skip:], 0
        metrics.UPSTREAM_BYTES.inc(len(chunk))
        yield chunk
