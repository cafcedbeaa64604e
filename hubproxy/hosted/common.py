"""What the hosted routes share: the target of a request, its audit fields, JSON bodies, refusals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from hubproxy.auth.identity import Authenticated
from hubproxy.hosted.access import Owner, Rights
from hubproxy.hosted.rows import HostedRepo
from hubproxy.hub.errors import HubError, bad_request
from hubproxy.limits import BodyTooLarge, read_body
from hubproxy.repos.model import RepoRef

MAX_JSON_BODY = 1024 * 1024
PRS_DISABLED = "Pull requests are disabled on this server"


@dataclass(frozen=True)
class Target:
    """A repo id in a hosted namespace: its owner, the repo if it exists, and the caller's rights."""

    owner: Owner
    repo: HostedRepo | None
    rights: Rights

    @property
    def ref(self) -> RepoRef:
        assert self.repo is not None
        return RepoRef(self.repo.type, self.repo.id)


def forbidden(message: str) -> HubError:
    return HubError(403, None, message)


async def json_body(request: Request, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    try:
        data = json.loads(await read_body(request, limit) or b"{}")
    except BodyTooLarge as exc:
        raise HubError(413, "PayloadTooLarge", str(exc)) from None
    except ValueError:
        raise bad_request("The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object")
    return data


def audit_of(who: Authenticated, ip: str | None) -> dict[str, Any]:
    return {"actor": who.principal.name, "token_id": who.token_id, "client_ip": ip}
