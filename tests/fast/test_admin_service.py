"""Admin operations' rules, in process: roles of tokens, maintainers' reach, the last admin, the audit of changes."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy.engine import Engine

from hubproxy.admin import schema
from hubproxy.admin.service import Actor, AdminService
from hubproxy.audit.downloads import COLUMNS, to_csv
from hubproxy.auth import identity as ident
from hubproxy.errors import Conflict, Forbidden, Invalid


def actor(engine: Engine, name: str, role: str = "write") -> Actor:
    return Actor(name, ident.get_principal(engine, name), role)


@pytest.fixture
def service(engine: Engine) -> AdminService:
    svc = AdminService(engine)
    op = Actor.operator()
    svc.bootstrap(op, "root")
    svc.create_user(op, "lead")
    svc.create_user(op, "bob")
    svc.create_project(op, "team", ["models:acme/*"], ["models:acme/secret-*"])
    svc.create_project(op, "other", ["models:gpt2"], [])
    svc.set_member(op, "team", "lead", "maintainer")
    return svc


def test_a_read_token_never_changes_anything(service: AdminService, engine: Engine) -> None:
    reader = actor(engine, "root", role="read")
    assert [u["name"] for u in service.list_users(reader)] == ["bob", "lead", "root"]  # reading is fine
    for change in (lambda: service.create_user(reader, "mallory", is_admin=True),
                   lambda: service.create_token(reader, "bob", role="write"),
                   lambda: service.set_user_disabled(reader, "bob", True),
                   lambda: service.set_member(reader, "team", "bob", "maintainer"),
                   lambda: service.create_project(reader, "x", ["*"], [])):
        with pytest.raises(Forbidden, match="read"):
            change()
    assert [u["name"] for u in service.list_users(reader)] == ["bob", "lead", "root"]
    assert service.list_tokens(reader, "bob") == []


def test_maintainers_manage_members_not_policy(service: AdminService, engine: Engine) -> None:
    lead = actor(engine, "lead")
    with pytest.raises(Forbidden):
        service.set_policy(lead, "team", ["*"], [], True)
    with pytest.raises(Forbidden):
        service.set_member(lead, "other", "bob", "viewer")
    with pytest.raises(Forbidden):
        service.create_project(lead, "mine", ["*"], [])
    result = service.set_member(lead, "team", "bob", "developer")
    assert result["before"] is None and result["role"] == "developer"
    assert service.set_member(lead, "team", "bob", "viewer")["before"] == "developer"
    events = service.admin_events(Actor.operator(), limit=10, offset=0)
    member = [e for e in events if e["action"] == "project.member" and e["target"] == "team/bob"]
    assert [(e["before"], e["after"]) for e in member] == [({"role": "developer"}, {"role": "viewer"}),
                                                           ({"role": None}, {"role": "developer"})]
    assert all(e["actor"] == "lead" for e in member)
    assert service.project_download_events(lead, "team", limit=10, offset=0) == []
    with pytest.raises(Forbidden):
        service.project_download_events(lead, "other", limit=10, offset=0)


def test_the_last_enabled_admin_cannot_be_disabled(service: AdminService, engine: Engine) -> None:
    root = actor(engine, "root")
    with pytest.raises(Conflict, match="last enabled admin"):
        service.set_user_disabled(root, "root", True)
    service.create_user(root, "second", is_admin=True)
    assert service.set_user_disabled(root, "root", True)["disabled"] is True  # another admin is left
    with pytest.raises(Conflict):
        service.set_user_disabled(Actor.operator(), "second", True)


def test_csv_export_never_carries_a_formula() -> None:
    row = dict.fromkeys(COLUMNS)
    row.update({"user_agent": '=HYPERLINK("http://evil/","x")', "path": "+cmd|' /C calc'!A0", "repo_id": "@SUM(1)",
                "principal": "-2+3", "bytes_sent": 5})
    cells = list(csv.DictReader(io.StringIO(to_csv([row]))))[0]
    assert cells["user_agent"].startswith("'=") and cells["path"].startswith("'+")
    assert cells["repo_id"].startswith("'@") and cells["principal"].startswith("'-") and cells["bytes_sent"] == "5"


@pytest.mark.parametrize("bad", ["a\x00b", "line\nbreak", "", "x" * 2000])
def test_admin_strings_are_checked(bad: str) -> None:
    with pytest.raises(Invalid):
        schema.check({"name": bad}, schema.USER_BODY, "body")
