"""``hubproxy cache ...``: list, prefetch, pin, unpin, purge, verify and evict."""

from __future__ import annotations

import argparse
import os
import time

from hubproxy.admin.service import Actor, AdminService
from hubproxy.cli.common import CommandFailed, add_command, command_settings, open_database, printer
from hubproxy.config import parse_size

REPO_TYPES = ["model", "dataset", "space"]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cache = sub.add_parser("cache", help="inspect and manage the cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)

    def cmd(name: str, help_text: str, repo: bool = True) -> argparse.ArgumentParser:
        p = add_command(cache_sub, name, help_text, "to find the data dir and database", "cache and database folder")
        if repo:
            p.add_argument("repo", help="ORG/NAME[@REVISION]")
        p.add_argument("--repo-type", choices=REPO_TYPES, default=None if not repo else "model",
                       help="repo type" + ("" if repo else " to list (default: all)"))
        return p

    cmd("ls", "list cached repo revisions", repo=False)
    cmd("pin", "keep a repo revision from eviction")
    cmd("unpin", "allow eviction again (all revisions if none is given)")
    cmd("purge", "delete a repo (or one revision) from the cache")
    cmd("verify", "re-hash every stored blob; quarantine those that do not match", repo=False)
    evict = cmd("evict", "evict least recently used blobs down to a size", repo=False)
    evict.add_argument("--max-bytes", required=True, help="budget, e.g. 500G")
    pre = cmd("prefetch", "download a repo revision through a running hubproxy")
    pre.add_argument("--include", action="append", default=[], help="glob of paths to fetch (repeatable)")
    pre.add_argument("--exclude", action="append", default=[], help="glob of paths to skip (repeatable)")
    pre.add_argument("--server", help="hubproxy URL (default http://127.0.0.1:<port>)")
    pre.add_argument("--token", help="hubproxy token to send (default: HUBPROXY_TOKEN, then HF_TOKEN)")
    pre.add_argument("--plain", action="store_true", help="log lines instead of a progress bar, even on a terminal")


def run(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    repo_id, _, revision = (getattr(args, "repo", "") or "").partition("@")
    out = printer(args)
    cmd = args.cache_command
    if cmd == "prefetch":
        return _prefetch(args, settings.port, repo_id, revision)
    from hubproxy.store import make_store

    engine = open_database(settings, create=False)
    try:
        service = AdminService(engine, make_store(settings) if cmd != "ls" else None,
                               make_store(settings, "xorbs") if cmd == "verify" else None)
        actor = Actor.operator()
        if cmd == "ls":
            rows = [r for r in service.cache_list(actor) if args.repo_type in (None, r["repo_type"])]
            out(rows, _table(rows))
        elif cmd == "pin":
            r = service.cache_pin(actor, args.repo_type, repo_id, revision or None)
            out(r, f"pinned {repo_id}@{revision or 'main'} ({r['pinned']})")
        elif cmd == "unpin":
            r = service.cache_unpin(actor, args.repo_type, repo_id, revision or None)
            out(r, f"removed {r['unpinned']} pin(s) of {repo_id}")
        elif cmd == "purge":
            r = service.cache_purge(actor, args.repo_type, repo_id, revision or None)
            out(r, f"purged {repo_id}{'@' + revision if revision else ''}: {r['blobs']} blobs, {r['bytes']} bytes freed")
        elif cmd == "verify":
            r = service.cache_verify(actor)
            damaged = list(r["hosted_corrupt"]) + list(r.get("xorbs_damaged", []))  # type: ignore[call-overload]
            out(r, f"checked {r['checked']} blobs ({r['bytes_checked']} bytes): {len(r['corrupt'])} corrupt "  # type: ignore[arg-type]
                   f"(quarantined), {len(r['missing'])} missing; {r.get('xorbs_checked', 0)} Xet xorbs; "  # type: ignore[arg-type]
                   f"hosted data damaged (left in place, restore from a backup): {', '.join(damaged) or 'none'}")
            return 1 if r["corrupt"] or damaged else 0
        elif cmd == "evict":
            r = service.cache_evict(actor, parse_size(args.max_bytes))
            out(r, f"evicted {len(r['evicted'])} blobs")  # type: ignore[arg-type]
        return 0
    finally:
        engine.dispose()


def _prefetch(args: argparse.Namespace, port: int, repo_id: str, revision: str) -> int:
    from hubproxy.cache.prefetch import PrefetchError, prefetch

    token = args.token or os.environ.get("HUBPROXY_TOKEN") or os.environ.get("HF_TOKEN")
    try:
        result = prefetch(args.server or f"http://127.0.0.1:{port}", args.repo_type, repo_id, revision or "main",
                          args.include, args.exclude, token, args.plain)
    except PrefetchError as exc:
        raise CommandFailed(f"hubproxy cache prefetch: {exc}") from None
    printer(args)(result.__dict__, f"prefetched {result.files} files, {result.bytes} bytes in {result.seconds:.1f}s "
                                   f"(commit {result.commit})")
    return 0


def _table(rows: list[dict]) -> str:
    lines = [f"{'TYPE':8} {'REPO':40} {'COMMIT':12} {'REFS':16} {'FILES':>9} {'BYTES':>14} {'HITS':>6} "
             f"{'LAST ACCESS':19} PIN"]
    for r in rows:
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_access"])) if r["last_access"] else "-"
        lines.append(f"{r['repo_type']:8} {r['repo_id']:40} {r['commit'][:12]:12} {','.join(r['refs'])[:16]:16} "
                     f"{r['files_cached']:>4}/{r['files']:<4} {r['bytes_cached']:>14} {r['hits']:>6} {last:19} "
                     f"{'yes' if r['pinned'] else ''}")
    return "\n".join(lines)
