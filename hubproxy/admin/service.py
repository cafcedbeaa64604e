"""Admin operations, each written once: who may do it, doing it, and the admin event that records it.

The admin REST API, the command line and any future UI are thin callers of ``AdminService``.
Every method is blocking (database and store calls): call it from a worker thread on a server.
Rules enforced here, whatever the caller:

- changes need a global admin, or for a project's members a maintainer of that project;
- a token with role ``read`` never changes anything;
- upstream policy (allow/deny rules, pulling new repos) is an admin's decision: maintainers manage
  members within it;
- the last enabled admin cannot be disabled.

The operator at the command line (``Actor.operator()``) has full rights: whoever can run commands
against the data dir and database can change them anyway.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from hubproxy.audit import admin as admin_audit
from hubproxy.audit import downloads
from hubproxy.auth import identity as ident
from hubproxy.auth import policy
from hubproxy.auth.identity import Authenticated, Principal
from hubproxy.cache import manage
from hubproxy.errors import Conflict, Forbidden
from hubproxy.hosted import namespaces
from hubproxy.store.base import BlobStore


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@dataclass(frozen=True)
class Actor:
    """Who asks: a principal with its token's role, or the operator at the command line."""

    name: str
    principal: Principal | None = None
    role: str = "write"

    @classmethod
    def operator(cls) -> Actor:
        """The person running ``hubproxy admin``/``cache`` commands on this machine."""
        return cls(f"cli:{_os_user()}")

    @classmethod
    def of(cls, who: Authenticated) -> Actor:
        return cls(who.principal.name, who.principal, who.role)

    @property
    def is_admin(self) -> bool:
        return self.principal is None or self.principal.is_admin


