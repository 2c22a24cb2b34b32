"""Stablecoin tables and the SQL repository. Tables never leave this module.

- ``stablecoin_mint``: one row per mint request; ``(exchange, idempotency_key)`` is unique, so a
  retried HTTP request finds its mint instead of moving DT twice.
- ``stablecoin_redemption``: one row per ``Redeemed`` log; ``(tx_hash, log_index)`` is unique,
  so the DT of a redemption is paid at most once whatever the watcher replays.
- ``stablecoin_cursor``: the last block the redemption watcher finished, with its hash (a
  changed hash means a reorganisation: the watcher rewinds).
- ``stablecoin_reconciliation``: every reconciliation's figures; the newest one gates minting.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from gateway.collateral.store import CollateralRepository
from gateway.db import SqlUnitOfWork, autoincrement_field, big_int_field, table_of, utc_field
from gateway.ledger.store import SqlLedgerRepository
from gateway.messaging.outbox import OutboxRepository
from gateway.stablecoin.model import (
    Cursor,
    Mint,
    MintState,
    Reconciliation,
    Redemption,
    RedemptionState,
)


class MintRow(SQLModel, table=True):
    __tablename__ = "stablecoin_mint"
    __table_args__ = (
        sa.UniqueConstraint("exchange", "idempotency_key", name="uq_stablecoin_mint_idem"),
        sa.CheckConstraint("amount > 0", name="ck_stablecoin_mint_amount_pos"),
        sa.Index("ix_stablecoin_mint_state", "state", "updated_at"),
        sa.Index("ix_stablecoin_mint_request", "request_id"),
    )
    id: str = Field(primary_key=True, max_length=64)
    exchange: str = Field(max_length=128)
    idempotency_key: str = Field(max_length=128)
    fingerprint: str = Field(max_length=64)
    source_wallet_id: str = Field(max_length=128)
    segregated_wallet_id: str = Field(max_length=128)
    contract_address: str = Field(max_length=42)
    evm_address: str = Field(max_length=42)
    amount: int = big_int_field()
    request_id: str = Field(max_length=64)
    state: str = Field(max_length=16)
    tx_hash: str | None = Field(default=None, max_length=66)
    block_number: int | None = big_int_field(nullable=True)
    error_code: str | None = Field(default=None, max_length=64)
    error_detail: str | None = Field(default=None, max_length=500)
    created_at: datetime = utc_field()
    updated_at: datetime = utc_field()


class RedemptionRow(SQLModel, table=True):
    __tablename__ = "stablecoin_redemption"
    __table_args__ = (
        sa.UniqueConstraint("tx_hash", "log_index", name="uq_stablecoin_redemption_log"),
        sa.CheckConstraint("amount > 0", name="ck_stablecoin_redemption_amount_pos"),
        sa.Index("ix_stablecoin_redemption_exchange", "exchange", "seq"),
    )
    seq: int | None = autoincrement_field()
    tx_hash: str = Field(max_length=66)
    log_index: int
    contract_address: str = Field(max_length=42)
    block_number: int = big_int_field()
    block_hash: str = Field(max_length=66)
    redeemer: str = Field(max_length=42)
    amount: int = big_int_field()
    dt_wallet_ref: str = Field(max_length=200)
    exchange: str = Field(default="", max_length=128)
    state: str = Field(max_length=16)
    transfer_id: str | None = Field(default=None, max_length=128)
    reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = utc_field()
    resolved_by: str | None = Field(default=None, max_length=32)
    resolved_at: datetime | None = utc_field(nullable=True)


class CursorRow(SQLModel, table=True):
    __tablename__ = "stablecoin_cursor"
    contract_address: str = Field(primary_key=True, max_length=42)
    block_number: int = big_int_field()
    block_hash: str | None = Field(default=None, max_length=66)
    updated_at: datetime = utc_field()


class ReconciliationRow(SQLModel, table=True):
    __tablename__ = "stablecoin_reconciliation"
    __table_args__ = (sa.Index("ix_stablecoin_reconciliation_contract", "contract_address", "seq"),)
    seq: int | None = autoincrement_field()
    contract_address: str = Field(max_length=42)
    checked_at: datetime = utc_field()
    block_number: int = big_int_field()
    segregated_balance: int = big_int_field()
    pending_mints: int = big_int_field()
    unpaid_redemptions: int = big_int_field()
    total_supply: int = big_int_field()
    gap: int = big_int_field()
    ok: bool


mint_t = table_of(MintRow)
redemption_t = table_of(RedemptionRow)
cursor_t = table_of(CursorRow)
reconciliation_t = table_of(ReconciliationRow)


# ------------------------------------------------------------------ row <-> domain


def _mint(row: Any) -> Mint:
    return Mint(
        id=row.id,
        exchange=row.exchange,
        idempotency_key=row.idempotency_key,
        fingerprint=row.fingerprint,
        source_wallet_id=row.source_wallet_id,
        segregated_wallet_id=row.segregated_wallet_id,
        contract_address=row.contract_address,
        evm_address=row.evm_address,
        amount=row.amount,
        request_id=row.request_id,
        state=MintState(row.state),
        tx_hash=row.tx_hash,
        block_number=row.block_number,
        error_code=row.error_code,
        error_detail=row.error_detail,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _mint_values(m: Mint) -> dict[str, Any]:
    return {
        "id": m.id,
        "exchange": m.exchange,
        "idempotency_key": m.idempotency_key,
        "fingerprint": m.fingerprint,
        "source_wallet_id": m.source_wallet_id,
        "segregated_wallet_id": m.segregated_wallet_id,
        "contract_address": m.contract_address,
        "evm_address": m.evm_address,
        "amount": m.amount,
        "request_id": m.request_id,
        "state": m.state.value,
        "tx_hash": m.tx_hash,
        "block_number": m.block_number,
        "error_code": m.error_code,
        "error_detail": m.error_detail,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    }


def _redemption(row: Any) -> Redemption:
    return Redemption(
        seq=row.seq,
        tx_hash=row.tx_hash,
        log_index=row.log_index,
        contract_address=row.contract_address,
        block_number=row.block_number,
        block_hash=row.block_hash,
        redeemer=row.redeemer,
        amount=row.amount,
        dt_wallet_ref=row.dt_wallet_ref,
        exchange=row.exchange,
        state=RedemptionState(row.state),
        transfer_id=row.transfer_id,
        reason=row.reason,
        created_at=row.created_at,
        resolved_by=row.resolved_by,
        resolved_at=row.resolved_at,
    )


def _reconciliation(row: Any) -> Reconciliation:
    return Reconciliation(
        seq=row.seq,
        contract_address=row.contract_address,
        checked_at=row.checked_at,
        block_number=row.block_number,
        segregated_balance=row.segregated_balance,
        pending_mints=row.pending_mints,
        unpaid_redemptions=row.unpaid_redemptions,
        total_supply=row.total_supply,
        gap=row.gap,
    )


class SqlStablecoinRepository:
    """Stablecoin reads and writes on one connection inside the caller's transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._for_update = conn.dialect.name != "sqlite"

    # mints ----------------------------------------------------------------

    def mint(self, mint_id: str, *, for_update: bool = False) -> Mint | None:
        q = mint_t.select().where(mint_t.c.id == mint_id)
        if for_update and self._for_update:
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        return _mint(row) if row else None

    def mint_by_key(self, exchange: str, idempotency_key: str) -> Mint | None:
        q = mint_t.select().where(
            mint_t.c.exchange == exchange, mint_t.c.idempotency_key == idempotency_key
        )
        row = self.conn.execute(q).first()
        return _mint(row) if row else None

    def mint_by_request_id(self, request_id_hex: str) -> Mint | None:
        """The mint whose on-chain request id this is (hex, no 0x), if the gateway made it."""
        row = self.conn.execute(
            mint_t.select().where(mint_t.c.request_id == request_id_hex)
        ).first()
        return _mint(row) if row else None

    def add_mint(self, m: Mint) -> None:
        self.conn.execute(mint_t.insert(), _mint_values(m))

    def update_mint(self, m: Mint) -> None:
        values = _mint_values(m)
        values.pop("id")
        self.conn.execute(mint_t.update().where(mint_t.c.id == m.id).values(**values))

    def mints_in(
        self, states: Sequence[MintState], contract: str, updated_before: datetime, limit: int
    ) -> list[Mint]:
        q = (
            mint_t.select()
            .where(
                mint_t.c.state.in_([s.value for s in states]),
                mint_t.c.contract_address == contract,
                mint_t.c.updated_at <= updated_before,
            )
            .order_by(mint_t.c.updated_at)
            .limit(limit)
        )
        return [_mint(r) for r in self.conn.execute(q)]

    def mints_of(
        self,
        contract: str,
        exchange: str,
        limit: int,
        *,
        state: MintState | None = None,
        after_id: str | None = None,
    ) -> list[Mint]:
        """An exchange's mints, oldest first (by creation, then id); ``after_id``: those after
        that mint (the page's cursor, one of the exchange's mints)."""
        q = mint_t.select().where(
            mint_t.c.contract_address == contract, mint_t.c.exchange == exchange
        )
        if state is not None:
            q = q.where(mint_t.c.state == state.value)
        if after_id is not None:
            at = sa.select(mint_t.c.created_at).where(mint_t.c.id == after_id).scalar_subquery()
            q = q.where(
                sa.or_(
                    mint_t.c.created_at > at,
                    sa.and_(mint_t.c.created_at == at, mint_t.c.id > after_id),
                )
            )
        q = q.order_by(mint_t.c.created_at, mint_t.c.id).limit(limit)
        return [_mint(r) for r in self.conn.execute(q)]

    def unsettled_mints(self, contract: str) -> list[Mint]:
        """Mints whose DT sits in the segregated wallet but that may not be on-chain yet."""
        q = mint_t.select().where(
            mint_t.c.contract_address == contract,
            mint_t.c.state.in_(
                [MintState.ACCEPTED.value, MintState.SUBMITTED.value, MintState.FAILED.value]
            ),
        )
        return [_mint(r) for r in self.conn.execute(q)]

    def minted_after(self, contract: str, block_number: int) -> int:
        q = sa.select(sa.func.coalesce(sa.func.sum(mint_t.c.amount), 0)).where(
            mint_t.c.contract_address == contract,
            mint_t.c.state == MintState.MINTED.value,
            mint_t.c.block_number > block_number,
        )
        return int(self.conn.execute(q).scalar_one())

    # redemptions ------------------------------------------------------------

    def redemption(
        self, tx_hash: str, log_index: int, *, for_update: bool = False
    ) -> Redemption | None:
        q = redemption_t.select().where(
            redemption_t.c.tx_hash == tx_hash, redemption_t.c.log_index == log_index
        )
        if for_update and self.conn.dialect.name != "sqlite":
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        return _redemption(row) if row else None

    def add_redemption(self, r: Redemption) -> None:
        self.conn.execute(
            redemption_t.insert(),
            {
                "tx_hash": r.tx_hash,
                "log_index": r.log_index,
                "contract_address": r.contract_address,
                "block_number": r.block_number,
                "block_hash": r.block_hash,
                "redeemer": r.redeemer,
                "amount": r.amount,
                "dt_wallet_ref": r.dt_wallet_ref,
                "exchange": r.exchange,
                "state": r.state.value,
                "transfer_id": r.transfer_id,
                "reason": r.reason,
                "created_at": r.created_at,
                "resolved_by": r.resolved_by,
                "resolved_at": r.resolved_at,
            },
        )

    def update_redemption(self, r: Redemption) -> None:
        self.conn.execute(
            redemption_t.update()
            .where(redemption_t.c.tx_hash == r.tx_hash, redemption_t.c.log_index == r.log_index)
            .values(
                state=r.state.value,
                exchange=r.exchange,
                transfer_id=r.transfer_id,
                reason=r.reason,
                resolved_by=r.resolved_by,
                resolved_at=r.resolved_at,
            )
        )

    def redemptions(
        self,
        contract: str,
        exchange: str | None,
        after_seq: int,
        limit: int,
        *,
        state: RedemptionState | None = None,
        held_refs: Collection[str] = (),
    ) -> list[Redemption]:
        """Oldest first. With ``exchange``, its redemptions, and the held ones recorded with no
        exchange whose reference is one of ``held_refs`` (its wallets)."""
        q = redemption_t.select().where(
            redemption_t.c.contract_address == contract, redemption_t.c.seq > after_seq
        )
        if exchange is not None:
            mine = redemption_t.c.exchange == exchange
            if held_refs:
                unassigned_held = sa.and_(
                    redemption_t.c.exchange == "",
                    redemption_t.c.state == RedemptionState.HELD.value,
                    redemption_t.c.dt_wallet_ref.in_(sorted(held_refs)),
                )
                mine = sa.or_(mine, unassigned_held)
            q = q.where(mine)
        if state is not None:
            q = q.where(redemption_t.c.state == state.value)
        q = q.order_by(redemption_t.c.seq).limit(limit)
        return [_redemption(r) for r in self.conn.execute(q)]

    def held_redemptions(self, contract: str) -> int:
        q = sa.select(sa.func.coalesce(sa.func.sum(redemption_t.c.amount), 0)).where(
            redemption_t.c.contract_address == contract,
            redemption_t.c.state == RedemptionState.HELD.value,
        )
        return int(self.conn.execute(q).scalar_one())

    def paid_after(self, contract: str, block_number: int) -> int:
        """DT paid for burns in blocks after ``block_number`` (a rewound cursor lags them)."""
        q = sa.select(sa.func.coalesce(sa.func.sum(redemption_t.c.amount), 0)).where(
            redemption_t.c.contract_address == contract,
            redemption_t.c.state == RedemptionState.PAID.value,
            redemption_t.c.block_number > block_number,
        )
        return int(self.conn.execute(q).scalar_one())

    # cursor -----------------------------------------------------------------

    def cursor(self, contract: str) -> Cursor | None:
        row = self.conn.execute(
            cursor_t.select().where(cursor_t.c.contract_address == contract)
        ).first()
        return Cursor(row.contract_address, row.block_number, row.block_hash) if row else None

    def save_cursor(self, cursor: Cursor, now: datetime) -> None:
        values = {
            "block_number": cursor.block_number,
            "block_hash": cursor.block_hash,
            "updated_at": now,
        }
        done = self.conn.execute(
            cursor_t.update()
            .where(cursor_t.c.contract_address == cursor.contract_address)
            .values(**values)
        )
        if done.rowcount == 0:
            self.conn.execute(
                cursor_t.insert(), {"contract_address": cursor.contract_address, **values}
            )

    # reconciliation -------------------------------------------------------------

    def add_reconciliation(self, r: Reconciliation) -> Reconciliation:
        result = self.conn.execute(
            reconciliation_t.insert(),
            {
                "contract_address": r.contract_address,
                "checked_at": r.checked_at,
                "block_number": r.block_number,
                "segregated_balance": r.segregated_balance,
                "pending_mints": r.pending_mints,
                "unpaid_redemptions": r.unpaid_redemptions,
                "total_supply": r.total_supply,
                "gap": r.gap,
                "ok": r.ok,
            },
        )
        pk = result.inserted_primary_key
        return r if pk is None else r.with_seq(int(pk[0]))

    def latest_reconciliation(self, contract: str) -> Reconciliation | None:
        q = (
            reconciliation_t.select()
            .where(reconciliation_t.c.contract_address == contract)
            .order_by(reconciliation_t.c.seq.desc())
            .limit(1)
        )
        row = self.conn.execute(q).first()
        return _reconciliation(row) if row else None


class StablecoinUnitOfWork(SqlUnitOfWork):
    """A transaction over the stablecoin tables, the ledger and the outbox together, so that a
    DT movement, the mint or redemption it belongs to and its webhooks commit as one."""

    stablecoin: SqlStablecoinRepository
    ledger: SqlLedgerRepository
    outbox: OutboxRepository
    collateral: CollateralRepository

    def _bind(self, conn: Connection) -> None:
        self.stablecoin = SqlStablecoinRepository(conn)
        self.ledger = SqlLedgerRepository(conn)
        self.outbox = OutboxRepository(conn)
        self.collateral = CollateralRepository(conn)


__all__ = [
    "CursorRow",
    "MintRow",
    "ReconciliationRow",
    "RedemptionRow",
    "SqlStablecoinRepository",
    "StablecoinUnitOfWork",
]
