"""API keys: an optional expiry, the time of last use (written at most once a minute per key
and replica) and the key a rotation replaced.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.add_column(
            sa.Column("expires_at", gateway.db.UtcDateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("last_used_at", gateway.db.UtcDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("replaces", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("replaces")
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
