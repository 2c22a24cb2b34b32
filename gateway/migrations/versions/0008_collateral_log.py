"""The collateral transparency log: the pool of entries waiting to be sequenced, the sequenced
entries, every complete subtree hash of the Merkle tree, and the signed checkpoints.

A trigger on ``ledger_entry`` puts every posted movement of a segregated collateral wallet into
the pool in the ledger transaction itself, so that no movement can escape the log, whichever
code path (or hand-written SQL) made it.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_SQLITE_TRIGGER = """
CREATE TRIGGER collateral_capture AFTER INSERT ON ledger_entry
WHEN NEW.posted_delta <> 0
 AND (SELECT kind FROM ledger_wallet WHERE id = NEW.wallet_id) = 'segregated_collateral'
BEGIN
  INSERT INTO collateral_pending (wallet_id, kind, ledger_seq, created_at)
  VALUES (NEW.wallet_id, 'dt', NEW.seq, NEW.created_at);
END
"""

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION collateral_capture() RETURNS trigger AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM ledger_wallet
             WHERE id = NEW.wallet_id AND kind = 'segregated_collateral') THEN
    INSERT INTO collateral_pending (wallet_id, kind, ledger_seq, created_at)
    VALUES (NEW.wallet_id, 'dt', NEW.seq, NEW.created_at);
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

_PG_TRIGGER = """
CREATE TRIGGER collateral_capture AFTER INSERT ON ledger_entry
FOR EACH ROW WHEN (NEW.posted_delta <> 0) EXECUTE FUNCTION collateral_capture()
"""


def upgrade() -> None:
    op.create_table(
        "collateral_pending",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("wallet_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("transfer_id", sa.String(length=128), nullable=True),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("log_index", sa.Integer(), nullable=True),
        sa.Column("created_at", gateway.db.UtcDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_collateral_pending_wallet", "collateral_pending", ["wallet_id", "id"])
    op.create_table(
        "collateral_entry",
        sa.Column("wallet_id", sa.String(length=128), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("transfer_id", sa.String(length=128), nullable=True),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("log_index", sa.Integer(), nullable=True),
        sa.Column("created_at", gateway.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("wallet_id", "idx"),
    )
    op.create_index(
        "ix_collateral_entry_transfer", "collateral_entry", ["wallet_id", "transfer_id"]
    )
    op.create_index("ix_collateral_entry_tx", "collateral_entry", ["wallet_id", "tx_hash"])
    op.create_index("ix_collateral_entry_kind", "collateral_entry", ["wallet_id", "kind", "idx"])
    op.create_table(
        "collateral_hash",
        sa.Column("wallet_id", sa.String(length=128), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("wallet_id", "level", "idx"),
    )
    op.create_table(
        "collateral_checkpoint",
        sa.Column("wallet_id", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("signed_at", gateway.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("wallet_id", "size"),
    )
    # The chain watcher finds a mint by its on-chain request id for every Minted event.
    op.create_index("ix_stablecoin_mint_request", "stablecoin_mint", ["request_id"])
    if op.get_bind().dialect.name == "sqlite":
        op.execute(_SQLITE_TRIGGER)
    else:
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS collateral_capture")
    else:
        op.execute("DROP TRIGGER IF EXISTS collateral_capture ON ledger_entry")
        op.execute("DROP FUNCTION IF EXISTS collateral_capture()")
    op.drop_index("ix_stablecoin_mint_request", table_name="stablecoin_mint")
    op.drop_table("collateral_checkpoint")
    op.drop_table("collateral_hash")
    op.drop_index("ix_collateral_entry_kind", table_name="collateral_entry")
    op.drop_index("ix_collateral_entry_tx", table_name="collateral_entry")
    op.drop_index("ix_collateral_entry_transfer", table_name="collateral_entry")
    op.drop_table("collateral_entry")
    op.drop_index("ix_collateral_pending_wallet", table_name="collateral_pending")
    op.drop_table("collateral_pending")
