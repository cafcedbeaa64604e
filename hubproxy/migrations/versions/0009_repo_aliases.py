"""Repo aliases: the canonical id the upstream gave for each spelling of a repo id clients used.

Revision ID: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "repo_aliases",
        sa.Column("repo_type", sa.String(), primary_key=True),
        sa.Column("alias", sa.String(), primary_key=True),  # lower-cased, as typed
        sa.Column("canonical", sa.String(), nullable=False),
        sa.Column("fetched_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("repo_aliases")
