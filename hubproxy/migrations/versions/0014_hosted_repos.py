"""Hosted repos: namespaces owned by projects, repo visibility, git commit parts, uploads, write audit, webhooks, Xet xorbs and files.

Revision ID: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("repos") as batch:
        batch.add_column(sa.Column("visibility", sa.String(), nullable=True))
        batch.add_column(sa.Column("gated", sa.String(), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.Float(), nullable=True))
    with op.batch_alter_table("commits") as batch:
        batch.add_column(sa.Column("parent", sa.String(), nullable=True))
        batch.add_column(sa.Column("tree", sa.String(), nullable=True))
        batch.add_column(sa.Column("title", sa.Text(), nullable=True))
        batch.add_column(sa.Column("message", sa.Text(), nullable=True))
        batch.add_column(sa.Column("author", sa.String(), nullable=True))
        batch.add_column(sa.Column("created_at", sa.Float(), nullable=True))
    _hosted_tables()
    _webhook_tables()
    _xet_tables()


def _hosted_tables() -> None:
    op.create_table(
        "namespaces",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "uploads",
        sa.Column("repo_type", sa.String(), primary_key=True),
        sa.Column("repo_id", sa.String(), primary_key=True),
        sa.Column("oid", sa.String(), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("principal", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "audit_writes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("client_ip", sa.String(), nullable=True),
        sa.Column("repo_type", sa.String(), nullable=False),
        sa.Column("repo_id", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("ref", sa.String(), nullable=True),
        sa.Column("old_commit", sa.String(), nullable=True),
        sa.Column("new_commit", sa.String(), nullable=True),
        sa.Column("files", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_audit_writes_ts", "audit_writes", ["ts"])
    op.create_index("ix_audit_writes_repo", "audit_writes", ["repo_type", "repo_id"])


def _webhook_tables() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("secret", sa.String(), nullable=True),
        sa.Column("watched", sa.Text(), nullable=False),
        sa.Column("domains", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("webhook_id", sa.String(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("claimed_until", sa.Float(), nullable=False, server_default="0"),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ux_webhook_deliveries_event", "webhook_deliveries", ["webhook_id", "event_id"], unique=True)
    op.create_index("ix_webhook_deliveries_next", "webhook_deliveries", ["next_at"])
    op.create_table(
        "webhook_cursor",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("last_event", sa.BigInteger(), nullable=False),
    )


def _xet_tables() -> None:
    op.create_table(
        "xet_xorbs",
        sa.Column("hash", sa.String(), primary_key=True),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "xet_xorb_repos",
        sa.Column("xorb", sa.String(), primary_key=True),
        sa.Column("repo_type", sa.String(), primary_key=True),
        sa.Column("repo_id", sa.String(), primary_key=True),
    )
    op.create_table(
        "xet_files",
        sa.Column("hash", sa.String(), primary_key=True),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_xet_files_sha256", "xet_files", ["sha256"])


def downgrade() -> None:
    op.drop_table("xet_files")
    op.drop_table("xet_xorb_repos")
    op.drop_table("xet_xorbs")
    op.drop_table("webhook_cursor")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
    op.drop_table("audit_writes")
    op.drop_table("uploads")
    op.drop_table("namespaces")
    with op.batch_alter_table("commits") as batch:
        for name in ("created_at", "author", "message", "title", "tree", "parent"):
            batch.drop_column(name)
    with op.batch_alter_table("repos") as batch:
        for name in ("updated_at", "gated", "visibility"):
            batch.drop_column(name)
