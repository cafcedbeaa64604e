"""Signatures with the cluster secret (``hub/relay.py`` makes it): what lets a relay header, an upload link, a
xorb link or a Xet token authorize itself on any replica without a database lookup."""

from __future__ import annotations

import hashlib
import hmac
import time


def mac(secret: bytes, *parts: str) -> str:
    """The signature of ``parts`` (joined with ``|``)."""
    return hmac.new(secret, "|".join(parts).encode(), hashlib.sha256).hexdigest()


def valid(secret: bytes, signature: str, *parts: str) -> bool:
    """Whether ``signature`` signs ``parts`` (compared in constant time)."""
    return hmac.compare_digest(signature, mac(secret, *parts))


def unexpired(expires: str) -> bool:
    """An expiry (unix seconds, as text) still in the future."""
    return expires.isascii() and expires.isdigit() and int(expires) > time.time()
