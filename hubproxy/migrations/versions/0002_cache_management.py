"""Cache management: blob access statistics and pins.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("last_access", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("hits", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute("UPDATE blobs SET last_access = created_at")
    op.create_index("ix_blobs_last_access", "blobs", ["last_access"])
    op.create_table(
        "pins",
        sa.Column("repo_type", sa.String(), primary_key=True),
        sa.Column("repo_id", sa.String(), primary_key=True),
        sa.Column("commit", sa.String(), primary_key=True),
        sa.Column("revision", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pins")
    op.drop_index("ix_blobs_last_access", "blobs")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("hits")
        batch.drop_column("last_access")
