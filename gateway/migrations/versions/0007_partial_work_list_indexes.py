"""Partial indexes for the work lists: unsent outbox rows, unprocessed PvP inbox items,
locked PvP legs by deadline. The full indexes on sent_at, processed_at and state rewrote one
of their pages at every change of those columns, in every transaction; rows that are done
are never looked up through them.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# (old index, its columns; new index, its columns, its condition), per table
_CHANGES = (
    ("outbox", "ix_outbox_due", ["sent_at", "available_at"], "ix_outbox_unsent", ["id"],
     "sent_at IS NULL"),
    ("pvp_inbox", "ix_pvp_inbox_due", ["processed_at", "available_at"], "ix_pvp_inbox_pending",
     ["message_id"], "processed_at IS NULL"),
    ("pvp_leg", "ix_pvp_leg_state_deadline", ["state", "deadline"],
     "ix_pvp_leg_locked_deadline", ["deadline"], "state = 'locked'"),
)  # fmt: skip


def upgrade() -> None:
    for table, old, _old_columns, new, columns, where in _CHANGES:
        op.drop_index(old, table_name=table)
        op.create_index(
            new,
            table,
            columns,
            unique=False,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    for table, old, old_columns, new, _columns, _where in _CHANGES:
        op.drop_index(new, table_name=table)
        op.create_index(old, table, old_columns, unique=False)
