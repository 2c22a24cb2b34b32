"""PostgreSQL: ``ledger_wallet_changed(wallet_id)``, which raises a serialization failure. The
ledger reads a batch's wallets without row locks and writes their changes as deltas under the
batch's checks (``gateway/ledger/pgmoves.py``); a wallet that no longer passes them when written
(a concurrent batch spent the funds, a status changed) calls it, so that the transaction fails
however far its statements are queued (the COMMIT behind them included) and runs again.
Nothing on SQLite, whose writers take the database in turn.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_wallet_changed(wallet_id text) RETURNS boolean AS $$
BEGIN
  RAISE EXCEPTION 'wallet % changed since the ledger read it', wallet_id
    USING ERRCODE = 'serialization_failure';
END
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute(_PG_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS ledger_wallet_changed(text)")
