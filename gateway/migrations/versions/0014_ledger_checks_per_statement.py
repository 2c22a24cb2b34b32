"""PostgreSQL: the ledger's checks on its rows run once per statement, not once per row.

The ledger writes a batch in a few statements (``gateway/ledger/pgmoves.py``: 100 locks and
their commits are 100 lock rows and ~300 entries). Two checks ran once per row:

- ``collateral_capture``, a PL/pgSQL call and a look-up of the entry's wallet for each entry
  whose posted amount moved. It now runs once per ``INSERT`` into ``ledger_entry``, over the
  rows inserted (a transition table): every posted movement of a segregated collateral wallet
  still enters the pool in the same transaction, in ``seq`` order, whichever statement (or
  hand-written SQL, or ``COPY``) inserted it.
- The foreign keys of ``ledger_entry``, ``ledger_lock`` and ``ledger_transfer`` to
  ``ledger_wallet``. Each row's check was a query that took a ``FOR KEY SHARE`` lock on its
  wallet; every PvP of a participant names the same wallets, which the ledger updates in the
  same transactions, and these locks were a third of the server's CPU per lock+commit pair in
  the ledger benchmark. A statement trigger now refuses the statement if a row names a wallet
  that does not exist (SQLSTATE 23503, as the foreign key did), and ``ledger_wallet`` refuses
  ``DELETE``, ``TRUNCATE`` and a change of ``id`` (SQLSTATE 23001): a wallet, once there, stays
  there under the same id, so the check needs no lock to stay true until the commit.

SQLite keeps its row trigger (migration 0008) and its foreign keys: a check there is a step of
the statement's own program, with no call or lock to pay for.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_FOREIGN_KEYS = (
    ("ledger_entry", "wallet_id"),
    ("ledger_lock", "debit_wallet_id"),
    ("ledger_lock", "credit_wallet_id"),
    ("ledger_transfer", "debit_wallet_id"),
    ("ledger_transfer", "credit_wallet_id"),
)

_CAPTURE = """
CREATE OR REPLACE FUNCTION collateral_capture_entries() RETURNS trigger AS $$
BEGIN
  INSERT INTO collateral_pending (wallet_id, kind, ledger_seq, created_at)
  SELECT e.wallet_id, 'dt', e.seq, e.created_at
  FROM new_rows e JOIN ledger_wallet w ON w.id = e.wallet_id
  WHERE e.posted_delta <> 0 AND w.kind = 'segregated_collateral'
  ORDER BY e.seq;
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""


def _wallets_exist(function: str, wallet_ids: str) -> str:
    """A statement trigger's function: refuse the statement if one of ``wallet_ids`` (a query
    over the inserted rows, ``new_rows``) names no wallet."""
    return f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger AS $$
DECLARE
  missing text;
BEGIN
  SELECT x.id INTO missing FROM ({wallet_ids}) x
  WHERE NOT EXISTS (SELECT 1 FROM ledger_wallet w WHERE w.id = x.id)
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION '% names wallet %, which does not exist', TG_TABLE_NAME, missing
      USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""


_ENTRY_WALLETS = _wallets_exist(
    "ledger_entry_wallets_exist", "SELECT DISTINCT wallet_id AS id FROM new_rows"
)
# ledger_lock and ledger_transfer: a debit and a credit wallet each.
_PAIR_WALLETS = _wallets_exist(
    "ledger_pair_wallets_exist",
    "SELECT debit_wallet_id AS id FROM new_rows UNION SELECT credit_wallet_id FROM new_rows",
)

_WALLET_KEPT = """
CREATE OR REPLACE FUNCTION ledger_wallet_kept() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'refused % on %: a wallet is never deleted or given another id, and a'
    ' row never changes the wallets it names', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'restrict_violation';
END
$$ LANGUAGE plpgsql
"""

