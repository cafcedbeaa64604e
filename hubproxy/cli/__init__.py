"""The ``hubproxy`` command: ``serve``, ``cache``, ``admin``, ``sync`` and ``db``.

Every failure a user can cause or meet (a bad setting, a missing data dir, an unreachable database,
an operation refused) ends in one line on stderr and a non-zero exit: 2 for configuration and
usage errors, 1 otherwise. A traceback is printed only for a bug, and only with ``HUBPROXY_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from hubproxy import __version__
from hubproxy.cli.common import CommandFailed
from hubproxy.config import ConfigError

__all__ = ["main"]


#: The subcommands, each a module here with ``add_parser`` and ``run``.
COMMANDS = ("serve", "cache", "admin", "sync", "db")


def _parser(commands: tuple[str, ...] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubproxy", description="Hugging Face Hub compatible proxy and registry")
    parser.add_argument("--version", action="version", version=f"hubproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in commands:
        importlib.import_module(f"hubproxy.cli.{name}").add_parser(sub)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sync":
        from hubproxy.sync.command import sync_command

        return sync_command(args)
    return importlib.import_module(f"hubproxy.cli.{args.command}").run(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `serve` loads only its own command: the parent of several workers then stays small (the admin, cache
    # and sync commands would bring SQLAlchemy and the admin service into it).
    args = _parser(("serve",) if argv[:1] == ["serve"] else COMMANDS).parse_args(argv)
    name = " ".join(filter(None, ["hubproxy", args.command, getattr(args, f"{args.command}_command", None)]))
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"hubproxy: configuration error: {exc}", file=sys.stderr)
        return 2
    except CommandFailed as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user, whatever went wrong
        print(f"{name}: {_describe(exc)}", file=sys.stderr)
        if os.environ.get("HUBPROXY_DEBUG"):
            traceback.print_exc()
        return getattr(exc, "exit_code", 1)


def _describe(exc: BaseException) -> str:
    """One line about an error: operation and database errors as they are, anything else with its type."""
    from sqlalchemy.exc import SQLAlchemyError

    from hubproxy.db import DatabaseNotReady
    from hubproxy.errors import OperationError
    from hubproxy.store.base import StoreUnavailable

    if isinstance(exc, (OperationError, DatabaseNotReady, StoreUnavailable)):
        return str(exc)
    if isinstance(exc, SQLAlchemyError):
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"database error: {reason[0][:300] if reason else exc.__class__.__name__}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}"
    return f"{exc.__class__.__name__}: {exc} (set HUBPROXY_DEBUG=1 for the traceback)"
