"""Alembic environment: migrations run on the connection hubproxy hands over."""

from __future__ import annotations

from alembic import context

from hubproxy.db.models import METADATA

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
