"""``hubproxy admin ...``: users, tokens, projects, members and the audit trail, through ``AdminService``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

from hubproxy.admin.service import Actor, AdminService
from hubproxy.audit.downloads import to_csv
from hubproxy.cli.common import add_command, command_settings, open_database, printer
from hubproxy.hosted.rows import WRITE_COLUMNS
from hubproxy.store import make_store

#: Commands that only read: they never create or migrate a database.
READ_ONLY = {"user-list", "token-list", "project-list", "audit", "namespace-list", "audit-writes"}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    admin = sub.add_parser("admin", help="users, service accounts, tokens, projects and the audit trail")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)

    def cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        return add_command(admin_sub, name, help_text, "to find the database",
                           "data folder (its SQLite database, by default)")

    boot = cmd("bootstrap", "on a fresh install: create the first admin and print its token once")
    boot.add_argument("--name", default="admin")
    user_add = cmd("user-create", "create a user or service account")
    user_add.add_argument("name")
    user_add.add_argument("--service", action="store_true", help="a service account, not a person")
    user_add.add_argument("--admin", action="store_true", help="a global admin")
    user_add.add_argument("--fullname", default="")
    cmd("user-list", "list users and service accounts")
    for verb in ("disable", "enable"):
        cmd(f"user-{verb}", f"{verb} a user or service account (its tokens stop or resume working)").add_argument("name")
    tok = cmd("token-create", "create a token for a user and print it once")
    tok.add_argument("user")
    tok.add_argument("--name", default="default", help="the token's display name")
    tok.add_argument("--role", choices=["read", "write"], default="read",
                     help="read: may download and look, never change anything; write: may also change")
    tok.add_argument("--expires-days", type=float, help="lifetime in days (default: no expiry)")
    cmd("token-list", "list tokens (never their values)").add_argument("user", nargs="?")
    cmd("token-revoke", "revoke a token by id").add_argument("id", type=int)
    for verb, help_text in (("project-create", "create a project with an upstream policy"),
                            ("policy-set", "replace a project's upstream policy")):
        p = cmd(verb, help_text)
        p.add_argument("project")
        p.add_argument("--allow", action="append", default=[], help="repo glob, e.g. models:meta-llama/* (repeatable)")
        p.add_argument("--deny", action="append", default=[], help="repo glob that wins over --allow (repeatable)")
        p.add_argument("--cached-only", action="store_true", help="members may not pull repos not cached yet")
    cmd("project-list", "list projects and their policies")
    mem = cmd("member-set", "add a member to a project, change its role, or remove it (--role none)")
    mem.add_argument("project")
    mem.add_argument("user")
    mem.add_argument("--role", required=True, choices=["viewer", "developer", "maintainer", "none"])
    ns = cmd("namespace-assign", "make a namespace hosted, owned by a project (cached upstream repos in it are purged)")
    ns.add_argument("name")
    ns.add_argument("project")
    cmd("namespace-list", "list hosted namespaces and their projects")
    cmd("namespace-remove", "stop hosting a namespace (refused while it holds hosted repos)").add_argument("name")
    writes = cmd("audit-writes", "changes to hosted repos, newest first")
    writes.add_argument("--repo", help="only this repo's changes")
    writes.add_argument("--actor", help="only this user's changes")
    writes.add_argument("--limit", type=int, default=100)
    writes.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default="table")
    aud = cmd("audit", "download events, newest first")
    aud.add_argument("--since", help="ISO date/time or unix seconds")
    aud.add_argument("--until", help="ISO date/time or unix seconds")
    aud.add_argument("--user", help="only this user's or service account's downloads")
    aud.add_argument("--repo", help="only this repo id")
    aud.add_argument("--limit", type=int, default=100)
    aud.add_argument("--offset", type=int, default=0)
    aud.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default="table")


def _when(value: str | None) -> float | None:
    """ISO 8601 or unix seconds."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value).timestamp()


