"""What every management command shares: its options, its settings, its database, its output."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from hubproxy.config import Settings, default_db_url, load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class CommandFailed(Exception):
    """A command cannot go on; the message is the one line the user sees."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_command(sub: argparse._SubParsersAction, name: str, help_text: str, config_for: str,  # type: ignore[type-arg]
                data_dir_help: str) -> argparse.ArgumentParser:
    """A management subcommand with the options they all share: --config, --data-dir, --json."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--config", help=f"YAML config file ({config_for})")
    p.add_argument("--data-dir", help=data_dir_help)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def command_settings(args: argparse.Namespace) -> Settings:
    """Settings for a management command: config file, environment, --data-dir."""
    return load_settings(getattr(args, "config", None), {"data_dir": getattr(args, "data_dir", None)})


def open_database(settings: Settings, create: bool) -> Engine:
    """The index database. Read commands (``create`` False) never create or migrate anything."""
    from hubproxy.db import check_database_choice, make_engine, open_existing, record_database

    check_database_choice(settings.data_dir, settings.db_url, default_db_url(settings.data_dir))
    if not create:
        if not settings.data_dir.is_dir() and settings.database_url is None:
            raise CommandFailed(f"no hubproxy data dir at {settings.data_dir} (give --data-dir or --config)")
        return open_existing(settings.db_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    record_database(settings.data_dir, settings.db_url, default_db_url(settings.data_dir))
    return engine


def printer(args: argparse.Namespace) -> Callable[[object, str], None]:
    """Print the JSON form with --json, the text form otherwise."""

    def out(obj: object, text: str) -> None:
        print(json.dumps(obj, indent=1) if args.json else text)

    return out
