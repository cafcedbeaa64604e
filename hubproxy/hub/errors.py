"""Hub-style errors: status, ``X-Error-Code``, ``X-Error-Message`` and a JSON body.

Clients read the headers (on HEAD they are the only signal), so every error carries them.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.responses import Response


class HubError(Exception):
    """An error answered the way the Hub answers it."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def to_response(self) -> Response:
        """Render as a response with the Hub's error headers and JSON body."""
        headers = dict(self.headers)
        if self.code:
            headers["X-Error-Code"] = self.code
        # Header values must be latin-1 and single-line.
        message = scrub(self.message)
        headers["X-Error-Message"] = _header_safe(message)
        body = json.dumps({"error": message}).encode()
        return Response(body, status_code=self.status, headers=headers, media_type="application/json")


#: Origins of the upstream, which no answer to a client may name (they are internal addresses).
_HIDDEN: set[str] = set()


def hide_origin(url: str) -> None:
    """Never let ``url`` (its scheme and host, and its host alone) appear in an error message."""
    parts = urlsplit(url)
    if parts.netloc:
        _HIDDEN.update({f"{parts.scheme}://{parts.netloc}", parts.netloc})


def scrub(text: str) -> str:
    """``text`` with every hidden origin replaced (longest first, so a URL goes before its host)."""
    for origin in sorted(_HIDDEN, key=len, reverse=True):
        if origin in text:
            text = text.replace(origin, "(upstream)")
    return text


def _header_safe(text: str) -> str:
    cleaned = " ".join(text.split())
    return cleaned.encode("latin-1", "replace").decode("latin-1")[:1000]


def repo_not_found(authenticated: bool = False) -> HubError:
    """A missing repo (or one the caller may not see): 401 anonymous, 404 authenticated."""
    return HubError(401 if not authenticated else 404, "RepoNotFound", "Repository not found")


def revision_not_found(rev: str) -> HubError:
    return HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")


def entry_not_found(commit: str | None, message: str = "Entry not found") -> HubError:
    headers = {"X-Repo-Commit": commit} if commit else {}
    return HubError(404, "EntryNotFound", message, headers)


def bad_request(message: str, code: str = "BadRequest") -> HubError:
    return HubError(400, code, message)


def upstream_unreachable(what: str) -> HubError:
    return HubError(502, "UpstreamUnavailable", f"Upstream hub unreachable and hubproxy has not cached {what}")


def upstream_timeout(what: str) -> HubError:
    return HubError(504, "UpstreamTimeout", f"Upstream hub did not answer in time and hubproxy has not cached {what}")


def offline_miss(what: str) -> HubError:
    return HubError(504, "OfflineCacheMiss", f"hubproxy is offline and has not cached {what}")
