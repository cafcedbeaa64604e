"""Users, service accounts and API tokens.

Tokens look like Hub tokens (``hf_`` and 34 letters), so ``HF_TOKEN`` and ``hf auth login`` work
against hubproxy. Only a sha256 of each token is stored: tokens are 200 bits of randomness, so a
fast hash is enough and a database leak reveals none. Tokens can expire and be revoked; when
each was last used is recorded in batches, off the hot path.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time
from dataclasses import asdict, dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from hubproxy.errors import Conflict, Invalid, NotFound

TOKEN_ALPHABET = string.ascii_letters
TOKEN_LENGTH = 34
ROLES = ("read", "write")
KINDS = ("user", "service")


@dataclass(frozen=True)
class Principal:
    id: int
    name: str
    kind: str
    fullname: str
    is_admin: bool
    disabled: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never the token itself)."""

    id: int
    principal: str
    name: str
    prefix: str
    role: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Authenticated:
    """Who a valid token belongs to."""

    principal: Principal
    token_id: int
    token_name: str
    role: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "hf_" + "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def looks_like_token(value: str) -> bool:
    return value.startswith("hf_") and len(value) == 3 + TOKEN_LENGTH and value[3:].isalpha()


_PRINCIPAL_COLUMNS = "id, name, kind, fullname, is_admin, disabled"


def _principal(row) -> Principal:  # noqa: ANN001
    return Principal(int(row[0]), row[1], row[2], row[3], bool(row[4]), bool(row[5]))


def create_principal(engine: Engine, name: str, kind: str = "user", is_admin: bool = False,
                     fullname: str = "") -> Principal:
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}")
    if not name or not all(c.isalnum() or c in "-_." for c in name) or len(name) > 64:
        raise Invalid(f"invalid name {name!r}: letters, digits, '-', '_' and '.', at most 64")
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO principals (name, kind, fullname, is_admin, disabled, created_at) "
                              "VALUES (:n, :k, :f, :a, false, :t)"),
                         {"n": name, "k": kind, "f": fullname, "a": is_admin, "t": time.time()})
    except IntegrityError:
        raise Conflict(f"{name!r} exists already") from None
    return get_principal(engine, name)


def get_principal(engine: Engine, name: str) -> Principal:
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT {_PRINCIPAL_COLUMNS} FROM principals WHERE name = :n"), {"n": name}).first()
    if row is None:
        raise NotFound(f"no user or service account named {name!r}")
    return _principal(row)


def list_principals(engine: Engine) -> list[Principal]:
    with engine.connect() as conn:
        return [_principal(r) for r in conn.execute(text(f"SELECT {_PRINCIPAL_COLUMNS} FROM principals ORDER BY name"))]


def set_disabled(engine: Engine, name: str, disabled: bool) -> Principal:
    """Disable or enable an account. The last enabled admin cannot be disabled: nobody could undo it."""
    target = get_principal(engine, name)
    with engine.begin() as conn:
        if disabled and target.is_admin and not target.disabled:
            others = conn.execute(text("SELECT COUNT(*) FROM principals WHERE is_admin = :t AND disabled = :f "
                                       "AND id <> :i"), {"t": True, "f": False, "i": target.id}).scalar_one()
            if not others:
                raise Conflict(f"{name!r} is the last enabled admin; make another admin before disabling it")
        conn.execute(text("UPDATE principals SET disabled = :d WHERE name = :n"), {"d": disabled, "n": name})
    return get_principal(engine, name)


def create_token(engine: Engine, principal: str, name: str = "default", role: str = "read",
                 expires_in: float | None = None) -> tuple[str, TokenInfo]:
    """Make a token; the plaintext is returned once and never stored."""
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}")
    owner = get_principal(engine, principal)
    token = new_token()
    now = time.time()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tokens (principal_id, name, hash, prefix, role, created_at, expires_at) "
                          "VALUES (:p, :n, :h, :pre, :r, :t, :e)"),
                     {"p": owner.id, "n": name, "h": hash_token(token), "pre": token[:7], "r": role, "t": now,
                      "e": now + expires_in if expires_in else None})
        token_id = conn.execute(text("SELECT id FROM tokens WHERE hash = :h"), {"h": hash_token(token)}).scalar_one()
    return token, next(t for t in list_tokens(engine, principal) if t.id == token_id)


def list_tokens(engine: Engine, principal: str | None = None) -> list[TokenInfo]:
    query = ("SELECT t.id, p.name, t.name, t.prefix, t.role, t.created_at, t.expires_at, t.revoked_at, "
             "t.last_used_at FROM tokens t JOIN principals p ON p.id = t.principal_id")
    params = {}
    if principal is not None:
        query += " WHERE p.name = :n"
        params["n"] = principal
    with engine.connect() as conn:
        return [TokenInfo(*r) for r in conn.execute(text(query + " ORDER BY t.id"), params)]


def revoke_token(engine: Engine, token_id: int) -> None:
    with engine.begin() as conn:
        result = conn.execute(text("UPDATE tokens SET revoked_at = :t WHERE id = :i AND revoked_at IS NULL"),
                              {"t": time.time(), "i": token_id})
    if not result.rowcount:
        raise NotFound(f"no active token with id {token_id}")


def authenticate(engine: Engine, token: str) -> Authenticated | None:
    """The principal of a valid (known, unexpired, unrevoked, enabled) token, else None."""
    if not looks_like_token(token):
        return None
    with engine.connect() as conn:
        row = conn.execute(text(
            f"SELECT t.id, t.name, t.role, t.expires_at, t.revoked_at, "
            f"{', '.join('p.' + c.strip() for c in _PRINCIPAL_COLUMNS.split(','))} "
            "FROM tokens t JOIN principals p ON p.id = t.principal_id WHERE t.hash = :h"),
            {"h": hash_token(token)}).first()
    if row is None:
        return None
    token_id, token_name, role, expires_at, revoked_at = row[:5]
    principal = _principal(row[5:])
    if revoked_at is not None or (expires_at is not None and expires_at < time.time()) or principal.disabled:
        return None
    return Authenticated(principal, int(token_id), token_name, role)


def record_use(engine: Engine, used: dict[int, float]) -> None:
    """Write when tokens were last used (one batch)."""
    if not used:
        return
    with engine.begin() as conn:
        conn.execute(text("UPDATE tokens SET last_used_at = :t WHERE id = :i"),
                     [{"i": i, "t": t} for i, t in used.items()])


def bootstrap(engine: Engine, name: str = "admin") -> str | None:
    """On an install with no principals: create the first admin and return its token (else None)."""
    with engine.connect() as conn:
        if conn.execute(text("SELECT COUNT(*) FROM principals")).scalar_one():
            return None
    create_principal(engine, name, "user", is_admin=True, fullname="hubproxy administrator")
    token, _ = create_token(engine, name, "bootstrap", role="write")
    return token
