"""pvp_message_leg keyed by (uetr, message_id), without the separate uetr index; on SQLite a
WITHOUT ROWID table. Every lookup is by UETR: the table, its key index and the uetr index
were three b-trees written per link where one serves.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _create(name: str, key: tuple[str, str], **kw: Any) -> None:
    op.create_table(
        name,
        sa.Column("uetr", sa.String(length=36), nullable=False),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(["message_id"], ["pvp_message.id"]),
        sa.PrimaryKeyConstraint(*key, name=None),
        **kw,
    )


def _rebuild(key: tuple[str, str], **kw: Any) -> None:
    _create("pvp_message_leg_new", key, **kw)
    op.execute(
        "INSERT INTO pvp_message_leg_new (uetr, message_id) "
        "SELECT uetr, message_id FROM pvp_message_leg"
    )
    op.drop_table("pvp_message_leg")
    op.rename_table("pvp_message_leg_new", "pvp_message_leg")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(("uetr", "message_id"), sqlite_with_rowid=False)
        return
    op.drop_index("ix_pvp_message_leg_uetr", table_name="pvp_message_leg")
    op.drop_constraint("pvp_message_leg_pkey", "pvp_message_leg", type_="primary")
    op.create_primary_key("pvp_message_leg_pkey", "pvp_message_leg", ["uetr", "message_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(("message_id", "uetr"))
    else:
        op.drop_constraint("pvp_message_leg_pkey", "pvp_message_leg", type_="primary")
        op.create_primary_key("pvp_message_leg_pkey", "pvp_message_leg", ["message_id", "uetr"])
    op.create_index("ix_pvp_message_leg_uetr", "pvp_message_leg", ["uetr"], unique=False)
