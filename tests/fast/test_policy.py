"""Project policies: which rule covers a repo, and what each role may read and pull."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from hubproxy.auth import identity, policy
from hubproxy.auth.policy import Grant, Project, Rule, decide, parse_rules
from hubproxy.errors import Invalid


def project(allow: list[str], deny: list[str] = (), pull_new: bool = True) -> Project:  # type: ignore[assignment]
    return Project(1, "p", parse_rules(list(allow), list(deny)), pull_new)


@pytest.mark.parametrize(("pattern", "repo_type", "repo_id", "matches"), [
    ("models:alice/*", "model", "alice/x", True), ("models:alice/*", "dataset", "alice/x", False),
    ("model:alice/*", "model", "alice/x", True), ("alice/*", "space", "alice/x", True),
    ("models:Alice/*", "model", "ALICE/X", True), ("models:gpt2", "model", "gpt2", True),
    ("models:gpt2", "model", "gpt2-large", False), ("datasets:*/wiki?", "dataset", "a/wiki2", True),
])
def test_rule_matching(pattern: str, repo_type: str, repo_id: str, matches: bool) -> None:
    assert Rule("allow", pattern).matches(repo_type, repo_id) is matches


def test_deny_wins_over_allow() -> None:
    p = project(["models:alice/*"], ["models:alice/secret*"])
    assert p.covers("model", "alice/open") and not p.covers("model", "alice/secret-model")
    assert not p.covers("model", "ALICE/Secret-Model")  # repo ids are case-insensitive
    assert not project([]).covers("model", "alice/open")  # nothing allowed: nothing covered


def test_a_pattern_names_a_real_type() -> None:
    with pytest.raises(Invalid):
        parse_rules(["buckets:x/*"], [])


def test_decisions_by_role(engine: Engine) -> None:
    admin = identity.create_principal(engine, "root", is_admin=True)
    viewer, dev, stranger = (identity.create_principal(engine, n) for n in ("viewer", "dev", "stranger"))
    # No project yet: the policy layer is off (whether anonymous callers get in at all is ``anonymous_access``).
    assert decide(engine, dev, "model", "alice/x", None) == Grant(True, True, None)
    assert decide(engine, None, "model", "alice/x", None) == Grant(True, True, None)
    policy.create_project(engine, "research", ["models:alice/*"], ["models:alice/gated*"])
    policy.create_project(engine, "frozen", ["models:bob/*"], [], pull_new=False)
    policy.set_member(engine, "research", "viewer", "viewer")
    policy.set_member(engine, "research", "dev", "developer")
    policy.set_member(engine, "frozen", "dev", "maintainer")
    assert decide(engine, admin, "model", "anything/at-all", None) == Grant(True, True, None)
    assert decide(engine, viewer, "model", "alice/x", None) == Grant(True, False, "research")  # reads what is stored
    assert decide(engine, dev, "model", "alice/x", None) == Grant(True, True, "research")
    assert decide(engine, dev, "model", "alice/gated-1", None) == Grant(False, False, None)
    assert decide(engine, dev, "dataset", "alice/x", None) == Grant(False, False, None)
    assert decide(engine, dev, "model", "bob/y", None) == Grant(True, False, "frozen")  # the project pulls nothing new
    assert decide(engine, stranger, "model", "alice/x", None) == Grant(False, False, None)
    # Anonymous callers get what the anonymous project gives a developer, or nothing.
    assert decide(engine, None, "model", "alice/x", "research") == Grant(True, True, "research")
    assert decide(engine, None, "model", "alice/x", None) == Grant(False, False, None)
