"""Ledger tables and the SQL repository. Tables never leave this module.

The hot path uses SQLAlchemy Core statements on these SQLModel tables (no ORM identity map):
one ``SELECT ... FOR UPDATE`` per kind of row a batch touches, then ``executemany`` writes.
CHECK constraints repeat the domain's invariants so that a bug cannot store a negative balance.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from gateway.db import SqlUnitOfWork, UtcDateTime, table_of
from gateway.ledger.model import (
    Entry,
    Lock,
    LockState,
    Transfer,
    TransferKind,
    Wallet,
    WalletKind,
    WalletStatus,
)
from gateway.outbox import OutboxRepository


def _big(**kw: Any) -> Any:
    return Field(sa_column=sa.Column(sa.BigInteger, nullable=False, **kw))


def _ts(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=nullable))


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
    posted: int = _big()
    reserved: int = _big()
    created_at: datetime = _ts()
    fingerprint: str = Field(max_length=64)


class TransferRow(SQLModel, table=True):
    __tablename__ = "ledger_transfer"
    __table_args__ = (sa.CheckConstraint("amount > 0", name="ck_transfer_amount_pos"),)
    id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(max_length=16)
    debit_wallet_id: str = Field(foreign_key="ledger_wallet.id", max_length=128)
    credit_wallet_id: str = Field(foreign_key="ledger_wallet.id", max_length=128)
    amount: int = _big()
    currency: str = Field(max_length=3)
    reference: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()
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
    amount: int = _big()
    currency: str = Field(max_length=3)
    state: str = Field(max_length=16)
    condition: str | None = Field(default=None, max_length=64)
    fulfilment: str | None = Field(default=None, max_length=64)
    reference: str | None = Field(default=None, max_length=200)
    expires_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    resolved_at: datetime | None = _ts(nullable=True)
    fingerprint: str = Field(max_length=64)


class EntryRow(SQLModel, table=True):
    __tablename__ = "ledger_entry"
    __table_args__ = (sa.Index("ix_ledger_entry_wallet_seq", "wallet_id", "seq"),)
    seq: int | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )
    wallet_id: str = Field(foreign_key="ledger_wallet.id", max_length=128)
    op: str = Field(max_length=32)
    ref_id: str = Field(max_length=128)
    posted_delta: int = _big()
    reserved_delta: int = _big()
    posted_after: int = _big()
    reserved_after: int = _big()
    created_at: datetime = _ts()


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


def _wallet_values(w: Wallet) -> dict[str, Any]:
    return {
        "id": w.id,
        "kind": w.kind.value,
        "owner": w.owner,
        "currency": w.currency,
        "status": w.status.value,
        "posted": w.posted,
        "reserved": w.reserved,
        "created_at": w.created_at,
        "fingerprint": w.fingerprint,
    }


def _transfer(row: Any) -> Transfer:
    return Transfer(
        id=row.id,
        kind=TransferKind(row.kind),
        debit_wallet_id=row.debit_wallet_id,
        credit_wallet_id=row.credit_wallet_id,
        amount=row.amount,
        currency=row.currency,
        created_at=row.created_at,
        reference=row.reference,
        fingerprint=row.fingerprint,
    )


def _lock(row: Any) -> Lock:
    return Lock(
        id=row.id,
        debit_wallet_id=row.debit_wallet_id,
        credit_wallet_id=row.credit_wallet_id,
        amount=row.amount,
        currency=row.currency,
        created_at=row.created_at,
        expires_at=row.expires_at,
        condition=row.condition,
        state=LockState(row.state),
        resolved_at=row.resolved_at,
        fulfilment=row.fulfilment,
        reference=row.reference,
        fingerprint=row.fingerprint,
    )


def _lock_values(lk: Lock) -> dict[str, Any]:
    return {
        "id": lk.id,
        "debit_wallet_id": lk.debit_wallet_id,
        "credit_wallet_id": lk.credit_wallet_id,
        "amount": lk.amount,
        "currency": lk.currency,
        "state": lk.state.value,
        "condition": lk.condition,
        "fulfilment": lk.fulfilment,
        "reference": lk.reference,
        "expires_at": lk.expires_at,
        "created_at": lk.created_at,
        "resolved_at": lk.resolved_at,
        "fingerprint": lk.fingerprint,
    }


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


_UPDATE_WALLET = (
    wallet_t.update()
    .where(wallet_t.c.id == sa.bindparam("b_id"))
    .values(
        status=sa.bindparam("status"),
        posted=sa.bindparam("posted"),
        reserved=sa.bindparam("reserved"),
    )
)
_UPDATE_LOCK = (
    lock_t.update()
    .where(lock_t.c.id == sa.bindparam("b_id"))
    .values(
        state=sa.bindparam("state"),
        fulfilment=sa.bindparam("fulfilment"),
        resolved_at=sa.bindparam("resolved_at"),
    )
)


class SqlLedgerRepository:
    """Ledger reads and writes on one connection inside the caller's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._for_update = conn.dialect.name != "sqlite"

    # reads ----------------------------------------------------------------

    def wallets_for_update(self, ids: Collection[str]) -> dict[str, Wallet]:
        """Load and row-lock wallets, always in id order, so concurrent batches cannot deadlock."""
        if not ids:
            return {}
        q = wallet_t.select().where(wallet_t.c.id.in_(sorted(ids))).order_by(wallet_t.c.id)
        if self._for_update:
            q = q.with_for_update()
        return {r.id: _wallet(r) for r in self.conn.execute(q)}

    def locks_for_update(self, ids: Collection[str]) -> dict[str, Lock]:
        """Locks are row-locked before wallets, in id order (the global lock order)."""
        if not ids:
            return {}
        q = lock_t.select().where(lock_t.c.id.in_(sorted(ids))).order_by(lock_t.c.id)
        if self._for_update:
            q = q.with_for_update()
        return {r.id: _lock(r) for r in self.conn.execute(q)}

    def transfers(self, ids: Collection[str]) -> dict[str, Transfer]:
        if not ids:
            return {}
        q = transfer_t.select().where(transfer_t.c.id.in_(list(ids)))
        return {r.id: _transfer(r) for r in self.conn.execute(q)}

    def wallet(self, wallet_id: str) -> Wallet | None:
        row = self.conn.execute(wallet_t.select().where(wallet_t.c.id == wallet_id)).first()
        return _wallet(row) if row else None

    def lock(self, lock_id: str) -> Lock | None:
        row = self.conn.execute(lock_t.select().where(lock_t.c.id == lock_id)).first()
        return _lock(row) if row else None

    def transfer(self, transfer_id: str) -> Transfer | None:
        return self.transfers([transfer_id]).get(transfer_id)

    def history(self, wallet_id: str, after_seq: int, limit: int) -> list[Entry]:
        q = (
            entry_t.select()
            .where(entry_t.c.wallet_id == wallet_id, entry_t.c.seq > after_seq)
            .order_by(entry_t.c.seq)
            .limit(limit)
        )
        return [_entry(r) for r in self.conn.execute(q)]

    def expired_lock_ids(self, now: datetime, limit: int) -> list[str]:
        q = (
            sa.select(lock_t.c.id)
            .where(lock_t.c.state == LockState.PENDING.value, lock_t.c.expires_at <= now)
            .order_by(lock_t.c.expires_at)
            .limit(limit)
        )
        return list(self.conn.execute(q).scalars())

    def has_pending_locks_to(self, wallet_id: str) -> bool:
        q = (
            sa.select(lock_t.c.id)
            .where(
                lock_t.c.state == LockState.PENDING.value, lock_t.c.credit_wallet_id == wallet_id
            )
            .limit(1)
        )
        return self.conn.execute(q).first() is not None

    def all_wallets(self) -> list[Wallet]:
        return [_wallet(r) for r in self.conn.execute(wallet_t.select().order_by(wallet_t.c.id))]

    def pending_reserved_by_wallet(self) -> dict[str, int]:
        q = (
            sa.select(lock_t.c.debit_wallet_id, sa.func.sum(lock_t.c.amount))
            .where(lock_t.c.state == LockState.PENDING.value)
            .group_by(lock_t.c.debit_wallet_id)
        )
        return {wid: int(total) for wid, total in self.conn.execute(q)}

    def transfer_totals(self) -> dict[TransferKind, int]:
        q = sa.select(transfer_t.c.kind, sa.func.sum(transfer_t.c.amount)).group_by(
            transfer_t.c.kind
        )
        return {TransferKind(kind): int(total) for kind, total in self.conn.execute(q)}

    def entry_totals_by_wallet(self) -> dict[str, tuple[int, int]]:
        q = sa.select(
            entry_t.c.wallet_id,
            sa.func.sum(entry_t.c.posted_delta),
            sa.func.sum(entry_t.c.reserved_delta),
        ).group_by(entry_t.c.wallet_id)
        return {wid: (int(p), int(r)) for wid, p, r in self.conn.execute(q)}

    # writes ---------------------------------------------------------------

    def insert_wallets(self, wallets: Sequence[Wallet]) -> None:
        if wallets:
            self.conn.execute(wallet_t.insert(), [_wallet_values(w) for w in wallets])

    def update_wallets(self, wallets: Iterable[Wallet]) -> None:
        params = [
            {"b_id": w.id, "status": w.status.value, "posted": w.posted, "reserved": w.reserved}
            for w in wallets
        ]
        if params:
            self.conn.execute(_UPDATE_WALLET, params)

    def insert_transfers(self, transfers: Sequence[Transfer]) -> None:
        if transfers:
            self.conn.execute(
                transfer_t.insert(),
                [
                    {
                        "id": t.id,
                        "kind": t.kind.value,
                        "debit_wallet_id": t.debit_wallet_id,
                        "credit_wallet_id": t.credit_wallet_id,
                        "amount": t.amount,
                        "currency": t.currency,
                        "reference": t.reference,
                        "created_at": t.created_at,
                        "fingerprint": t.fingerprint,
                    }
                    for t in transfers
                ],
            )

    def insert_locks(self, locks: Sequence[Lock]) -> None:
        if locks:
            self.conn.execute(lock_t.insert(), [_lock_values(lk) for lk in locks])

    def update_locks(self, locks: Iterable[Lock]) -> None:
        params = [
            {
                "b_id": lk.id,
                "state": lk.state.value,
                "fulfilment": lk.fulfilment,
                "resolved_at": lk.resolved_at,
            }
            for lk in locks
        ]
        if params:
            self.conn.execute(_UPDATE_LOCK, params)

    def insert_entries(self, entries: Sequence[dict[str, Any]]) -> None:
        if entries:
            self.conn.execute(entry_t.insert(), list(entries))


class LedgerUnitOfWork(SqlUnitOfWork):
    """A transaction with the ledger and the outbox: what the ledger service needs."""

    ledger: SqlLedgerRepository
    outbox: OutboxRepository

    def _bind(self, conn: Connection) -> None:
        self.ledger = SqlLedgerRepository(conn)
        self.outbox = OutboxRepository(conn)


__all__ = [
    "EntryRow",
    "LedgerUnitOfWork",
    "LockRow",
    "SqlLedgerRepository",
    "TransferRow",
    "WalletRow",
]
