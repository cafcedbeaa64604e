"""A file download recorded with its outcome, whatever happens: refused, answered, aborted, complete.

The event is journaled before a byte of the file is sent (``begin``) and again when the answer ends
(``end``), or once for an answer that is only an error (``single``): see ``hubproxy/audit``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

from hubproxy.audit.downloads import AuditLog
from hubproxy.auth.identity import Authenticated
from hubproxy.hub.errors import HubError
from hubproxy.hub.routing import Route
from hubproxy.hub.serving import BodyResponse
from hubproxy.observability import metrics

#: What ``HubApi`` hands over: admits the caller (recording who it is) and produces the answer.
Answer = Callable[[dict[str, Any]], Awaitable[BodyResponse]]


#: Error codes that mean "you may not have this": refused attempts, recorded for HEAD requests too.
ACCESS_REFUSALS = frozenset({"RepoNotFound", "GatedRepo"})


async def recorded_download(audit: AuditLog, request: Request, route: Route, client_ip: str | None,
                            answer: Answer, as_hub_error: Callable[[BaseException], HubError]) -> BodyResponse:
    """Run ``answer`` and journal the download it makes, or the refusal it raises.

    A GET is always recorded. A HEAD (the metadata request every client sends first, often the only
    one when it is refused) is recorded only when access is refused, so that refused attempts show
    in the trail without a journal write on every cached HEAD.
    """
    head = request.method == "HEAD"
    t0 = time.monotonic()
    event: dict[str, Any] = {
        "ts": time.time(), "principal": None, "token_id": None, "project": None, "client_ip": client_ip,
        "user_agent": request.headers.get("user-agent", "")[:500], "repo_type": route.repo_type,
        "repo_id": route.repo_id, "revision": route.revision, "path": route.path,
        "range": (request.headers.get("range") or "")[:200] or None,
    }
    try:
        response = await answer(event)
    except Exception as exc:  # noqa: BLE001 - every outcome is recorded; the error is then answered as usual
        error = exc if isinstance(exc, HubError) else as_hub_error(exc)
        if head and not (error.code in ACCESS_REFUSALS or error.status in (401, 403)):
            raise error from None
        audit.single({**event, "commit": error.headers.get("X-Repo-Commit"), "bytes_sent": 0, "status": error.status,
                      "cache": None, "duration": time.monotonic() - t0, "complete": True, "outcome": "refused",
                      "error": error.code or str(error.status)})
        raise error from None
    if head:
        return response
    event.update(commit=response.headers.get("X-Repo-Commit"), status=response.status, cache=response.source)
    event_id = audit.begin(event)

    def done(sent: int, complete: bool) -> None:
        if sent:
            metrics.SERVED_BYTES.labels(response.source or "unknown").inc(sent)
        audit.end(event_id, {**event, "bytes_sent": sent, "duration": time.monotonic() - t0, "complete": complete,
                             "outcome": "complete" if complete else "aborted"})

    response.on_done = done
    return response


def note_caller(event: dict[str, Any], who: Authenticated | None) -> None:
    """Record who the caller is, once known."""
    if who is not None:
        event.update(principal=who.principal.name, token_id=who.token_id)
