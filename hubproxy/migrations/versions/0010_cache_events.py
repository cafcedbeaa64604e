"""Cache events: deletions (purge, evict, verify) every process applies to its memory of the cache.

Revision ID: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cache_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(), nullable=False),  # blob | repo
        sa.Column("repo_type", sa.String(), nullable=True),
        sa.Column("repo_id", sa.String(), nullable=True),
        sa.Column("blob", sa.String(), nullable=True),
        sa.Column("ts", sa.Float(), nullable=False),
    )
    op.create_index("ix_cache_events_ts", "cache_events", ["ts"])


def downgrade() -> None:
    op.drop_table("cache_events")
