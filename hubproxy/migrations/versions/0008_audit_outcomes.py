"""Download events get an id (journal replays insert each once), an outcome and the error code of refusals.

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_downloads") as batch:
        batch.add_column(sa.Column("outcome", sa.String(), nullable=True))
        batch.add_column(sa.Column("error", sa.String(), nullable=True))
        batch.add_column(sa.Column("event_id", sa.String(), nullable=True))
    op.create_index("ux_audit_downloads_event", "audit_downloads", ["event_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_audit_downloads_event", "audit_downloads")
    with op.batch_alter_table("audit_downloads") as batch:
        batch.drop_column("event_id")
        batch.drop_column("error")
        batch.drop_column("outcome")