def run(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    cmd = args.admin_command
    engine = open_database(settings, create=cmd not in READ_ONLY)
    store = make_store(settings) if cmd == "namespace-assign" else None  # it purges cached repos
    service, actor, out = AdminService(engine, store), Actor.operator(), printer(args)
    try:
        if cmd == "bootstrap":
            r = service.bootstrap(actor, args.name)
            out(r, f"created admin {args.name!r}; its token (shown once, keep it safe):\n{r['token']}")
        elif cmd == "user-create":
            p = service.create_user(actor, args.name, "service" if args.service else "user", args.admin, args.fullname)
            out(p, f"created {p['kind']} {p['name']!r}{' (admin)' if p['is_admin'] else ''}")
        elif cmd == "user-list":
            rows = service.list_users(actor)
            out(rows, "\n".join(f"{p['name']:32} {p['kind']:8} {'admin' if p['is_admin'] else '':6} "
                                f"{'disabled' if p['disabled'] else ''}" for p in rows))
        elif cmd in ("user-disable", "user-enable"):
            p = service.set_user_disabled(actor, args.name, cmd == "user-disable")
            out(p, f"{p['name']!r} is {'disabled' if p['disabled'] else 'enabled'}")
        elif cmd == "token-create":
            t = service.create_token(actor, args.user, args.name, args.role, args.expires_days)
            out(t, f"token {t['id']} for {args.user!r} (shown once):\n{t['token']}")
        elif cmd == "token-list":
            rows = service.list_tokens(actor, args.user)
            out(rows, "\n".join(f"{t['id']:5} {t['principal']:24} {t['name']:20} {t['prefix']}... {t['role']:5} "
                                f"{'revoked' if t['revoked_at'] else ''}" for t in rows))
        elif cmd == "token-revoke":
            out(service.revoke_token(actor, args.id), f"revoked token {args.id}")
        elif cmd in ("project-create", "policy-set"):
            op = service.create_project if cmd == "project-create" else service.set_policy
            proj = op(actor, args.project, args.allow, args.deny, not args.cached_only)
            out(proj, f"project {proj['name']!r}: {len(proj['rules'])} rules, "  # type: ignore[arg-type]
                      f"{'may pull new repos' if proj['pull_new'] else 'cached repos only'}")
        elif cmd == "project-list":
            rows = service.list_projects(actor)
            out(rows, "\n".join(f"{p['name']:24} {'pull' if p['pull_new'] else 'cached-only':11} "
                                + " ".join(f"{r['effect']}:{r['pattern']}" for r in p["rules"])  # type: ignore[attr-defined]
                                for p in rows))
        elif cmd == "member-set":
            r = service.set_member(actor, args.project, args.user, None if args.role == "none" else args.role)
            out(r, f"{args.user!r} in {args.project!r}: {r['before'] or 'none'} -> {args.role}")
        elif cmd.startswith(("namespace-", "audit-writes")):
            _hosted(args, service, actor, out)
        elif cmd == "audit":
            _audit(args, service, actor)
        return 0
    finally:
        engine.dispose()


def _hosted(args: argparse.Namespace, service: AdminService, actor: Actor, out: Any) -> None:
    """Hosted namespaces and the write audit."""
    cmd = args.admin_command
    if cmd == "namespace-assign":
        r = service.assign_namespace(actor, args.name, args.project)
        out(r, f"namespace {r['name']!r} is hosted, owned by {r['project']!r}; purged {len(r['purged'])} "  # type: ignore[arg-type]
               "cached repos")
    elif cmd == "namespace-list":
        rows = service.list_namespaces(actor)
        out(rows, "\n".join(f"{n['name']:32} {n['project']:24} {n['repos']} repos" for n in rows))
    elif cmd == "namespace-remove":
        out(service.remove_namespace(actor, args.name), f"namespace {args.name!r} is no longer hosted")
    else:
        rows = service.write_events(actor, repo=args.repo, by=args.actor, limit=args.limit)
        fmt = "json" if args.json else args.format
        if fmt == "json":
            print(json.dumps(rows, indent=1))
        elif fmt == "csv":
            sys.stdout.write(to_csv(rows, WRITE_COLUMNS))
        elif fmt == "jsonl":
            sys.stdout.write("".join(json.dumps(r) + "\n" for r in rows))
        else:
            print("\n".join(f"{datetime.fromtimestamp(e['ts']).isoformat(timespec='seconds')} {e['actor']:16} "
                            f"{e['action']:14} {e['repo_type']}:{e['repo_id']} {e.get('ref') or ''} "
                            f"{(e.get('new_commit') or '')[:12]}" for e in rows))


def _audit(args: argparse.Namespace, service: AdminService, actor: Actor) -> None:
    rows = service.download_events(actor, since=_when(args.since), until=_when(args.until), principal=args.user,
                                   repo_id=args.repo, limit=args.limit, offset=args.offset)
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps(rows, indent=1))
    elif fmt == "jsonl":
        for row in rows:
            print(json.dumps(row))
    elif fmt == "csv":
        sys.stdout.write(to_csv(rows))
    else:
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"]))
            print(f"{when} {r['principal'] or '-':16} {r['client_ip'] or '-':15} {r['status']} "
                  f"{r['cache'] or '-':11} {r['bytes_sent']:>12} {r['repo_type']}:{r['repo_id']}/{r['path']}")
