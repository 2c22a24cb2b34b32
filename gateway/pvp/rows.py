"""The PvP tables (SQLModel) and the conversions between their rows and the domain's objects.
Only ``gateway.pvp.store`` reads or writes them (and migrations and metrics name them).

Deduplication lives in the database: ``pvp_leg.uetr`` is the primary key (one leg per UETR) and
``uq_pvp_message_id`` makes a sender's message id unique per message type, so two concurrent
receptions of the same message cannot both be stored (the loser retries and finds the winner).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from gateway.db import autoincrement_field, partial_index, table_of, utc_field
from gateway.pvp.model import (
    Decision,
    DecisionCause,
    DecisionKind,
    Instruction,
    InstructionState,
    Leg,
    LegState,
    LegTerms,
    Side,
)


class LegRow(SQLModel, table=True):
    __tablename__ = "pvp_leg"
    __table_args__ = (
        # Locked legs by deadline (the deadline check, the alerts).
        partial_index("ix_pvp_leg_locked_deadline", "deadline", where="state = 'locked'"),
        sa.CheckConstraint("amount IS NULL OR amount > 0", name="ck_pvp_leg_amount_pos"),
    )
    uetr: str = Field(primary_key=True, max_length=36)
    state: str = Field(max_length=16)
    pvp_id: str | None = Field(default=None, max_length=35, index=True)
    leg: str | None = Field(default=None, max_length=8)
    msg_id: str | None = Field(default=None, max_length=35)
    end_to_end_id: str | None = Field(default=None, max_length=35, index=True)
    instr_id: str | None = Field(default=None, max_length=35)
    tx_id: str | None = Field(default=None, max_length=35)
    amount: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    currency: str | None = Field(default=None, max_length=3)
    debtor_bic: str | None = Field(default=None, max_length=11)
    debtor_account: str | None = Field(default=None, max_length=34)
    creditor_bic: str | None = Field(default=None, max_length=11)
    creditor_account: str | None = Field(default=None, max_length=34)
    condition: str | None = Field(default=None, max_length=64)
    deadline: datetime | None = utc_field(nullable=True)
    reason: str | None = Field(default=None, max_length=4)
    fulfilment: str | None = Field(default=None, max_length=64)
    status_requested_at: datetime | None = utc_field(nullable=True)
    status_requests: int = 0
    alert_at: datetime | None = utc_field(nullable=True)
    resolved_by: str | None = Field(default=None, max_length=64)
    decision: str | None = Field(default=None, max_length=8)
    """COMMIT, ABORT or RJCT: what the gateway applied (set with the final state)."""
    decision_cause: str | None = Field(default=None, max_length=16)
    decided_at: datetime | None = utc_field(nullable=True)
    created_at: datetime = utc_field()
    updated_at: datetime = utc_field()


class MessageRow(SQLModel, table=True):
    __tablename__ = "pvp_message"
    __table_args__ = (
        sa.UniqueConstraint(
            "direction", "sender_bic", "msg_def_id", "msg_id", name="uq_pvp_message_id"
        ),
    )
    id: int | None = autoincrement_field()
    direction: str = Field(max_length=8)
    """``in``, ``out``, or ``rejected`` (refused inbound: its sender is unknown, so NULL)."""
    sender_bic: str | None = Field(default=None, max_length=11)
    receiver_bic: str | None = Field(default=None, max_length=11)
    msg_def_id: str | None = Field(default=None, max_length=32)
    msg_id: str | None = Field(default=None, max_length=35)
    sha256: str = Field(max_length=64)
    reason: str | None = Field(default=None, max_length=4)
    raw: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    created_at: datetime = utc_field()


class MessageLegRow(SQLModel, table=True):
    """Which leg a message concerns. Read by UETR only, so the key starts with it, and on
    SQLite the rows are that key's b-tree (no rowid table, no second index): one b-tree
    written per link instead of three (a sixth of the gateway's log writes per PvP)."""

    __tablename__ = "pvp_message_leg"
    __table_args__ = {"sqlite_with_rowid": False}
    uetr: str = Field(primary_key=True, max_length=36)
    message_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("pvp_message.id"),
            primary_key=True,
        )
    )


class InboxRow(SQLModel, table=True):
    __tablename__ = "pvp_inbox"
    # Items not processed yet, in order.
    __table_args__ = (
        partial_index("ix_pvp_inbox_pending", "message_id", where="processed_at IS NULL"),
    )
    message_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("pvp_message.id"),
            primary_key=True,
        )
    )
    received_at: datetime = utc_field()
    available_at: datetime = utc_field()
    processed_at: datetime | None = utc_field(nullable=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=1000)


class InstructionRow(SQLModel, table=True):
    __tablename__ = "pvp_instruction"
    __table_args__ = (
        sa.CheckConstraint("sell_amount > 0 AND buy_amount > 0", name="ck_pvp_instr_amounts"),
    )
    instruction_id: str = Field(primary_key=True, max_length=35)
    subject: str = Field(max_length=128, index=True)
    party_bic: str = Field(max_length=11)
    counterparty_bic: str = Field(max_length=11)
    sell_currency: str = Field(max_length=3)
    sell_amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    sell_account: str = Field(max_length=34)
    buy_currency: str = Field(max_length=3)
    buy_amount: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    buy_account: str = Field(max_length=34)
    value_time: datetime = utc_field()
    state: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=200)
    pvp_id: str | None = Field(default=None, max_length=35, index=True)
    uetr: str | None = Field(default=None, max_length=36)
    fingerprint: str = Field(max_length=64)
    created_at: datetime = utc_field()
    updated_at: datetime = utc_field()


