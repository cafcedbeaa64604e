"""Xet access tokens: what hubproxy's CAS accepts as ``Authorization: Bearer``.

A token names a repo, a scope (``read`` or ``write``), the user it was issued to and an expiry, and is
signed with the cluster secret, so any replica checks it without a database lookup. It is issued by
``xet-read-token`` / ``xet-write-token`` to callers with those rights on that repo, and it is never a
hubproxy token: it works on the CAS routes only.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

from hubproxy import signing
from hubproxy.hub.errors import HubError

VALIDITY = 3600


@dataclass(frozen=True)
class XetGrant:
    repo_type: str
    repo_id: str
    scope: str  # read | write
    user: str
    expires: int


def issue(secret: bytes, grant: XetGrant) -> str:
    body = base64.urlsafe_b64encode(json.dumps([grant.repo_type, grant.repo_id, grant.scope, grant.user,
                                                grant.expires]).encode()).decode().rstrip("=")
    return f"xet_{body}.{signing.mac(secret, 'xet', body)}"


def check(secret: bytes, header: str, scope: str) -> XetGrant:
    """The grant a request's bearer token carries, if valid for ``scope`` (write covers read)."""
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    body, _, sig = token.removeprefix("xet_").partition(".")
    if not token.startswith("xet_") or not signing.valid(secret, sig, "xet", body):
        raise HubError(401, None, "Invalid or missing Xet token")
    fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    grant = XetGrant(*fields)
    if grant.expires < time.time():
        raise HubError(401, None, "The Xet token has expired; ask for a new one")
    if scope == "write" and grant.scope != "write":
        raise HubError(403, None, "This Xet token may only read")
    return grant
