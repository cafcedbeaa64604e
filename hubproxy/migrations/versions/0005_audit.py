"""Download audit events.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_downloads",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("principal", sa.String(), nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("project", sa.String(), nullable=True),
        sa.Column("client_ip", sa.String(), nullable=True),
        sa.Column("user_agent", sa.String(), nullable=True),
        sa.Column("repo_type", sa.String(), nullable=False),
        sa.Column("repo_id", sa.String(), nullable=False),
        sa.Column("revision", sa.String(), nullable=True),
        sa.Column("commit", sa.String(), nullable=True),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("range", sa.String(), nullable=True),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("cache", sa.String(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_audit_downloads_ts", "audit_downloads", ["ts"])
    op.create_index("ix_audit_downloads_repo", "audit_downloads", ["repo_type", "repo_id"])


def downgrade() -> None:
    op.drop_table("audit_downloads")
