"""Witnesses of the collateral log: the newest cosignature of each witness, and the checkpoint
last put to the witnesses as it is served (the log's note with the cosignatures gathered for it).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.db

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collateral_cosignature",
        sa.Column("wallet_id", sa.String(length=128), nullable=False),
        sa.Column("witness", sa.String(length=300), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("received_at", gateway.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("wallet_id", "witness"),
    )
    op.create_table(
        "collateral_cosigned_checkpoint",
        sa.Column("wallet_id", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("cosigners", sa.SmallInteger(), nullable=False),
        sa.Column("signed_at", gateway.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("witnessed_at", gateway.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("wallet_id"),
    )


def downgrade() -> None:
    op.drop_table("collateral_cosigned_checkpoint")
    op.drop_table("collateral_cosignature")