_TRIGGERS = (
    "CREATE TRIGGER collateral_capture AFTER INSERT ON ledger_entry"
    " REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION collateral_capture_entries()",
    "CREATE TRIGGER ledger_entry_wallets AFTER INSERT ON ledger_entry"
    " REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION ledger_entry_wallets_exist()",
    "CREATE TRIGGER ledger_lock_wallets AFTER INSERT ON ledger_lock"
    " REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION ledger_pair_wallets_exist()",
    "CREATE TRIGGER ledger_transfer_wallets AFTER INSERT ON ledger_transfer"
    " REFERENCING NEW TABLE AS new_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION ledger_pair_wallets_exist()",
    # An entry, a lock or a transfer never changes its wallets (the foreign keys checked it).
    "CREATE TRIGGER ledger_entry_wallet_fixed BEFORE UPDATE OF wallet_id ON ledger_entry"
    " FOR EACH ROW WHEN (OLD.wallet_id IS DISTINCT FROM NEW.wallet_id)"
    " EXECUTE FUNCTION ledger_wallet_kept()",
    "CREATE TRIGGER ledger_lock_wallets_fixed"
    " BEFORE UPDATE OF debit_wallet_id, credit_wallet_id ON ledger_lock FOR EACH ROW"
    " WHEN (OLD.debit_wallet_id IS DISTINCT FROM NEW.debit_wallet_id"
    " OR OLD.credit_wallet_id IS DISTINCT FROM NEW.credit_wallet_id)"
    " EXECUTE FUNCTION ledger_wallet_kept()",
    "CREATE TRIGGER ledger_transfer_wallets_fixed"
    " BEFORE UPDATE OF debit_wallet_id, credit_wallet_id ON ledger_transfer FOR EACH ROW"
    " WHEN (OLD.debit_wallet_id IS DISTINCT FROM NEW.debit_wallet_id"
    " OR OLD.credit_wallet_id IS DISTINCT FROM NEW.credit_wallet_id)"
    " EXECUTE FUNCTION ledger_wallet_kept()",
    "CREATE TRIGGER ledger_wallet_not_deleted BEFORE DELETE ON ledger_wallet"
    " FOR EACH STATEMENT EXECUTE FUNCTION ledger_wallet_kept()",
    "CREATE TRIGGER ledger_wallet_not_truncated BEFORE TRUNCATE ON ledger_wallet"
    " FOR EACH STATEMENT EXECUTE FUNCTION ledger_wallet_kept()",
    "CREATE TRIGGER ledger_wallet_id_fixed BEFORE UPDATE OF id ON ledger_wallet"
    " FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)"
    " EXECUTE FUNCTION ledger_wallet_kept()",
)

_TRIGGER_TABLES = (
    ("collateral_capture", "ledger_entry"),
    ("ledger_entry_wallets", "ledger_entry"),
    ("ledger_lock_wallets", "ledger_lock"),
    ("ledger_transfer_wallets", "ledger_transfer"),
    ("ledger_entry_wallet_fixed", "ledger_entry"),
    ("ledger_lock_wallets_fixed", "ledger_lock"),
    ("ledger_transfer_wallets_fixed", "ledger_transfer"),
    ("ledger_wallet_not_deleted", "ledger_wallet"),
    ("ledger_wallet_not_truncated", "ledger_wallet"),
    ("ledger_wallet_id_fixed", "ledger_wallet"),
)

_FUNCTIONS = (
    "collateral_capture_entries()",
    "ledger_entry_wallets_exist()",
    "ledger_pair_wallets_exist()",
    "ledger_wallet_kept()",
)

# Migration 0008's row trigger, to go back to.
_ROW_CAPTURE = """
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

_ROW_CAPTURE_TRIGGER = """
CREATE TRIGGER collateral_capture AFTER INSERT ON ledger_entry
FOR EACH ROW WHEN (NEW.posted_delta <> 0) EXECUTE FUNCTION collateral_capture()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("DROP TRIGGER IF EXISTS collateral_capture ON ledger_entry")
    op.execute("DROP FUNCTION IF EXISTS collateral_capture()")
    for table, column in _FOREIGN_KEYS:
        op.drop_constraint(f"{table}_{column}_fkey", table, type_="foreignkey")
    for function in (_CAPTURE, _ENTRY_WALLETS, _PAIR_WALLETS, _WALLET_KEPT):
        op.execute(function)
    for trigger in _TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for trigger, table in _TRIGGER_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    for function in _FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    for table, column in _FOREIGN_KEYS:
        op.create_foreign_key(f"{table}_{column}_fkey", table, "ledger_wallet", [column], ["id"])
    op.execute(_ROW_CAPTURE)
    op.execute(_ROW_CAPTURE_TRIGGER)
