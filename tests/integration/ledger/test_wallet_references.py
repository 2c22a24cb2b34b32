"""The ledger's rows name wallets that exist, and keep naming them, on SQLite (foreign keys) and on
PostgreSQL (statement triggers, migration 0014): a statement with one row naming no wallet is
refused whole, a wallet with history is never deleted or renamed. The collateral capture,
once per statement on PostgreSQL, pools exactly the segregated wallet's posted movements of a
hand-written many-row ``INSERT``, in ``seq`` order."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from gateway.ledger.store import entry_t, lock_t, transfer_t
from tests.integration.collateral.support import EXCHANGE, SEG, move, setup_wallets
from tests.support.databases import migrated_engine

AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _entry(wallet: str, ref: str, posted: int = 0, reserved: int = 0) -> dict[str, Any]:
    return {
        "wallet_id": wallet,
        "op": "transfer",
        "ref_id": ref,
        "posted_delta": posted,
        "reserved_delta": reserved,
        "posted_after": 0,
        "reserved_after": 0,
        "created_at": AT,
    }


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_entries_naming_no_wallet_are_refused_with_their_statement(engine: Engine) -> None:
    setup_wallets(engine)
    before = _count(engine, "ledger_entry")
    rows = [_entry(EXCHANGE, "ok", posted=-1), _entry("nowhere", "bad", posted=1)]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(entry_t.insert().values(rows))
    assert _count(engine, "ledger_entry") == before
    with engine.begin() as conn:  # the same rows with a wallet that exists go in
        conn.execute(entry_t.insert().values([rows[0], _entry("other", "fine", posted=1)]))
    assert _count(engine, "ledger_entry") == before + 2


@pytest.mark.parametrize("table", [lock_t, transfer_t], ids=["lock", "transfer"])
@pytest.mark.parametrize("side", ["debit_wallet_id", "credit_wallet_id"])
def test_locks_and_transfers_naming_no_wallet_are_refused(
    engine: Engine, table: sa.Table, side: str
) -> None:
    setup_wallets(engine)
    row: dict[str, Any] = {
        "id": "x-1",
        "debit_wallet_id": EXCHANGE,
        "credit_wallet_id": "other",
        "amount": 5,
        "currency": "KZT",
        "created_at": AT,
        "fingerprint": "0" * 64,
    }
    extra = {"state": "pending"} if table is lock_t else {"kind": "transfer"}
    good = {**row, **extra, "id": "x-0"}
    bad = {**row, **extra, side: "nowhere"}
    before = _count(engine, table.name)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(table.insert().values([good, bad]))
    assert _count(engine, table.name) == before


def test_a_wallet_with_history_is_never_deleted_or_renamed(engine: Engine) -> None:
    setup_wallets(engine)
    move(engine, "t-1", EXCHANGE, SEG, 10)
    for statement in (
        "DELETE FROM ledger_wallet WHERE id = :id",
        "UPDATE ledger_wallet SET id = 'renamed' WHERE id = :id",
    ):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(sa.text(statement), {"id": SEG})
    with engine.connect() as conn:
        q = sa.text("SELECT count(*) FROM ledger_wallet WHERE id = :id")
        assert conn.execute(q, {"id": SEG}).scalar_one() == 1


@pytest.mark.postgres
def test_postgresql_keeps_references_fixed_without_locks(
    pg_database_factory: Callable[[], str],
) -> None:
    """What the triggers add so that a check at the insert stays true with no row lock on the
    wallet: a row never moves to another wallet, and no wallet leaves the table (SQLite keeps
    its foreign keys)."""
    engine = migrated_engine(pg_database_factory(migrated=True))
    setup_wallets(engine)
    move(engine, "t-1", EXCHANGE, SEG, 10)
    for statement in (
        "UPDATE ledger_entry SET wallet_id = 'other' WHERE ref_id = 't-1'",
        "UPDATE ledger_transfer SET credit_wallet_id = 'other' WHERE id = 't-1'",
        "DELETE FROM ledger_wallet WHERE id = 'nowhere'",  # nothing to delete: refused still
        "TRUNCATE ledger_wallet CASCADE",
    ):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(sa.text(statement))
    with engine.begin() as conn:  # the ledger's own changes pass
        q = sa.text("UPDATE ledger_wallet SET status = status WHERE id = :id")
        conn.execute(q, {"id": SEG})
    engine.dispose()


def test_a_many_row_insert_pools_the_segregated_wallets_posted_movements_in_order(
    engine: Engine,
) -> None:
    setup_wallets(engine)
    rows = [
        _entry(SEG, "in-1", posted=7),
        _entry(EXCHANGE, "in-1", posted=-7),
        _entry(SEG, "lock-1", reserved=3),  # a reservation moves nothing posted
        _entry("other", "elsewhere", posted=2),
        _entry(SEG, "in-2", posted=4),
    ]
    with engine.begin() as conn:
        conn.execute(entry_t.insert().values(rows))
        pooled = conn.execute(
            sa.text(
                "SELECT p.wallet_id, p.kind, e.ref_id, e.posted_delta FROM collateral_pending p"
                " JOIN ledger_entry e ON e.seq = p.ledger_seq ORDER BY p.id"
            )
        ).all()
        seqs = conn.execute(
            sa.text("SELECT ledger_seq FROM collateral_pending ORDER BY id")
        ).scalars()
        assert list(seqs) == sorted(
            conn.execute(sa.text("SELECT ledger_seq FROM collateral_pending")).scalars()
        )
    assert [tuple(r) for r in pooled] == [(SEG, "dt", "in-1", 7), (SEG, "dt", "in-2", 4)]
