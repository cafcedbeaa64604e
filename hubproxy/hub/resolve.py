"""``HEAD``/``GET /{P}{repo}/resolve/{rev}/{path}``: the headers clients read, ranges, and the bytes.

Every answer is a direct 200/206 from hubproxy (``docs/protocol.md``, "Resolve: HEAD"): clients are never
sent to an upstream or CDN host, and no Xet header reaches them. With ``s3_redirect`` a stored LFS
blob is answered with a 302 to a presigned URL on the bucket, carrying the same metadata headers.
Where the bytes come from is the blob cache's decision (``cache/blobs.py``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import Request

from hubproxy.cache.blobs import BlobCache, Wanted
from hubproxy.cache.mismatch import CLOSED_RANGE_SECONDS
from hubproxy.config import Settings
from hubproxy.hub.errors import HubError, entry_not_found
from hubproxy.hub.routing import Route, resolve_url_path
from hubproxy.hub.serving import BodyResponse, parse_range
from hubproxy.repos.model import Entry, RepoRef
from hubproxy.repos.source import RepoSource
from hubproxy.store.base import is_blob_key
from hubproxy.upstream.answers import STALE_WARNING


def file_headers(commit: str, entry: Entry, path: str) -> dict[str, str]:
    """The headers clients read on every resolve answer: commit, ETag (content hash), LFS metadata."""
    name = path.rsplit("/", 1)[-1]
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    headers = {
        "X-Repo-Commit": commit,
        "ETag": f'"{entry.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{ascii_name}\";",
    }
    if entry.lfs:
        headers["X-Linked-Etag"] = f'"{entry.etag}"'
        headers["X-Linked-Size"] = str(entry.size)
    return headers


#: ``(commit, entry) -> headers`` added to a file's answer.
Announce = Callable[[str, Entry], Awaitable[dict[str, str]]]


class Resolver:
    """Answers resolve requests for repos the caller may see (``route.repo_id`` is canonical)."""

    def __init__(self, settings: Settings, source: RepoSource, cache: BlobCache) -> None:
        self.settings = settings
        self.source = source
        self.cache = cache

    async def handle(self, request: Request, route: Route, pull_refusal: HubError | None = None,
                     announce: Announce | None = None) -> BodyResponse:
        """The answer to a resolve request. ``pull_refusal``: raised instead of fetching content from the
        upstream (the caller may read what is stored, but not pull). ``announce``: more headers for an LFS file,
        given its commit and entry (hosted repos announce files they hold in Xet form)."""
        assert route.revision is not None
        repo = RepoRef(route.repo_type, route.repo_id)
        resolved = await self.source.resolve(repo, route.revision)
        commit = resolved.commit
        entry = await self.source.entry(repo, commit, route.path)
        if not entry.is_file or entry.blob is None:
            raise entry_not_found(commit)
        rng = parse_range(request.headers.get("range"), entry.size)
        if rng is not None and rng[0] > 0 and is_blob_key(entry.blob):
            rng = await self._after_mismatch(entry.blob, request.headers.get("range", ""), rng)
        headers = file_headers(commit, entry, route.path)
        if announce is not None and entry.lfs:
            headers.update(await announce(commit, entry))
        if resolved.stale:
            headers["X-HF-Warning"] = STALE_WARNING
        if self.settings.s3_redirect and entry.lfs and is_blob_key(entry.blob):
            url = await self.cache.presign(entry.blob)
            if url:
                # A different origin: clients read the metadata on this 302 itself.
                headers.update({"Location": url, "Content-Length": "0"})
                self.cache.usage.touch(entry.blob)
                response = BodyResponse(302, headers)
                response.source = "redirect"
                return response
        start, end, status = (0, entry.size, 200) if rng is None else (rng[0], rng[1], 206)
        if rng is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            if not await self._held(entry):  # HEAD promises no more than GET can keep
                await self.source.fetchable(repo, commit, route.path)
            return BodyResponse(status, headers)
        want = Wanted(entry.blob, entry.size, resolve_url_path(repo.type, repo.id, commit, route.path),
                      f"{route.path} of {repo.id} at {commit}", pull_refusal)
        served = await self.cache.serve(want, start, end)
        response = BodyResponse(status, headers, served.body)
        response.source = served.origin
        return response

    async def _held(self, entry: Entry) -> bool:
        """Whether the file's bytes are stored or being filled here."""
        key = entry.blob
        return bool(key) and is_blob_key(key) and (await self.cache.stored(key) or self.cache.fills.get(key) is not None)

    async def _after_mismatch(self, key: str, header: str, rng: tuple[int, int]) -> tuple[int, int] | None:
        """A range of a blob whose fill once failed verification: see ``cache/mismatch.py``."""
        failed_at = await self.cache.fills.mismatches.failed_at(key)
        if failed_at is None:
            return rng
        if header.replace(" ", "").endswith("-"):  # a resume: the whole file, so the client starts over
            return None
        if time.time() - failed_at < CLOSED_RANGE_SECONDS:
            raise HubError(503, "BlobFailedVerification", "the upstream recently sent wrong bytes for this file; "
                           "download it whole", {"Retry-After": str(int(CLOSED_RANGE_SECONDS))})
        return rng
