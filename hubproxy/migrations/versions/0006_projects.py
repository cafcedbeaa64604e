"""Projects: members with roles, and an upstream policy each.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(), nullable=False, unique=True),
        sa.Column("rules", sa.Text(), nullable=False, server_default="[]"),  # JSON: [{"effect", "pattern"}]
        sa.Column("pull_new", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "project_members",
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("principal_id", sa.Integer(), sa.ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(), nullable=False),  # viewer | developer | maintainer
    )


def downgrade() -> None:
    op.drop_table("project_members")
    op.drop_table("projects")
