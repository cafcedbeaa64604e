"""The revision index, the metadata cache and the blob table.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refs",
        sa.Column("repo_type", sa.String(), primary_key=True),
        sa.Column("repo_id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("commit", sa.String(), nullable=False),
        sa.Column("fetched_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "files",
        sa.Column("repo_type", sa.String(), primary_key=True),
        sa.Column("repo_id", sa.String(), primary_key=True),
        sa.Column("commit", sa.String(), primary_key=True),
        sa.Column("path", sa.String(), primary_key=True),
        sa.Column("blob", sa.String(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("is_lfs", sa.Boolean(), nullable=False),
        sa.Column("fetched_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_files_blob", "files", ["blob"])
    op.create_table(
        "metadata",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("fetched_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "blobs",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    for table in ("blobs", "metadata", "files", "refs"):
        op.drop_table(table)
