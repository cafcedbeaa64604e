"""Projects, roles and upstream policies: may this caller read this repo, and pull it from upstream?

- A project groups members (viewer: download; developer: download and pull repos not cached yet;
  maintainer: also manage the project) and has rules on repo ids (``allow``/``deny`` globs such as
  ``models:meta-llama/*`` or ``datasets:*``; a deny wins) and a ``pull_new`` switch.
- Global admins may do everything. While no project exists, the policy layer is off (zero setup).
- Anonymous callers, when allowed, act as developers of ``anonymous_project`` (or, with none named and
  no projects, freely).
- A repo the caller may not see is answered exactly like a missing one.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from hubproxy.auth.identity import Principal, get_principal
from hubproxy.errors import Conflict, Invalid, NotFound

ROLES = ("viewer", "developer", "maintainer")
RANK = {r: i for i, r in enumerate(ROLES)}


@dataclass(frozen=True)
class Rule:
    effect: str  # allow | deny
    pattern: str  # "<type>s:<glob>" or "<glob>" for every type

    def matches(self, repo_type: str, repo_id: str) -> bool:
        """Whether the rule covers the repo. Hub repo ids are case-insensitive, so matching is too."""
        if ":" in self.pattern:
            kind, glob = self.pattern.split(":", 1)
            if kind.rstrip("s") != repo_type:
                return False
        else:
            glob = self.pattern
        return fnmatch.fnmatchcase(repo_id.lower(), glob.lower())


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    rules: tuple[Rule, ...]
    pull_new: bool

    def covers(self, repo_type: str, repo_id: str) -> bool:
        if any(r.effect == "deny" and r.matches(repo_type, repo_id) for r in self.rules):
            return False
        return any(r.effect == "allow" and r.matches(repo_type, repo_id) for r in self.rules)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "pull_new": self.pull_new,
                "rules": [{"effect": r.effect, "pattern": r.pattern} for r in self.rules]}


@dataclass(frozen=True)
class Grant:
    """What a caller may do with a repo, and which project says so (None: admin or policy off)."""

    read: bool
    pull: bool
    project: str | None


def parse_rules(allow: list[str], deny: list[str]) -> tuple[Rule, ...]:
    rules = [Rule("allow", p) for p in allow] + [Rule("deny", p) for p in deny]
    for r in rules:
        if ":" in r.pattern and r.pattern.split(":", 1)[0].rstrip("s") not in ("model", "dataset", "space"):
            raise Invalid(f"bad pattern {r.pattern!r}: the type must be models, datasets or spaces")
    return tuple(rules)


def _project(row) -> Project:  # noqa: ANN001
    return Project(int(row[0]), row[1], tuple(Rule(**r) for r in json.loads(row[2])), bool(row[3]))


def create_project(engine: Engine, name: str, allow: list[str], deny: list[str], pull_new: bool = True) -> Project:
    rules = parse_rules(allow, deny)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO projects (name, rules, pull_new, created_at) VALUES (:n, :r, :p, :t)"),
                         {"n": name, "r": json.dumps([r.__dict__ for r in rules]), "p": pull_new, "t": time.time()})
    except IntegrityError:
        raise Conflict(f"project {name!r} exists already") from None
    return get_project(engine, name)


def set_policy(engine: Engine, name: str, allow: list[str], deny: list[str], pull_new: bool) -> Project:
    get_project(engine, name)
    rules = parse_rules(allow, deny)
    with engine.begin() as conn:
        conn.execute(text("UPDATE projects SET rules = :r, pull_new = :p WHERE name = :n"),
                     {"n": name, "r": json.dumps([r.__dict__ for r in rules]), "p": pull_new})
    return get_project(engine, name)


def get_project(engine: Engine, name: str) -> Project:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, name, rules, pull_new FROM projects WHERE name = :n"), {"n": name}).first()
    if row is None:
        raise NotFound(f"no project named {name!r}")
    return _project(row)


def list_projects(engine: Engine) -> list[Project]:
    with engine.connect() as conn:
        return [_project(r) for r in conn.execute(text("SELECT id, name, rules, pull_new FROM projects ORDER BY name"))]


def set_member(engine: Engine, project: str, principal: str, role: str | None) -> str | None:
    """Add or change a member's role; ``role=None`` removes the member. Returns the role it had before."""
    if role is not None and role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}")
    proj, who = get_project(engine, project), get_principal(engine, principal)
    with engine.begin() as conn:
        before = conn.execute(text("SELECT role FROM project_members WHERE project_id = :p AND principal_id = :u"),
                              {"p": proj.id, "u": who.id}).scalar()
        conn.execute(text("DELETE FROM project_members WHERE project_id = :p AND principal_id = :u"),
                     {"p": proj.id, "u": who.id})
        if role is not None:
            conn.execute(text("INSERT INTO project_members (project_id, principal_id, role) VALUES (:p, :u, :r)"),
                         {"p": proj.id, "u": who.id, "r": role})
    return before


def memberships(engine: Engine, principal_id: int) -> list[tuple[Project, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT p.id, p.name, p.rules, p.pull_new, m.role FROM projects p JOIN project_members m "
            "ON m.project_id = p.id WHERE m.principal_id = :u ORDER BY p.name"), {"u": principal_id}).all()
    return [(_project(r[:4]), r[4]) for r in rows]


def decide(engine: Engine, principal: Principal | None, repo_type: str, repo_id: str,
           anonymous_project: str | None) -> Grant:
    """What ``principal`` (None: anonymous) may do with the repo."""
    if principal is not None and principal.is_admin:
        return Grant(True, True, None)
    projects = list_projects(engine)
    if not projects and (principal is not None or anonymous_project is None):
        return Grant(True, True, None)  # no projects yet: the policy layer is off
    if principal is None:
        if anonymous_project is None:
            return Grant(False, False, None)
        scopes = [(p, "developer") for p in projects if p.name == anonymous_project]
    else:
        scopes = memberships(engine, principal.id)
    best: Grant = Grant(False, False, None)
    for project, role in scopes:
        if project.covers(repo_type, repo_id):
            pull = project.pull_new and RANK[role] >= RANK["developer"]
            if pull or not best.read:
                best = Grant(True, pull, project.name)
            if pull:
                break
    return best
