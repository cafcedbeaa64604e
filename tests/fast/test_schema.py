"""The migrations build exactly the schema ``hubproxy/db/models.py`` declares, on SQLite and PostgreSQL.

A fresh database is given the declared schema directly (no Alembic at all); these tests are what make
that the same as upgrading through every migration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from hubproxy.db import head_revision, make_engine, normalize_url, schema_revision
from hubproxy.db.engine import SCHEMA_HEAD, alembic_config
from hubproxy.db.models import METADATA


def _url(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return f"sqlite:///{tmp_path / 'index.db'}" if dialect == "sqlite" else request.getfixturevalue("pg_url")


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migrations_build_the_declared_schema(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    engine = create_engine(normalize_url(_url(dialect, tmp_path, request)))
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")  # every migration, from nothing
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            diff = [d for d in compare_metadata(context, METADATA) if not _alembic_own(d)]
    finally:
        engine.dispose()
    assert diff == []


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_fresh_database_is_at_the_newest_migration(dialect: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    engine = make_engine(_url(dialect, tmp_path, request))
    try:
        assert schema_revision(engine) == head_revision()
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")  # Alembic agrees there is nothing left to do
        assert schema_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_the_schema_head_constant_is_the_newest_migration() -> None:
    """Servers skip Alembic when the database is at ``SCHEMA_HEAD``: it must name the newest migration."""
    assert head_revision() == SCHEMA_HEAD


def _alembic_own(change: object) -> bool:
    """Alembic's version table is not part of the declared schema."""
    return isinstance(change, tuple) and change[0] == "remove_table" and change[1].name == "alembic_version"