class AdminService:
    """Users, tokens, projects, members, policies, audit queries and cache operations."""

    def __init__(self, engine: Engine, store: BlobStore | None = None, xorbs: BlobStore | None = None,
                 namespaces_changed: Callable[[], None] | None = None) -> None:
        self.xorbs = xorbs
        #: Called after a namespace is assigned or removed (the server's own view changes at once).
        self.namespaces_changed = namespaces_changed or (lambda: None)
        self.engine = engine
        self.store = store
        #: Where ``cache verify`` keeps blobs that no longer match their name.

    # -- permissions ------------------------------------------------------------------
    def _may_change(self, actor: Actor) -> None:
        if actor.role != "write":
            raise Forbidden("this token has role 'read': it can look but never change anything")

    def _admin(self, actor: Actor, change: bool = True) -> None:
        if change:
            self._may_change(actor)
        if not actor.is_admin:
            raise Forbidden("only admins may do this")

    def _maintainer(self, actor: Actor, project: str, change: bool = True) -> None:
        """An admin, or a maintainer of ``project``."""
        if change:
            self._may_change(actor)
        if actor.is_admin:
            return
        assert actor.principal is not None
        roles = policy.memberships(self.engine, actor.principal.id)
        if not any(p.name == project and role == "maintainer" for p, role in roles):
            raise Forbidden("only admins or the project's maintainers may do this")

    def _event(self, actor: Actor, action: str, target: str, before: Any = None, after: Any = None) -> None:
        admin_audit.record(self.engine, actor.name, action, target, before, after)

    # -- users ------------------------------------------------------------------------
    def bootstrap(self, actor: Actor, name: str = "admin") -> dict[str, Any]:
        """On a fresh install: the first admin and its token (returned once)."""
        self._admin(actor)
        token = ident.bootstrap(self.engine, name)
        if token is None:
            raise Conflict("this install has users already; use 'admin token-create'")
        self._event(actor, "bootstrap", name)
        return {"name": name, "token": token}

    def list_users(self, actor: Actor) -> list[dict[str, object]]:
        self._admin(actor, change=False)
        return [p.as_dict() for p in ident.list_principals(self.engine)]

    def create_user(self, actor: Actor, name: str, kind: str = "user", is_admin: bool = False,
                    fullname: str = "") -> dict[str, object]:
        self._admin(actor)
        p = ident.create_principal(self.engine, name, kind, is_admin, fullname)
        self._event(actor, "user.create", p.name, None, p.as_dict())
        return p.as_dict()

    def set_user_disabled(self, actor: Actor, name: str, disabled: bool) -> dict[str, object]:
        self._admin(actor)
        before = ident.get_principal(self.engine, name)
        after = ident.set_disabled(self.engine, name, disabled)
        self._event(actor, "user.disable" if disabled else "user.enable", after.name, before.as_dict(),
                    after.as_dict())
        return after.as_dict()

    # -- tokens -----------------------------------------------------------------------
    def list_tokens(self, actor: Actor, user: str | None = None) -> list[dict[str, object]]:
        self._admin(actor, change=False)
        return [t.as_dict() for t in ident.list_tokens(self.engine, user)]

    def create_token(self, actor: Actor, user: str, name: str = "default", role: str = "read",
                     expires_days: float | None = None) -> dict[str, object]:
        """A new token; its value is in the answer once and stored nowhere."""
        self._admin(actor)
        token, info = ident.create_token(self.engine, user, name, role,
                                         expires_days * 86400 if expires_days else None)
        self._event(actor, "token.create", f"{user}/{info.id}", None, info.as_dict())
        return {**info.as_dict(), "token": token}

    def revoke_token(self, actor: Actor, token_id: int) -> dict[str, object]:
        self._admin(actor)
        ident.revoke_token(self.engine, token_id)
        self._event(actor, "token.revoke", str(token_id))
        return {"revoked": token_id}

    # -- projects, members, policies --------------------------------------------------
    def list_projects(self, actor: Actor) -> list[dict[str, object]]:
        self._admin(actor, change=False)
        return [p.as_dict() for p in policy.list_projects(self.engine)]

    def create_project(self, actor: Actor, name: str, allow: list[str], deny: list[str],
                       pull_new: bool = True) -> dict[str, object]:
        self._admin(actor)
        p = policy.create_project(self.engine, name, allow, deny, pull_new)
        self._event(actor, "project.create", p.name, None, p.as_dict())
        return p.as_dict()

    def set_policy(self, actor: Actor, project: str, allow: list[str], deny: list[str],
                   pull_new: bool = True) -> dict[str, object]:
        """Replace a project's upstream policy: admins only (a maintainer could otherwise grant itself all)."""
        self._admin(actor)
        before = policy.get_project(self.engine, project)
        after = policy.set_policy(self.engine, project, allow, deny, pull_new)
        self._event(actor, "project.policy", after.name, before.as_dict(), after.as_dict())
        return after.as_dict()

    def set_member(self, actor: Actor, project: str, user: str, role: str | None) -> dict[str, object]:
        """Add a member, change its role, or remove it (``role`` None)."""
        self._maintainer(actor, project)
        before = policy.set_member(self.engine, project, user, role)
        self._event(actor, "project.member", f"{project}/{user}", {"role": before}, {"role": role})
        return {"project": project, "user": user, "role": role, "before": before}

    # -- hosted namespaces --------------------------------------------------------------
    def list_namespaces(self, actor: Actor) -> list[dict[str, object]]:
        self._admin(actor, change=False)
        return namespaces.list_namespaces(self.engine)

    def assign_namespace(self, actor: Actor, name: str, project: str) -> dict[str, object]:
        """Make a namespace hosted, owned by a project (admins only); cached upstream repos in it are purged."""
        self._admin(actor)
        result = namespaces.assign(self.engine, self._store(), name, project)
        self.namespaces_changed()
        self._event(actor, "namespace.assign", str(result["name"]), None, result)
        return result

    def remove_namespace(self, actor: Actor, name: str) -> dict[str, object]:
        self._admin(actor)
        result = namespaces.remove(self.engine, name)
        self.namespaces_changed()
        self._event(actor, "namespace.remove", str(result["name"]))
        return result

    def write_events(self, actor: Actor, since: float | None = None, repo: str | None = None, by: str | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
        """Changes to hosted repos (created, deleted, moved, settings, commits, branches, tags), newest first."""
        self._admin(actor, change=False)
        return namespaces.write_events(self.engine, since=since, repo_id=repo, actor=by, limit=limit)

    # -- audit ------------------------------------------------------------------------
    def download_events(self, actor: Actor, **filters: Any) -> list[dict[str, Any]]:
        self._admin(actor, change=False)
        return downloads.query(self.engine, **filters)

    def project_download_events(self, actor: Actor, project: str, **filters: Any) -> list[dict[str, Any]]:
        """A project's own download events, for its maintainers."""
        self._maintainer(actor, project, change=False)
        policy.get_project(self.engine, project)
        return downloads.query(self.engine, project=project, **filters)

    def admin_events(self, actor: Actor, since: float | None = None, by: str | None = None, limit: int = 100,
                     offset: int = 0) -> list[dict[str, Any]]:
        """Admin events, newest first; ``by`` keeps one actor's."""
        self._admin(actor, change=False)
        return admin_audit.query(self.engine, since=since, actor=by, limit=limit, offset=offset)

    # -- cache ------------------------------------------------------------------------
    def _store(self) -> BlobStore:
        if self.store is None:
            raise RuntimeError("this admin service was made without a blob store")
        return self.store

    def cache_list(self, actor: Actor) -> list[dict[str, object]]:
        self._admin(actor, change=False)
        return [r.as_dict() for r in manage.list_cached(self.engine)]

    def cache_pin(self, actor: Actor, repo_type: str, repo_id: str, revision: str | None) -> dict[str, object]:
        self._admin(actor)
        commit = manage.pin(self.engine, repo_type, repo_id, revision or "main")
        self._event(actor, "cache.pin", f"{repo_type}:{repo_id}@{commit}")
        return {"pinned": commit}

    def cache_unpin(self, actor: Actor, repo_type: str, repo_id: str, revision: str | None) -> dict[str, object]:
        self._admin(actor)
        n = manage.unpin(self.engine, repo_type, repo_id, revision)
        self._event(actor, "cache.unpin", f"{repo_type}:{repo_id}@{revision or '*'}")
        return {"unpinned": n}

    def cache_purge(self, actor: Actor, repo_type: str, repo_id: str, revision: str | None) -> dict[str, object]:
        self._admin(actor)
        count, size = manage.purge(self.engine, self._store(), repo_type, repo_id, revision)
        result = {"blobs": count, "bytes": size}
        self._event(actor, "cache.purge", f"{repo_type}:{repo_id}@{revision or '*'}", None, result)
        return result

    def cache_verify(self, actor: Actor) -> dict[str, object]:
        self._admin(actor)
        report = manage.verify(self.engine, self._store()).as_dict()
        if self.xorbs is not None:
            report["xorbs_checked"], report["xorbs_damaged"] = manage.verify_xorbs(self.xorbs)
        self._event(actor, "cache.verify", "store", None, report)
        return report

    def cache_evict(self, actor: Actor, max_bytes: int) -> dict[str, object]:
        self._admin(actor)
        evicted = manage.evict(self.engine, self._store(), max_bytes)
        self._event(actor, "cache.evict", "store", None, {"evicted": len(evicted)})
        return {"evicted": evicted}
