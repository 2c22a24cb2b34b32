"""Ledger tables and the SQL repository. Tables never leave this module.

The hot path (:mod:`gateway.ledger.rawsql`) runs prebuilt SQL on the driver's cursor; the reads
off it are SQLAlchemy Core queries on these SQLModel tables (no ORM identity map). CHECK
constraints repeat the domain's invariants so that a bug cannot store a negative balance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from gateway.db import (
    SqlUnitOfWork,
    autoincrement_field,
    big_int_field,
    table_of,
    utc_field,
)
from gateway.ledger.model import (
    Entry,
    LockState,
    TransferKind,
    Wallet,
    WalletKind,
    WalletStatus,
)
from gateway.ledger.rawsql import HotPathLedgerSql
from gateway.messaging.outbox import OutboxRepository


class WalletRow(SQLModel, table=True):
    __tablename__ = "ledger_wallet"
    __table_args__ = (
        sa.CheckConstraint("reserved >= 0", name="ck_wallet_reserved_nonneg"),
        sa.CheckConstraint(
            "kind = 'issuance' OR posted >= reserved", name="ck_wallet_available_nonneg"
        ),
    )
    id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(max_length=32)
    owner: str = Field(max_length=200)
    currency: str = Field(max_length=3)
    status: str = Field(max_length=16)
    posted: int = big_int_field()
    reserved: int = big_int_field()
    created_at: datetime = utc_field()
    fingerprint: str = Field(max_length=64)


class TransferRow(SQLModel, table=True):
    __tablename__ = "ledger_transfer"
    __table_args__ = (sa.CheckConstraint("amount > 0", name="ck_transfer_amount_pos"),)
    id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(max_length=16)
    debit_wallet_id: str = Field(foreign_key="ledger_wallet.id", max_length=128)
    credit_wallet_id: str = Field(foreign_key="ledger_wallet.id", max_length=128)
    amount: int = big_int_field()
    currency: str = Field(max_length=3)
    reference: str | None = Field(default=None, max_length=200)
    created_at: datetime = utc_field()
    fingerprint: str = Field(max_length=64)


class LockRow(SQLModel, table=True):
    __tablename__ = "ledger_lock"
    __table_args__ = (
        sa.CheckConstraint("amount > 0", name="ck_lock_amount_pos"),
        sa.Index("ix_ledger_lock_pending_expiry", "state", "expires_at"),
    )
    id: str = Field(primary_key=True, max_length=128)
    debit_wallet_id: str = Field(foreign_key="ledger_wallet.id", max_length=128)
    credit_wallet_id: str = Field(foreign_key="ledger_wallet.id", max_length=128)
    amount: int = big_int_field()
    currency: str = Field(max_length=3)
    state: str = Field(max_length=16)
    condition: str | None = Field(default=None, max_length=64)
    fulfilment: str | None = Field(default=None, max_length=64)
    reference: str | None = Field(default=None, max_length=200)
    expires_at: datetime | None = utc_field(nullable=True)
    created_at: datetime = utc_field()
    resolved_at: datetime | None = utc_field(nullable=True)
    fingerprint: str = Field(max_length=64)


class EntryRow(SQLModel, table=True):
    __tablename__ = "ledger_entry"
    __table_args__ = (sa.Index("ix_ledger_entry_wallet_seq", "wallet_id", "seq"),)
    seq: int | None = autoincrement_field()
    wallet_id: str = Field(foreign_key="ledger_wallet.id", max_length=128)
    op: str = Field(max_length=32)
    ref_id: str = Field(max_length=128)
    posted_delta: int = big_int_field()
    reserved_delta: int = big_int_field()
    posted_after: int = big_int_field()
    reserved_after: int = big_int_field()
    created_at: datetime = utc_field()


wallet_t = table_of(WalletRow)
transfer_t = table_of(TransferRow)
lock_t = table_of(LockRow)
entry_t = table_of(EntryRow)


# ------------------------------------------------------------------ row <-> domain


def _wallet(row: Any) -> Wallet:
    return Wallet(
        id=row.id,
        kind=WalletKind(row.kind),
        owner=row.owner,
        currency=row.currency,
        status=WalletStatus(row.status),
        posted=row.posted,
        reserved=row.reserved,
        created_at=row.created_at,
        fingerprint=row.fingerprint,
    )


def _entry(row: Any) -> Entry:
    return Entry(
        seq=row.seq,
        wallet_id=row.wallet_id,
        op=row.op,
        ref_id=row.ref_id,
        posted_delta=row.posted_delta,
        reserved_delta=row.reserved_delta,
        posted_after=row.posted_after,
        reserved_after=row.reserved_after,
        created_at=row.created_at,
    )


_PG_EXPIRED_LOCK_IDS = (
    f"SELECT id FROM ledger_lock WHERE state = '{LockState.PENDING.value}' AND expires_at <= %s"
    " ORDER BY expires_at LIMIT %s"
)


class SqlLedgerRepository(HotPathLedgerSql):
    """Ledger reads and writes on one connection inside the caller's transaction: the hot path's
    (:class:`~gateway.ledger.rawsql.HotPathLedgerSql`) and, here, the reads off it (history,
    expiry, the invariant check's totals) as SQLAlchemy Core queries on the tables."""

    def _run(self, q: sa.Executable) -> Any:
        self.settle()  # writes left for the COMMIT first: the query must see them
        return self.conn.execute(q)

    def history(self, wallet_id: str, after_seq: int, limit: int) -> list[Entry]:
        q = (
            entry_t.select()
            .where(entry_t.c.wallet_id == wallet_id, entry_t.c.seq > after_seq)
            .order_by(entry_t.c.seq)
            .limit(limit)
        )
        return [_entry(r) for r in self._run(q)]

    def expired_lock_ids(self, now: datetime, limit: int) -> list[str]:
        if self.pipe is not None and self.pipe.keep_open:  # with the BEGIN: one round trip
            return [r[0] for r in self.pipe.fetch(_PG_EXPIRED_LOCK_IDS, (now, limit))]
        q = (
            sa.select(lock_t.c.id)
            .where(lock_t.c.state == LockState.PENDING.value, lock_t.c.expires_at <= now)
            .order_by(lock_t.c.expires_at)
            .limit(limit)
        )
        return list(self._run(q).scalars())

    def has_pending_locks_to(self, wallet_id: str) -> bool:
        q = (
            sa.select(lock_t.c.id)
            .where(
                lock_t.c.state == LockState.PENDING.value, lock_t.c.credit_wallet_id == wallet_id
            )
            .limit(1)
        )
        return self._run(q).first() is not None

    def all_wallets(self) -> list[Wallet]:
        return [_wallet(r) for r in self._run(wallet_t.select().order_by(wallet_t.c.id))]

    def wallets_owned(self, owner: str, kind: WalletKind) -> list[Wallet]:
        q = wallet_t.select().where(wallet_t.c.owner == owner, wallet_t.c.kind == kind.value)
        return [_wallet(r) for r in self._run(q.order_by(wallet_t.c.id))]

    def pending_reserved_by_wallet(self) -> dict[str, int]:
        q = (
            sa.select(lock_t.c.debit_wallet_id, sa.func.sum(lock_t.c.amount))
            .where(lock_t.c.state == LockState.PENDING.value)
            .group_by(lock_t.c.debit_wallet_id)
        )
        return {wid: int(total) for wid, total in self._run(q)}

    def transfer_totals(self) -> dict[TransferKind, int]:
        q = sa.select(transfer_t.c.kind, sa.func.sum(transfer_t.c.amount)).group_by(
            transfer_t.c.kind
        )
        return {TransferKind(kind): int(total) for kind, total in self._run(q)}

    def entry_totals_by_wallet(self) -> dict[str, tuple[int, int]]:
        q = sa.select(
            entry_t.c.wallet_id,
            sa.func.sum(entry_t.c.posted_delta),
            sa.func.sum(entry_t.c.reserved_delta),
        ).group_by(entry_t.c.wallet_id)
        return {wid: (int(p), int(r)) for wid, p, r in self._run(q)}


class LedgerUnitOfWork(SqlUnitOfWork):
    """A transaction with the ledger and the outbox: what the ledger service needs.

    On PostgreSQL its statements share the transaction's pipeline (``gateway.db``): the
    BEGIN goes with the reads, the COMMIT with the writes, two round trips an operation."""

    pipelined = True
    ledger: SqlLedgerRepository
    outbox: OutboxRepository

    def _bind(self, conn: Connection) -> None:
        self.ledger = SqlLedgerRepository(conn, pipeline=self.pg)
        self.outbox = OutboxRepository(conn)  # its add() queues in the pipeline too


__all__ = [
    "EntryRow",
    "LedgerUnitOfWork",
    "LockRow",
    "SqlLedgerRepository",
    "TransferRow",
    "WalletRow",
]
