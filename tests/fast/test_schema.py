"""The migrations build exactly the schema ``hubproxy/db/models.py`` declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from hubproxy.db import head_revision, make_engine
from hubproxy.db.engine import SCHEMA_HEAD
from hubproxy.db.models import METADATA


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migrations_build_the_declared_schema(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}" if dialect == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            diff = [d for d in compare_metadata(context, METADATA) if not _alembic_own(d)]
    finally:
        engine.dispose()
    assert diff == []


def _alembic_own(change: object) -> bool:
    """Alembic's version table is not part of the declared schema."""
    return isinstance(change, tuple) and change[0] == "remove_table" and change[1].name == "alembic_version"


def test_the_schema_head_constant_is_the_newest_migration() -> None:
    """Servers skip Alembic when the database is at ``SCHEMA_HEAD``: it must name the newest migration."""
    assert head_revision() == SCHEMA_HEAD
