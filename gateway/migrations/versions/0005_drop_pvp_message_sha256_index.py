"""PvP messages: no index on sha256. Nothing looks a message up by its digest (duplicates
are found by sender and message id), yet every message stored wrote an entry for it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_pvp_message_sha256", table_name="pvp_message")


def downgrade() -> None:
    op.create_index("ix_pvp_message_sha256", "pvp_message", ["sha256"], unique=False)
