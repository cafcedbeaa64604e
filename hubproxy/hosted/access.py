"""Which namespaces are hosted, and what a caller may do with a hosted repo.

A namespace is hosted when an admin assigned it to a project, or when it is a user's own name
(personal namespaces, on unless ``personal_namespaces`` is off). A repo id in a hosted namespace is
never looked up upstream, whether the repo exists here or not.

Rights follow the owning project's roles (viewer reads; developer also creates repos and pushes;
maintainer also manages branches, tags, settings and deletion); a personal namespace's user is its
maintainer; admins may do everything. Visibility widens reading: ``internal`` to every authenticated
caller, ``public`` to anyone hubproxy serves. A token with role ``read`` never writes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine

from hubproxy.auth.identity import Authenticated, Principal, get_principal
from hubproxy.auth.policy import memberships
from hubproxy.db.models import principals
from hubproxy.errors import NotFound
from hubproxy.hosted import rows

VISIBILITIES = ("private", "internal", "public")


@dataclass(frozen=True)
class Owner:
    """Who owns a hosted namespace: a project, or (personal namespace) a user."""

    namespace: str
    project: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class Rights:
    read: bool
    write: bool
    manage: bool
    project: str | None


def rights(who: Authenticated | None, owner: Owner, visibility: str, role: str | None) -> Rights:
    """What a caller with ``role`` in the owning project (None: no member) may do with a repo."""
    if who is None:
        return Rights(visibility == "public", False, False, owner.project)
    principal = who.principal
    if principal.is_admin:
        role = "admin"
    elif owner.user is not None and principal.name.lower() == owner.user.lower():
        role = "owner"
    writes = who.role != "read"
    read = role is not None or visibility in ("internal", "public")
    write = writes and role in ("developer", "maintainer", "owner", "admin")
    manage = writes and role in ("maintainer", "owner", "admin")
    return Rights(read, write, manage, owner.project)


class Namespaces:
    """The hosted namespaces (read from the database at most every ``cache_seconds``) and callers' roles."""

    def __init__(self, engine: Engine, personal: bool, cache_seconds: float) -> None:
        self.engine = engine
        self.personal = personal
        self.cache_seconds = cache_seconds
        self._owners: dict[str, Owner] = {}
        self._read_at = 0.0
        self._lock = asyncio.Lock()
        self._roles: dict[int, tuple[dict[str, str], float]] = {}

    def invalidate(self) -> None:
        self._read_at = 0.0
        self._roles.clear()

    async def owner(self, namespace: str) -> Owner | None:
        """The owner of a namespace, or None if it is not hosted (mirrored from the upstream)."""
        if time.time() - self._read_at >= self.cache_seconds:
            async with self._lock:
                if time.time() - self._read_at >= self.cache_seconds:
                    self._owners = await asyncio.to_thread(self._load)
                    self._read_at = time.time()
        return self._owners.get(namespace.lower())

    def _load(self) -> dict[str, Owner]:
        with self.engine.connect() as conn:
            owners: dict[str, Owner] = {}
            if self.personal:
                for (name,) in conn.execute(select(principals.c.name)):
                    owners[name.lower()] = Owner(name.lower(), user=name)
            for name, project in rows.namespace_projects(conn).items():
                owners[name] = Owner(name, project=project)
        return owners

    async def role(self, who: Authenticated | None, owner: Owner) -> str | None:
        """The caller's role in the project owning the namespace (None: no member, or a personal namespace)."""
        if who is None or owner.project is None:
            return None
        pid = who.principal.id
        hit = self._roles.get(pid)
        if hit is None or time.time() - hit[1] >= self.cache_seconds:
            found = await asyncio.to_thread(memberships, self.engine, pid)
            hit = ({project.name: role for project, role in found}, time.time())
            self._roles[pid] = hit
        return hit[0].get(owner.project)

    async def of_member(self, who: Authenticated) -> list[tuple[str, str, str]]:
        """(namespace, project, role) of every assigned namespace whose project the caller belongs to."""
        await self.owner("")
        found = []
        for name, owner in sorted(self._owners.items()):
            role = await self.role(who, owner) if owner.project else None
            if role is not None:
                found.append((name, owner.project or "", role))
        return found

    async def may_read(self, user: str, repo_type: str, repo_id: str) -> bool:
        """Whether a user (by name) may read a hosted repo now (for the Xet CAS, which has no hubproxy token)."""

        def look() -> tuple[Principal | None, str | None]:
            try:
                principal = get_principal(self.engine, user)
            except NotFound:
                return None, None
            with self.engine.connect() as conn:
                repo = rows.find_repo(conn, repo_type, repo_id)
            return principal, repo.visibility if repo else None

        principal, visibility = await asyncio.to_thread(look)
        owner = await self.owner(repo_id.split("/")[0]) if "/" in repo_id else None
        if principal is None or principal.disabled or visibility is None or owner is None:
            return False
        return (await self.rights(Authenticated(principal, 0, "xet", "read"), owner, visibility)).read

    async def rights(self, who: Authenticated | None, owner: Owner, visibility: str) -> Rights:
        return rights(who, owner, visibility, await self.role(who, owner))
