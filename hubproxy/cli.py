"""Command line: ``hubproxy serve``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable

from hubproxy import __version__
from hubproxy.config import ConfigError, Settings, load_settings, settings_to_env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubproxy", description="Hugging Face Hub compatible proxy")
    parser.add_argument("--version", action="version", version=f"hubproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the proxy server")
    serve.add_argument("--config", help="YAML config file")
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--upstream", help="upstream hub URL (default https://huggingface.co)")
    serve.add_argument("--data-dir", help="cache and database folder (default ./hubproxy-data)")
    serve.add_argument("--offline", action="store_true", default=None, help="never contact the upstream")

    cache = sub.add_parser("cache", help="inspect and manage the cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)

    def cache_cmd(name: str, help_text: str, repo: bool = True, revision_required: bool = False
                  ) -> argparse.ArgumentParser:
        p = _command(cache_sub, name, help_text, "to find the data dir and database", "cache and database folder")
        if repo:
            p.add_argument("repo", help="ORG/NAME[@REVISION]" if not revision_required else "ORG/NAME@REVISION")
            p.add_argument("--repo-type", choices=["model", "dataset", "space"], default="model")
        return p

    cache_cmd("ls", "list cached repo revisions", repo=False)
    cache_cmd("pin", "keep a repo revision from eviction")
    cache_cmd("unpin", "allow eviction again (all revisions if none is given)")
    cache_cmd("purge", "delete a repo (or one revision) from the cache")
    cache_cmd("verify", "re-hash every stored blob; quarantine those that do not match", repo=False)
    evict = cache_cmd("evict", "evict least recently used blobs down to a size", repo=False)
    evict.add_argument("--max-bytes", required=True, help="budget, e.g. 500G")
    pre = cache_cmd("prefetch", "download a repo revision through a running hubproxy")
    pre.add_argument("--include", action="append", default=[], help="glob of paths to fetch (repeatable)")
    pre.add_argument("--exclude", action="append", default=[], help="glob of paths to skip (repeatable)")
    pre.add_argument("--server", help="hubproxy URL (default http://127.0.0.1:<port>)")
    _sync_parser(sub)
    admin = sub.add_parser("admin", help="users, service accounts and tokens")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)

    def admin_cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        return _command(admin_sub, name, help_text, "to find the database", "data folder (its SQLite database, by default)")

    boot = admin_cmd("bootstrap", "on a fresh install: create the first admin and print its token once")
    boot.add_argument("--name", default="admin")
    user_add = admin_cmd("user-create", "create a user or service account")
    user_add.add_argument("name")
    user_add.add_argument("--service", action="store_true", help="a service account, not a person")
    user_add.add_argument("--admin", action="store_true", help="a global admin")
    user_add.add_argument("--fullname", default="")
    admin_cmd("user-list", "list users and service accounts")
    for verb in ("disable", "enable"):
        p = admin_cmd(f"user-{verb}", f"{verb} a user or service account (its tokens stop or resume working)")
        p.add_argument("name")
    tok = admin_cmd("token-create", "create a token for a user and print it once")
    tok.add_argument("user")
    tok.add_argument("--name", default="default", help="the token's display name")
    tok.add_argument("--role", choices=["read", "write"], default="read")
    tok.add_argument("--expires-days", type=float, help="lifetime in days (default: no expiry)")
    tok_list = admin_cmd("token-list", "list tokens (never their values)")
    tok_list.add_argument("user", nargs="?")
    tok_rev = admin_cmd("token-revoke", "revoke a token by id")
    tok_rev.add_argument("id", type=int)
    for verb, help_text in (("project-create", "create a project with an upstream policy"),
                            ("policy-set", "replace a project's upstream policy")):
        p = admin_cmd(verb, help_text)
        p.add_argument("project")
        p.add_argument("--allow", action="append", default=[], help="repo glob, e.g. models:meta-llama/* (repeatable)")
        p.add_argument("--deny", action="append", default=[], help="repo glob that wins over --allow (repeatable)")
        p.add_argument("--cached-only", action="store_true", help="members may not pull repos not cached yet")
    admin_cmd("project-list", "list projects and their policies")
    mem = admin_cmd("member-set", "add a member to a project, change its role, or remove it (--role none)")
    mem.add_argument("project")
    mem.add_argument("user")
    mem.add_argument("--role", required=True, choices=["viewer", "developer", "maintainer", "none"])
    aud = admin_cmd("audit", "download events, newest first")
    aud.add_argument("--since", help="ISO date/time or unix seconds")
    aud.add_argument("--until", help="ISO date/time or unix seconds")
    aud.add_argument("--user", help="only this user's or service account's downloads")
    aud.add_argument("--repo", help="only this repo id")
    aud.add_argument("--limit", type=int, default=100)
    aud.add_argument("--offset", type=int, default=0)
    aud.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default="table")
    return parser


def _command(sub: argparse._SubParsersAction, name: str, help_text: str, config_for: str,  # type: ignore[type-arg]
             data_dir_help: str) -> argparse.ArgumentParser:
    """A management subcommand with the options they all share: --config, --data-dir, --json."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--config", help=f"YAML config file ({config_for})")
    p.add_argument("--data-dir", help=data_dir_help)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _sync_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sync = sub.add_parser("sync", help="air-gapped bundles: export, import, verify")
    sync_sub = sync.add_subparsers(dest="sync_command", required=True)

    def sync_cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        p = _command(sync_sub, name, help_text, "store, database, upstream, keys", "cache and database folder")
        p.add_argument("--plain", action="store_true", help="log lines instead of progress bars, even on a terminal")
        return p

    exp = sync_cmd("export", "fetch repos (through the upstream, reusing the local cache) into a bundle")
    exp.add_argument("--repo", action="append", default=[], help="[TYPE:]ORG/NAME[@REVISION] (repeatable)")
    exp.add_argument("--repo-type", choices=["model", "dataset", "space"], default="model",
                     help="type of repos given without a TYPE: prefix")
    exp.add_argument("--repos-file", help="a file with one repo spec per line")
    exp.add_argument("--include", action="append", default=[], help="glob of paths to carry (repeatable)")
    exp.add_argument("--exclude", action="append", default=[], help="glob of paths to leave out (repeatable)")
    exp.add_argument("--since", help="a previous bundle (or its manifest.json): carry only the blobs it lacks")
    exp.add_argument("--source", help="hub or hubproxy URL to export from (default: the configured upstream)")
    exp.add_argument("--out", required=True, help="bundle to write: a new directory, or NAME.tar")
    imp = sync_cmd("import", "load a bundle into this hubproxy's store and index")
    imp.add_argument("bundle")
    imp.add_argument("--no-pin", action="store_true", help="let eviction remove the imported revisions")
    ver = sync_cmd("verify", "check a bundle (checksum, signature, every blob's hash) without importing it")
    ver.add_argument("bundle")
    key = sync_sub.add_parser("keygen", help="make an ed25519 key pair for signing bundles")
    key.add_argument("prefix", help="writes PREFIX.key (private) and PREFIX.pub")


