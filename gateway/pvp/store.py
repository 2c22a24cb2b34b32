"""PvP tables and the SQL repository. Tables never leave this module.

Deduplication lives in the database: ``pvp_leg.uetr`` is the primary key (one leg per UETR) and
``uq_pvp_message_id`` makes a sender's message id unique per message type, so two concurrent
receptions of the same message cannot both be stored (the loser retries and finds the winner).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Field, SQLModel

from gateway import telemetry
from gateway.db import SqlUnitOfWork, autoincrement_field, partial_index, table_of, utc_field
from gateway.ledger.store import SqlLedgerRepository
from gateway.messaging.outbox import OutboxMessage, OutboxRepository, outbox_t
from gateway.pvp.model import (
    FINAL_STATES,
    Instruction,
    InstructionState,
    Leg,
    LegState,
    LegTerms,
    MessageRecord,
    Side,
)
from gateway.sqlite import fastsql
from gateway.sqlite.fastsql import run


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


def _leg(row: Any) -> Leg:
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
    )


def _leg_values(leg: Leg) -> dict[str, Any]:
    t = leg.terms
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
        "created_at": leg.created_at,
        "updated_at": leg.updated_at,
    }


def _instruction(row: Any) -> Instruction:
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


def _instruction_values(i: Instruction) -> dict[str, Any]:
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


# Statements of the per-message path, built once. Building a Core statement and its cache
# key on every call cost 3-5x the execution itself (70-100 µs against ~20 µs on SQLite);
# a statement object reused with bind parameters keeps its memoized cache key.
_LEGS_BY_UETR = leg_t.select().where(leg_t.c.uetr.in_(sa.bindparam("uetrs", expanding=True)))
_LEGS_FOR_UPDATE = (
    _LEGS_BY_UETR.order_by(leg_t.c.uetr),
    _LEGS_BY_UETR.order_by(leg_t.c.uetr).with_for_update(),
)
_UPDATE_LEG = leg_t.update().where(leg_t.c.uetr == sa.bindparam("k_uetr"))
# As the partial index ix_pvp_leg_locked_deadline says it, a constant in the SQL text: with
# a bound parameter SQLite cannot know that the index applies.
_LOCKED = leg_t.c.state == sa.literal_column(f"'{LegState.LOCKED.value}'")
_LOCKED_LEGS_PAST = (
    leg_t.select()
    .where(_LOCKED, leg_t.c.deadline <= sa.bindparam("cutoff"))
    .order_by(leg_t.c.deadline)
    .limit(sa.bindparam("limit"))
)
_ALERTED_LEGS = (
    leg_t.select()
    .where(_LOCKED, leg_t.c.alert_at.is_not(None))
    .order_by(leg_t.c.alert_at)
    .limit(sa.bindparam("limit"))
)
_INBOX_PENDING = (
    sa.select(inbox_t.c.message_id)
    .where(inbox_t.c.processed_at.is_(None))
    .order_by(inbox_t.c.message_id)
    .limit(sa.bindparam("limit"))
)
_INBOX_DUE = _INBOX_PENDING.where(inbox_t.c.available_at <= sa.bindparam("now"))
_INBOUND_SHA = sa.select(message_t.c.sha256).where(
    message_t.c.direction == "in",
    message_t.c.sender_bic == sa.bindparam("sender"),
    message_t.c.msg_def_id == sa.bindparam("def_id"),
    message_t.c.msg_id == sa.bindparam("msg_id"),
)
_INSERT_MESSAGE = message_t.insert().returning(message_t.c.id)
_INSERT_MESSAGE_LEG = message_leg_t.insert()
_INSERT_LEG = leg_t.insert()
_MESSAGE_RAW = sa.select(message_t.c.raw, message_t.c.sender_bic).where(
    message_t.c.id == sa.bindparam("id")
)
_INSERT_INBOX = inbox_t.insert()
_INBOX_STATE = sa.select(inbox_t.c.processed_at).where(inbox_t.c.message_id == sa.bindparam("id"))
_INBOX_CLAIM = (_INBOX_STATE, _INBOX_STATE.with_for_update())
_INBOX_DONE = (
    inbox_t.update()
    .where(inbox_t.c.message_id == sa.bindparam("id"))
    .values(processed_at=sa.bindparam("at"), attempts=inbox_t.c.attempts + 1, last_error=None)
)
# The messages linked to a leg, with the outbox state of each. Direction and sent_at are
# tested in Python: as WHERE terms, SQLite (without statistics) searched through the index on
# ``direction`` (every outbound message ever) or the unsent outbox rows' index instead
# of the leg's few messages by ``uetr``.
_LEG_MESSAGES_OUTBOX = (
    sa.select(message_t.c.direction, outbox_t.c.sent_at)
    .select_from(
        message_leg_t.join(message_t, message_t.c.id == message_leg_t.c.message_id).join(
            outbox_t, outbox_t.c.event_id == message_t.c.msg_id
        )
    )
    .where(message_leg_t.c.uetr == sa.bindparam("uetr"))
)
_INSTRUCTIONS_BY_ID = (
    instruction_t.select()
    .where(instruction_t.c.instruction_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(instruction_t.c.instruction_id)
)
_INSTRUCTIONS_FOR_UPDATE = (_INSTRUCTIONS_BY_ID, _INSTRUCTIONS_BY_ID.with_for_update())


Direction = Literal["in", "out", "rejected"]


class SqlPvPRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._pg = conn.dialect.name == "postgresql"
        self._open: set[str] = set()  # legs read for update in a state that is not final
        self.finished: list[tuple[str, float]] = []
        """(state, seconds since received) of each leg this transaction made final, for
        :mod:`gateway.telemetry` once it commits."""

    def _for_update(self, q: Any) -> Any:
        return q.with_for_update() if self._pg else q

    # legs ------------------------------------------------------------------

    def legs_for_update(self, uetrs: Iterable[str]) -> dict[str, Leg]:
        ids = sorted(set(uetrs))
        if not ids:
            return {}
        q = _LEGS_FOR_UPDATE[self._pg]
        legs = {r.uetr: _leg(r) for r in run(self.conn, q, {"uetrs": ids})}
        self._open.update(u for u, leg in legs.items() if leg.state not in FINAL_STATES)
        return legs

    def legs(self, uetrs: Iterable[str]) -> dict[str, Leg]:
        ids = sorted(set(uetrs))
        if not ids:
            return {}
        return {r.uetr: _leg(r) for r in run(self.conn, _LEGS_BY_UETR, {"uetrs": ids})}

    def legs_by_ref(self, ref: str) -> list[Leg]:
        """Legs whose PvP id, UETR or EndToEndId (the DT instruction id) is ``ref``."""
        q = leg_t.select().where(
            sa.or_(leg_t.c.pvp_id == ref, leg_t.c.uetr == ref, leg_t.c.end_to_end_id == ref)
        )
        return [_leg(r) for r in self.conn.execute(q.order_by(leg_t.c.created_at))]

    def insert_legs(self, legs: Sequence[Leg]) -> None:
        if legs:
            run(self.conn, _INSERT_LEG, [_leg_values(leg) for leg in legs])

    def update_legs(self, legs: Sequence[Leg]) -> None:
        rows = []
        for leg in legs:
            values = _leg_values(leg)
            values["k_uetr"] = values.pop("uetr")  # the key, not a column to set
            rows.append(values)
            if leg.state in FINAL_STATES and leg.uetr in self._open:
                self._open.discard(leg.uetr)
                took = (leg.updated_at - leg.created_at).total_seconds()
                self.finished.append((leg.state.value, took))
        if rows:
            run(self.conn, _UPDATE_LEG, rows)

    def locked_legs_past(self, cutoff: datetime, limit: int) -> list[Leg]:
        rows = self.conn.execute(_LOCKED_LEGS_PAST, {"cutoff": cutoff, "limit": limit})
        return [_leg(r) for r in rows]

    def alerted_legs(self, limit: int) -> list[Leg]:
        return [_leg(r) for r in self.conn.execute(_ALERTED_LEGS, {"limit": limit})]

    # messages --------------------------------------------------------------

    def inbound_sha(self, sender: str | None, msg_def_id: str, msg_id: str) -> str | None:
        """The SHA-256 of the inbound message with this id from ``sender``, if received (the
        same bytes again are a duplicate; other bytes under the same id are refused)."""
        params = {"sender": sender, "def_id": msg_def_id, "msg_id": msg_id}
        row = run(self.conn, _INBOUND_SHA, params).first()
        return None if row is None else cast(str, row.sha256)

    def add_message(
        self,
        direction: Direction,
        raw: bytes,
        sha256: str,
        now: datetime,
        *,
        sender: str | None = None,
        receiver: str | None = None,
        msg_def_id: str | None = None,
        msg_id: str | None = None,
        reason: str | None = None,
        uetrs: Iterable[str] = (),
    ) -> int:
        result = run(
            self.conn,
            _INSERT_MESSAGE,
            {
                "direction": direction,
                "sender_bic": sender,
                "receiver_bic": receiver,
                "msg_def_id": msg_def_id,
                "msg_id": msg_id,
                "sha256": sha256,
                "reason": reason,
                "raw": raw,
                "created_at": now,
            },
        )
        message_id = int(result.scalar_one())
        links = [{"message_id": message_id, "uetr": u} for u in dict.fromkeys(uetrs)]
        if links:
            run(self.conn, _INSERT_MESSAGE_LEG, links)
        return message_id

    def reply_pending(self, uetr: str) -> bool:
        """Whether a message about this leg still waits in the outbox to be sent."""
        rows = run(self.conn, _LEG_MESSAGES_OUTBOX, {"uetr": uetr})
        return any(r.direction == "out" and r.sent_at is None for r in rows)

    def message_raw(self, message_id: int) -> tuple[bytes, str | None] | None:
        row = run(self.conn, _MESSAGE_RAW, {"id": message_id}).first()
        return None if row is None else (bytes(row.raw), row.sender_bic)

    def trail(self, uetrs: Sequence[str], extra_ids: Sequence[int] = ()) -> list[MessageRecord]:
        linked = sa.select(message_leg_t.c.message_id).where(message_leg_t.c.uetr.in_(uetrs))
        cond: sa.ColumnElement[bool] = message_t.c.id.in_(linked)
        if extra_ids:
            cond = sa.or_(cond, message_t.c.id.in_(list(extra_ids)))
        q = sa.select(
            message_t.c.id,
            message_t.c.direction,
            message_t.c.msg_def_id,
            message_t.c.msg_id,
            message_t.c.sha256,
            message_t.c.created_at,
            message_t.c.reason,
        ).where(cond)
        return [
            MessageRecord(
                id=r.id,
                direction=r.direction,
                msg_def_id=r.msg_def_id,
                msg_id=r.msg_id,
                sha256=r.sha256,
                created_at=r.created_at,
                reason=r.reason,
            )
            for r in self.conn.execute(q.order_by(message_t.c.id))
        ]

    # inbox -----------------------------------------------------------------

    def add_inbox(self, message_id: int, now: datetime, available_at: datetime) -> None:
        run(
            self.conn,
            _INSERT_INBOX,
            {
                "message_id": message_id,
                "received_at": now,
                "available_at": available_at,
                "attempts": 0,
            },
        )

    def inbox_claim(self, message_id: int) -> bool:
        """Row-lock the inbox item; True when it still awaits processing."""
        row = run(self.conn, _INBOX_CLAIM[self._pg], {"id": message_id}).first()
        return row is not None and row.processed_at is None

    def inbox_done(self, message_id: int, now: datetime) -> None:
        run(self.conn, _INBOX_DONE, {"id": message_id, "at": now})

    def inbox_attempts(self, message_id: int) -> int:
        q = sa.select(inbox_t.c.attempts).where(inbox_t.c.message_id == message_id)
        return int(self.conn.execute(q).scalar_one_or_none() or 0)

    def inbox_failed(self, message_id: int, error: str, available_at: datetime) -> None:
        self.conn.execute(
            inbox_t.update()
            .where(inbox_t.c.message_id == message_id)
            .values(
                attempts=inbox_t.c.attempts + 1, last_error=error[:1000], available_at=available_at
            )
        )

    def inbox_due(self, now: datetime | None, limit: int) -> list[int]:
        """Unprocessed items, oldest first; only those available by ``now`` unless None."""
        if now is None:
            rows = self.conn.execute(_INBOX_PENDING, {"limit": limit})
        else:
            rows = self.conn.execute(_INBOX_DUE, {"now": now, "limit": limit})
        return [int(r[0]) for r in rows]

    # instructions ----------------------------------------------------------

    def instruction(self, instruction_id: str, *, for_update: bool = False) -> Instruction | None:
        q = instruction_t.select().where(instruction_t.c.instruction_id == instruction_id)
        row = self.conn.execute(self._for_update(q) if for_update else q).first()
        return None if row is None else _instruction(row)

    def instruction_fingerprint(self, instruction_id: str) -> str | None:
        q = sa.select(instruction_t.c.fingerprint).where(
            instruction_t.c.instruction_id == instruction_id
        )
        row = self.conn.execute(q).first()
        return None if row is None else cast(str, row.fingerprint)

    def instructions_for_update(self, ids: Iterable[str]) -> dict[str, Instruction]:
        keys = sorted(set(ids))
        if not keys:
            return {}
        q = _INSTRUCTIONS_FOR_UPDATE[self._pg]
        return {r.instruction_id: _instruction(r) for r in run(self.conn, q, {"ids": keys})}

    def instructions_by_pvp(self, pvp_id: str) -> list[Instruction]:
        q = instruction_t.select().where(instruction_t.c.pvp_id == pvp_id)
        return [_instruction(r) for r in self.conn.execute(q)]

    def insert_instruction(self, inst: Instruction) -> None:
        self.conn.execute(instruction_t.insert(), _instruction_values(inst))

    def update_instruction(self, inst: Instruction) -> None:
        values = _instruction_values(inst)
        self.conn.execute(
            instruction_t.update()
            .where(instruction_t.c.instruction_id == inst.instruction_id)
            .values(**values)
        )

    # audit -----------------------------------------------------------------

    def add_audit(
        self,
        *,
        ref: str,
        uetr: str,
        action: str,
        key_id: str,
        label: str,
        reason: str,
        now: datetime,
    ) -> None:
        self.conn.execute(
            audit_t.insert(),
            {
                "ref": ref[:64],
                "uetr": uetr,
                "action": action,
                "actor_key_id": key_id,
                "actor_label": label[:200],
                "reason": reason[:1000],
                "created_at": now,
            },
        )

    def audit(self, uetrs: Sequence[str]) -> list[dict[str, Any]]:
        q = audit_t.select().where(audit_t.c.uetr.in_(uetrs)).order_by(audit_t.c.id)
        return [
            {
                "uetr": r.uetr,
                "action": r.action,
                "actor_key_id": r.actor_key_id,
                "actor_label": r.actor_label,
                "reason": r.reason,
                "at": r.created_at,
            }
            for r in self.conn.execute(q)
        ]


class PvPUnitOfWork(SqlUnitOfWork):
    """One transaction over the ledger, the outbox and the PvP tables.

    ``after_commit`` hooks run once the transaction is durable (they wake the outbox dispatcher
    and the inbox workers); a rolled-back unit runs none.
    """

    ledger: SqlLedgerRepository
    outbox: OutboxRepository
    pvp: SqlPvPRepository

    def __init__(
        self, engine: Any, *, readonly: bool = False, claim_outbound_for: timedelta | None = None
    ) -> None:
        super().__init__(engine, readonly=readonly)
        self._hooks: list[Any] = []
        self.claim_outbound_for = claim_outbound_for
        self._claimed: list[OutboxMessage] = []

    def _bind(self, conn: Connection) -> None:
        self.ledger = SqlLedgerRepository(conn)
        # With claim_outbound_for, queued messages are claimed for the caller, which sends
        # them itself once this commits (see OutboxRepository).
        self.outbox = OutboxRepository(conn, claim_for=self.claim_outbound_for)
        self._claimed = self.outbox.claimed
        self.pvp = SqlPvPRepository(conn)
        self._hooks = []

    @property
    def claimed(self) -> list[OutboxMessage]:
        """What its last transaction queued claimed for the caller to send (with
        ``claim_outbound_for``); nothing if it never began one, as when every envelope of a
        reception was refused before its transaction."""
        return self._claimed

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: leaving it by an exception undoes only what it did, in the
        database and here (the messages it claimed for sending, the hooks it added)."""
        hooks, claimed = len(self._hooks), len(self.outbox.claimed)
        finished = len(self.pvp.finished)
        try:
            with fastsql.savepoint(self.conn):
                yield
        except BaseException:
            del self._hooks[hooks:]
            del self.outbox.claimed[claimed:]
            del self.pvp.finished[finished:]
            raise

    def after_commit(self, hook: Any) -> None:
        self._hooks.append(hook)

    def commit(self) -> None:
        super().commit()
        finished, self.pvp.finished = self.pvp.finished, []
        for state, seconds in finished:
            telemetry.leg_finished(state, seconds)
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()


__all__ = [
    "AuditRow",
    "InboxRow",
    "InstructionRow",
    "LegRow",
    "MessageLegRow",
    "MessageRow",
    "PvPUnitOfWork",
    "SqlPvPRepository",
]
