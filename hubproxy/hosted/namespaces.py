"""Assigning hosted namespaces to projects (admins only, through ``AdminService``).

Assigning a namespace makes every id in it hosted: what was cached from the upstream under it is
purged at once, so a mirrored repo can never be served where a hosted one is meant.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import Engine

from hubproxy.auth.policy import get_project
from hubproxy.cache import manage
from hubproxy.errors import Conflict, Invalid, NotFound
from hubproxy.hosted import rows
from hubproxy.store.base import BlobStore

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,95}")


def check_name(name: str) -> str:
    lowered = name.lower()
    if not _NAME.fullmatch(lowered) or "--" in lowered or ".." in lowered:
        raise Invalid(f"invalid namespace name {name[:100]!r}")
    return lowered


def list_namespaces(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        assigned = rows.namespace_projects(conn)
        return [{"name": n, "project": p, "repos": rows.hosted_count_in(conn, n)} for n, p in sorted(assigned.items())]


def assign(engine: Engine, store: BlobStore, name: str, project: str) -> dict[str, object]:
    """Give a namespace to a project; repos cached from the upstream in it are purged."""
    name = check_name(name)
    owner = get_project(engine, project)
    with engine.begin() as conn:
        rows.assign_namespace(conn, name, owner.id)
        mirrored = rows.mirrored_repos_in(conn, name)
    for repo_type, repo_id in mirrored:
        manage.purge(engine, store, repo_type, repo_id)
    return {"name": name, "project": owner.name, "purged": [f"{t}:{r}" for t, r in mirrored]}


def remove(engine: Engine, name: str) -> dict[str, object]:
    """Take a namespace from its project; refused while it holds hosted repos (delete or move them first)."""
    name = check_name(name)
    with engine.begin() as conn:
        held = rows.hosted_count_in(conn, name)
        if held:
            raise Conflict(f"namespace {name!r} holds {held} hosted repos; delete or move them first")
        if not rows.remove_namespace(conn, name):
            raise NotFound(f"namespace {name!r} is not assigned")
    return {"name": name, "removed": True}


def write_events(engine: Engine, **filters: object) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return rows.write_events(conn, **filters)  # type: ignore[arg-type]