def _when(value: str | None) -> float | None:
    """ISO 8601 or unix seconds."""
    if value is None:
        return None
    from datetime import datetime

    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value).timestamp()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas: file chunks read in worker threads otherwise stay resident.

    Measured here: 8 clients on a hot 1 GiB file peaked near 250 MB RSS without the cap, 120 MB with it.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    limit_malloc_arenas()


    overrides = {"host": args.host, "port": args.port, "upstream": args.upstream,
                 "data_dir": args.data_dir, "offline": args.offline}
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as exc:
        print(f"hubproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    from hubproxy.observability.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    common = {"host": settings.host, "port": settings.port, "log_level": settings.log_level, "loop": "uvloop",
              "http": "httptools", "timeout_keep_alive": 30, "server_header": False,
              "proxy_headers": False,  # X-Forwarded-For is judged by trusted_proxies, not uvicorn
              "log_config": None, "access_log": False,  # our logging setup; our own access log, with request ids
              "timeout_graceful_shutdown": settings.shutdown_timeout}
    if settings.workers > 1:
        # Metrics of all workers are kept in files here and summed by whichever worker is scraped.
        multiproc = settings.data_dir / "prometheus-multiproc"
        shutil.rmtree(multiproc, ignore_errors=True)
        multiproc.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
        # Worker processes build their app from the environment: hand them the resolved settings.
        os.environ.update(settings_to_env(settings))
        os.environ.pop("HUBPROXY_CONFIG", None)
        uvicorn.run("hubproxy.app:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        from hubproxy.app import create_app  # only here: a multi-worker parent stays small

        uvicorn.run(create_app(settings), **common)
    return 0


def _command_settings(args: argparse.Namespace) -> Settings | None:
    """Settings for a management command (config file, environment, --data-dir); None after an error."""
    try:
        return load_settings(args.config, {"data_dir": args.data_dir})
    except ConfigError as exc:
        print(f"hubproxy: configuration error: {exc}", file=sys.stderr)
        return None


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _printer(args: argparse.Namespace) -> Callable[[object, str], None]:
    """Print the JSON form with --json, the text form otherwise."""

    def out(obj: object, text: str) -> None:
        print(json.dumps(obj, indent=1) if args.json else text)

    return out


def cache_command(args: argparse.Namespace) -> int:
    """``hubproxy cache ...``: operations on the data dir and database the settings name."""
    import time

    from hubproxy.cache import manage
    from hubproxy.cache.prefetch import PrefetchError, prefetch
    from hubproxy.config import parse_size
    from hubproxy.db import make_engine
    from hubproxy.store import make_store

    settings = _command_settings(args)
    if settings is None:
        return 2
    repo_id, _, revision = (getattr(args, "repo", "") or "").partition("@")
    out = _printer(args)

    try:
        if args.cache_command == "prefetch":
            server = args.server or f"http://127.0.0.1:{settings.port}"
            result = prefetch(server, args.repo_type, repo_id, revision or "main", args.include, args.exclude)
            out(result.__dict__, f"prefetched {result.files} files, {result.bytes} bytes in {result.seconds:.1f}s "
                                 f"(commit {result.commit})")
            return 0
        engine = make_engine(settings.db_url)
        store = make_store(settings)
        cmd = args.cache_command
        if cmd == "ls":
            rows = manage.list_cached(engine)
            lines = [f"{'TYPE':8} {'REPO':40} {'COMMIT':12} {'REFS':16} {'FILES':>9} {'BYTES':>14} {'HITS':>6} "
                     f"{'LAST ACCESS':19} PIN"]
            for r in rows:
                last = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.last_access)) if r.last_access else "-"
                lines.append(f"{r.repo_type:8} {r.repo_id:40} {r.commit[:12]:12} {','.join(r.refs)[:16]:16} "
                             f"{r.files_cached:>4}/{r.files:<4} {r.bytes_cached:>14} {r.hits:>6} {last:19} "
                             f"{'yes' if r.pinned else ''}")
            out([r.as_dict() for r in rows], "\n".join(lines))
        elif cmd == "pin":
            commit = manage.pin(engine, args.repo_type, repo_id, revision or "main")
            out({"pinned": commit}, f"pinned {repo_id}@{revision or 'main'} ({commit})")
        elif cmd == "unpin":
            n = manage.unpin(engine, args.repo_type, repo_id, revision or None)
            out({"unpinned": n}, f"removed {n} pin(s) of {repo_id}")
        elif cmd == "purge":
            count, size = manage.purge(engine, store, args.repo_type, repo_id, revision or None)
            out({"blobs": count, "bytes": size}, f"purged {repo_id}{'@' + revision if revision else ''}: "
                                                 f"{count} blobs, {size} bytes freed")
        elif cmd == "verify":
            report = manage.verify(engine, store)
            out(report.as_dict(), f"checked {report.checked} blobs ({report.bytes_checked} bytes): "
                                  f"{len(report.corrupt or [])} corrupt (quarantined), {len(report.missing or [])} missing")
            return 1 if report.corrupt else 0
        elif cmd == "evict":
            evicted = manage.evict(engine, store, parse_size(args.max_bytes))
            out({"evicted": evicted}, f"evicted {len(evicted)} blobs")
        return 0
    except (manage.CacheError, PrefetchError, ValueError) as exc:
        print(f"hubproxy cache {args.cache_command}: {exc}", file=sys.stderr)
        return 1