class AuditRow(SQLModel, table=True):
    __tablename__ = "pvp_audit"
    id: int | None = autoincrement_field()
    ref: str = Field(max_length=64)
    uetr: str = Field(max_length=36, index=True)
    action: str = Field(max_length=16)
    actor_key_id: str = Field(max_length=32)
    actor_label: str = Field(default="", max_length=200)
    reason: str = Field(max_length=1000)
    created_at: datetime = utc_field()


leg_t = table_of(LegRow)
message_t = table_of(MessageRow)
message_leg_t = table_of(MessageLegRow)
inbox_t = table_of(InboxRow)
instruction_t = table_of(InstructionRow)
audit_t = table_of(AuditRow)


# ------------------------------------------------------------------ row <-> domain


def leg_of(row: Any) -> Leg:
    terms = None
    if row.msg_id is not None:
        terms = LegTerms(
            msg_id=row.msg_id,
            end_to_end_id=row.end_to_end_id,
            pvp_id=row.pvp_id,
            leg=row.leg,
            amount=row.amount,
            currency=row.currency,
            debtor_bic=row.debtor_bic,
            debtor_account=row.debtor_account,
            creditor_bic=row.creditor_bic,
            creditor_account=row.creditor_account,
            condition=row.condition,
            deadline=row.deadline,
            instr_id=row.instr_id,
            tx_id=row.tx_id,
        )
    return Leg(
        uetr=row.uetr,
        state=LegState(row.state),
        created_at=row.created_at,
        updated_at=row.updated_at,
        terms=terms,
        reason=row.reason,
        fulfilment=row.fulfilment,
        status_requested_at=row.status_requested_at,
        status_requests=row.status_requests,
        alert_at=row.alert_at,
        resolved_by=row.resolved_by,
        decision=None
        if row.decision is None
        else Decision(
            DecisionKind(row.decision),
            None if row.decision_cause is None else DecisionCause(row.decision_cause),
            row.decided_at,
        ),
    )


def leg_values(leg: Leg) -> dict[str, Any]:
    t = leg.terms
    d = leg.decision
    return {
        "uetr": leg.uetr,
        "state": leg.state.value,
        "pvp_id": t.pvp_id if t else None,
        "leg": t.leg if t else None,
        "msg_id": t.msg_id if t else None,
        "end_to_end_id": t.end_to_end_id if t else None,
        "instr_id": t.instr_id if t else None,
        "tx_id": t.tx_id if t else None,
        "amount": t.amount if t else None,
        "currency": t.currency if t else None,
        "debtor_bic": t.debtor_bic if t else None,
        "debtor_account": t.debtor_account if t else None,
        "creditor_bic": t.creditor_bic if t else None,
        "creditor_account": t.creditor_account if t else None,
        "condition": t.condition if t else None,
        "deadline": t.deadline if t else None,
        "reason": leg.reason,
        "fulfilment": leg.fulfilment,
        "status_requested_at": leg.status_requested_at,
        "status_requests": leg.status_requests,
        "alert_at": leg.alert_at,
        "resolved_by": leg.resolved_by,
        "decision": d.kind.value if d else None,
        "decision_cause": d.cause.value if d and d.cause else None,
        "decided_at": d.at if d else None,
        "created_at": leg.created_at,
        "updated_at": leg.updated_at,
    }


def instruction_of(row: Any) -> Instruction:
    return Instruction(
        instruction_id=row.instruction_id,
        subject=row.subject,
        party_bic=row.party_bic,
        counterparty_bic=row.counterparty_bic,
        sell=Side(row.sell_currency, row.sell_amount, row.sell_account),
        buy=Side(row.buy_currency, row.buy_amount, row.buy_account),
        value_time=row.value_time,
        state=InstructionState(row.state),
        created_at=row.created_at,
        updated_at=row.updated_at,
        reason=row.reason,
        pvp_id=row.pvp_id,
        uetr=row.uetr,
    )


def instruction_values(i: Instruction) -> dict[str, Any]:
    return {
        "instruction_id": i.instruction_id,
        "subject": i.subject,
        "party_bic": i.party_bic,
        "counterparty_bic": i.counterparty_bic,
        "sell_currency": i.sell.currency,
        "sell_amount": i.sell.amount,
        "sell_account": i.sell.account,
        "buy_currency": i.buy.currency,
        "buy_amount": i.buy.amount,
        "buy_account": i.buy.account,
        "value_time": i.value_time,
        "state": i.state.value,
        "reason": i.reason,
        "pvp_id": i.pvp_id,
        "uetr": i.uetr,
        "fingerprint": i.fingerprint(),
        "created_at": i.created_at,
        "updated_at": i.updated_at,
    }


__all__ = [
    "AuditRow",
    "InboxRow",
    "InstructionRow",
    "LegRow",
    "MessageLegRow",
    "MessageRow",
    "audit_t",
    "inbox_t",
    "instruction_of",
    "instruction_t",
    "instruction_values",
    "leg_of",
    "leg_t",
    "leg_values",
    "message_leg_t",
    "message_t",
]
