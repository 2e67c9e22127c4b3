"""An index for the outbox's question: a channel's pending messages that are due

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Every publisher asks it every second; with one index per column the database picked the channel's
(or the state's) and read every message the channel ever sent.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
IRREVERSIBLE: str | None = None  # dropping an index loses nothing


def upgrade() -> None:
    op.create_index("ix_notifications_due", "notifications", ["channel", "state", "next_at_ms"])


def downgrade() -> None:
    # Safe: an index holds no data.
    op.drop_index("ix_notifications_due", table_name="notifications")