def admin_command(args: argparse.Namespace) -> int:
    """``hubproxy admin ...``: identities and the audit trail in the database the settings name."""
    import time

    from hubproxy.auth import identity as ident
    from hubproxy.db import make_engine

    settings = _command_settings(args)
    if settings is None:
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    out = _printer(args)

    cmd = args.admin_command
    from hubproxy.audit import admin as admin_audit

    actor = f"cli:{_os_user()}"

    def event(action: str, target: str, before: object = None, after: object = None) -> None:
        admin_audit.record(engine, actor, action, target, before, after)

    try:
        if cmd == "bootstrap":
            token = ident.bootstrap(engine, args.name)
            if token is None:
                raise ident.IdentityError("this install has users already; use 'admin token-create'")
            event("bootstrap", args.name)
            out({"name": args.name, "token": token},
                f"created admin {args.name!r}; its token (shown once, keep it safe):\n{token}")
        elif cmd == "user-create":
            p = ident.create_principal(engine, args.name, "service" if args.service else "user", args.admin,
                                       args.fullname)
            event("user.create", p.name, None, p.as_dict())
            out(p.as_dict(), f"created {p.kind} {p.name!r}{' (admin)' if p.is_admin else ''}")
        elif cmd == "user-list":
            rows = ident.list_principals(engine)
            out([p.as_dict() for p in rows], "\n".join(
                f"{p.name:32} {p.kind:8} {'admin' if p.is_admin else '':6} {'disabled' if p.disabled else ''}"
                for p in rows))
        elif cmd in ("user-disable", "user-enable"):
            before = ident.get_principal(engine, args.name)
            p = ident.set_disabled(engine, args.name, cmd == "user-disable")
            event(cmd.replace("-", "."), p.name, before.as_dict(), p.as_dict())
            out(p.as_dict(), f"{p.name!r} is {'disabled' if p.disabled else 'enabled'}")
        elif cmd == "token-create":
            token, info = ident.create_token(engine, args.user, args.name, args.role,
                                             args.expires_days * 86400 if args.expires_days else None)
            event("token.create", f"{args.user}/{info.id}", None, info.as_dict())
            out({**info.as_dict(), "token": token}, f"token {info.id} for {args.user!r} (shown once):\n{token}")
        elif cmd == "token-list":
            rows = ident.list_tokens(engine, args.user)
            out([t.as_dict() for t in rows], "\n".join(
                f"{t.id:5} {t.principal:24} {t.name:20} {t.prefix}... {t.role:5} "
                f"{'revoked' if t.revoked_at else ''}" for t in rows))
        elif cmd == "token-revoke":
            ident.revoke_token(engine, args.id)
            event("token.revoke", str(args.id))
            out({"revoked": args.id}, f"revoked token {args.id}")
        elif cmd in ("project-create", "policy-set"):
            from hubproxy.auth import policy

            fn = policy.create_project if cmd == "project-create" else policy.set_policy
            before = policy.get_project(engine, args.project).as_dict() if cmd == "policy-set" else None
            proj = fn(engine, args.project, args.allow, args.deny, not args.cached_only)
            event("project.create" if cmd == "project-create" else "project.policy", proj.name, before,
                  proj.as_dict())
            out(proj.as_dict(), f"project {proj.name!r}: {len(proj.rules)} rules, "
                                f"{'may pull new repos' if proj.pull_new else 'cached repos only'}")
        elif cmd == "project-list":
            from hubproxy.auth import policy

            rows = policy.list_projects(engine)
            out([p.as_dict() for p in rows], "\n".join(
                f"{p.name:24} {'pull' if p.pull_new else 'cached-only':11} "
                + " ".join(f"{r.effect}:{r.pattern}" for r in p.rules) for p in rows))
        elif cmd == "member-set":
            from hubproxy.auth import policy

            policy.set_member(engine, args.project, args.user, None if args.role == "none" else args.role)
            event("project.member", f"{args.project}/{args.user}", None, {"role": args.role})
            out({"project": args.project, "user": args.user, "role": args.role},
                f"{args.user!r} in {args.project!r}: {args.role}")
        elif cmd == "audit":
            import csv

            from hubproxy.audit.downloads import COLUMNS, query

            rows = query(engine, since=_when(args.since), until=_when(args.until), principal=args.user,
                         repo_id=args.repo, limit=args.limit, offset=args.offset)
            fmt = "json" if args.json else args.format
            if fmt == "json":
                print(json.dumps(rows, indent=1))
            elif fmt == "jsonl":
                for row in rows:
                    print(json.dumps(row))
            elif fmt == "csv":
                writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
            else:
                for r in rows:
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"]))
                    print(f"{when} {r['principal'] or '-':16} {r['client_ip'] or '-':15} {r['status']} "
                          f"{r['cache'] or '-':11} {r['bytes_sent']:>12} {r['repo_type']}:{r['repo_id']}/{r['path']}")
        return 0
    except ident.IdentityError as exc:
        print(f"hubproxy admin {cmd}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "cache":
        return cache_command(args)
    if args.command == "admin":
        return admin_command(args)
    if args.command == "sync":
        from hubproxy.sync.command import sync_command

        return sync_command(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
