"""Webhook endpoints per exchange, each with its own secret, and the events they receive.

Earlier versions sent every exchange's events to one configured URL; that URL is adopted as an
endpoint at start-up (``stablecoin.webhook_url`` with ``stablecoin.webhook_exchange``), not
here: which exchange it belongs to is the operator's to say.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("exchange", sa.String(length=128), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", gateway.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("secret_rotated_at", gateway.db.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("slot >= 1", name="ck_webhook_endpoint_slot_pos"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("exchange", "slot", name="uq_webhook_endpoint_slot"),
        sa.UniqueConstraint("exchange", "url", name="uq_webhook_endpoint_url"),
    )
    op.create_table(
        "webhook_event",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("exchange", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("created_at", gateway.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id", name="uq_webhook_event_id"),
    )
    op.create_index("ix_webhook_event_exchange", "webhook_event", ["exchange", "seq"])
    op.create_index("ix_webhook_event_exchange_type", "webhook_event", ["exchange", "type", "seq"])


def downgrade() -> None:
    op.drop_index("ix_webhook_event_exchange_type", table_name="webhook_event")
    op.drop_index("ix_webhook_event_exchange", table_name="webhook_event")
    op.drop_table("webhook_event")
    op.drop_table("webhook_endpoint")
