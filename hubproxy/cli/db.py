"""``hubproxy db ...``: the index database's schema."""

from __future__ import annotations

import argparse

from hubproxy.cli.common import add_command, command_settings, open_database, printer
from hubproxy.db import head_revision, redact_url, schema_revision


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db = sub.add_parser("db", help="the index database")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    add_command(db_sub, "upgrade", "create the schema, or bring it to this version's (servers also do it at start)",
                "to find the database", "data folder (its SQLite database, by default)")


def run(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    engine = open_database(settings, create=True)
    try:
        current = schema_revision(engine)
        printer(args)({"database": redact_url(settings.db_url), "schema": current},
                      f"{redact_url(settings.db_url)}: schema {current} (this version's is {head_revision()})")
    finally:
        engine.dispose()
    return 0
