"""The database engine: SQLite by default, PostgreSQL (``postgresql://...``) for replicas sharing one index.

The schema (``models.py``) is created and upgraded by the Alembic migrations in ``hubproxy/migrations``
at start or with ``hubproxy db upgrade``, under a lock, so that replicas starting together do not race
and an upgrade keeps what is cached.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import Table, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
#: The newest migration: a database already there starts without loading Alembic (a test keeps this true).
SCHEMA_HEAD = "0014"
#: PostgreSQL advisory lock key for migrations ("hubproxy" as a number).
MIGRATION_LOCK = 0x6875627072


class DatabaseNotReady(Exception):
    """The database a command needs is missing, unreachable, or not at the current schema."""


#: File in the data dir naming the database its index lives in, when that is not the default SQLite file.
DATABASE_MARKER = "database.json"


def redact_url(url: str) -> str:
    """A database URL without its password."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def record_database(data_dir: Path, url: str, default_url: str) -> None:
    """Remember in the data dir which database holds its index (so commands run without it can say so)."""
    marker = data_dir / DATABASE_MARKER
    if url == default_url:
        marker.unlink(missing_ok=True)
        return
    text = json.dumps({"database": redact_url(url)})
    if not marker.exists() or marker.read_text() != text:
        marker.write_text(text)


def check_database_choice(data_dir: Path, url: str, default_url: str) -> None:
    """Refuse to use the default SQLite file of a data dir whose index lives in another database."""
    marker = data_dir / DATABASE_MARKER
    if url != default_url or not marker.exists():
        return
    try:
        where = json.loads(marker.read_text())["database"]
    except (ValueError, KeyError, OSError):
        return
    raise DatabaseNotReady(f"the index of {data_dir} is in {where}; set database_url "
                           "(HUBPROXY_DATABASE_URL or --config) to use it")


def open_existing(url: str) -> Engine:
    """An engine on a database that must already hold hubproxy's current schema; nothing is created."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if not os.path.isfile(path):
            raise DatabaseNotReady(f"no hubproxy database at {path} (has hubproxy run with this data dir?)")
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        current = schema_revision(engine)
    except Exception as exc:
        engine.dispose()
        raise DatabaseNotReady(f"cannot reach the database {redact_url(url)}: {_reason(exc)}") from None
    if current != head_revision():
        engine.dispose()
        state = "has no hubproxy schema" if current is None else f"is at schema {current}, not {head_revision()}"
        raise DatabaseNotReady(f"the database {redact_url(url)} {state}; run 'hubproxy db upgrade'")
    return engine


def _reason(exc: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's background links."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else exc.__class__.__name__


def upsert(conn: Connection, table: Table, values: dict[str, Any] | list[dict[str, Any]],
           update: bool = True) -> None:
    """Insert rows, or update them (``update``) or leave them (not) if their primary key exists: one statement,
    safe against a concurrent writer (two processes filling the same answer never collide)."""
    rows = values if isinstance(values, list) else [values]
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    changes = {k: stmt.excluded[k] for k in rows[0] if k not in keys}
    stmt = (stmt.on_conflict_do_update(index_elements=keys, set_=changes) if update and changes
            else stmt.on_conflict_do_nothing(index_elements=keys))
    conn.execute(stmt, rows)


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def ping_database(engine: Engine) -> None:
    """Raise unless the database answers now (readiness)."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")


def make_engine(url: str) -> Engine:
    """Create the engine and bring the schema up to date."""
    url = normalize_url(url)
    if url.startswith("postgresql") and importlib.util.find_spec("psycopg") is None:
        from hubproxy.config import ConfigError

        raise ConfigError("setting 'database_url': PostgreSQL needs the 'postgres' extra: "
                          "pip install 'hubproxy[postgres]'")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if stored_revision(engine) != SCHEMA_HEAD:
        migrate(engine)
    return engine


def stored_revision(engine: Engine) -> str | None:
    """The migration the database is at, read without Alembic (None: no schema yet)."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration, one process at a time.

    An empty database gets the declared schema at once (what the migrations build, as a fast test
    proves) and is stamped with the newest migration; an existing one is upgraded by Alembic.
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            _bring_up_to_date(conn)
        return
    database = engine.url.database
    lock_fd = None
    if database and database != ":memory:":
        lock_fd = os.open(f"{database}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # held until the migration has committed
    try:
        with engine.begin() as conn:
            _bring_up_to_date(conn)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _bring_up_to_date(conn: Connection) -> None:
    from hubproxy.db.models import METADATA

    if not inspect(conn).get_table_names():
        METADATA.create_all(conn)
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                          "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": SCHEMA_HEAD})
        return
    from alembic import command

    command.upgrade(alembic_config(conn), "head")


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest migration, as Alembic reads the migration scripts."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()
