"""The connector's own database: its engine, readers, and the statements the handlers run
on the tables of :mod:`gateway.connector.schema`.

Durability as in the gateway: SQLite in WAL with FULL durability by group commit
(:mod:`gateway.sqlite.walsync`) and ``BEGIN IMMEDIATE`` (a plain ``BEGIN`` for pure reads, see
``reader``); PostgreSQL by URL. The statements of the per-PvP path are built once; what the
decision path reads comes back as typed rows (:class:`PvPRow`, :class:`LegRow`, the model's
:class:`~gateway.connector.model.Decision`), at the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gateway.connector.model import Decision, DecisionKind, Leg, LegStatus, PvP, PvPState
from gateway.connector.schema import (
    decisions,
    inbox,
    instructions,
    legs,
    literal_is,
    message_bodies,
    outbox,
    participants,
    pvp_messages,
    pvps,
    sim_accounts,
    sim_issuance,
    sim_locks,
)
from gateway.sqlite.engine import reader as sqlite_reader
from gateway.sqlite.engine import sqlite_engine
from gateway.sqlite.fastsql import run


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def reader(engine: Engine, *, own_rows: bool = False) -> Connection:
    """A connection for reads alone (``with reader(engine) as conn``), the gateway's kind:
    see :func:`gateway.sqlite.engine.reader` (``own_rows``: the caller acts only on rows its
    own thread committed and saw made durable)."""
    return sqlite_reader(engine, own_rows=own_rows)


def make_engine(url: str, *, busy_timeout_ms: int = 10_000) -> Engine:
    """An engine with the gateway's durability settings (see the module docstring): on
    SQLite the gateway's own design (:func:`gateway.sqlite.engine.sqlite_engine`)."""
    if url.startswith("sqlite"):
        return sqlite_engine(url, busy_timeout_ms=busy_timeout_ms, pool_size=10, max_overflow=20)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


# --- statements built once ------------------------------------------------------------------
#
# Building a Core statement and generating its cache key cost several times more than running
# it on SQLite; a statement object built once keeps its cache key. So every statement of the
# per-PvP path is built here, with ``bindparam``s named after the keys of the parameter dict
# it runs with. Parameters of a WHERE clause start with ``k_`` where an UPDATE may also set
# the column of that name. An INSERT or UPDATE without ``values()`` inserts or sets the
# columns named by the parameters' keys (compiled once per set of keys).

_b = sa.bindparam

# participants
SELECT_PARTICIPANT_BY_TOKEN = sa.select(participants).where(
    participants.c.token_sha256 == _b("digest")
)

# instructions
SELECT_INSTRUCTION = sa.select(instructions).where(
    (instructions.c.party_bic == _b("party_bic"))
    & (instructions.c.instruction_id == _b("instruction_id"))
)
INSERT_INSTRUCTION = instructions.insert()
SELECT_MATCH = (
    sa.select(instructions)
    .where(
        (instructions.c.party_bic == _b("party_bic"))
        & (instructions.c.counterparty_bic == _b("counterparty_bic"))
        & instructions.c.pvp_id.is_(None)
        & (instructions.c.sell_currency == _b("sell_currency"))
        & (instructions.c.sell_amount == _b("sell_amount"))
        & (instructions.c.buy_currency == _b("buy_currency"))
        & (instructions.c.buy_amount == _b("buy_amount"))
        & (instructions.c.value_time >= _b("value_from"))
        & (instructions.c.value_time <= _b("value_to"))
    )
    .order_by(instructions.c.id)
    .limit(1)
)
SET_INSTRUCTIONS_MATCHED = (
    instructions.update()
    .where(
        (
            (instructions.c.party_bic == _b("k_party_bic"))
            & (instructions.c.instruction_id == _b("k_instruction_id"))
        )
        | (instructions.c.id == _b("k_other_id"))
    )
    .values(pvp_id=_b("k_pvp_id"))
)

# pvps and decisions
# The columns of a PvPRow, in its order.
SELECT_PVP = sa.select(
    pvps.c.id, pvps.c.deadline, pvps.c.condition, pvps.c.secret, pvps.c.state
).where(pvps.c.id == _b("pvp_id"))
# PostgreSQL: the row lock that serialises the work on one PvP (SQLite has the writer lock).
SELECT_PVP_FOR_UPDATE = SELECT_PVP.with_for_update()
SELECT_PVP_ID = sa.select(pvps.c.id).where(pvps.c.id == _b("pvp_id"))
SELECT_PVP_IDS_IN = sa.select(pvps.c.id).where(pvps.c.id.in_(_b("pvp_ids", expanding=True)))
INSERT_PVP = pvps.insert()
UPDATE_PVP = pvps.update().where(pvps.c.id == _b("k_id"))
# Every network acknowledged: committed -> settled, aborted -> cancelled. ``IS NOT TRUE``
# rather than ``IS FALSE``: with an equality on ``acknowledged`` SQLite searched the legs
# through the index of unacknowledged legs (every one of every PvP in flight) for each
# completion (quadratic in a burst); this way it takes the PvP's two legs by key.
COMPLETE_PVP = (
    pvps.update()
    .where(
        (pvps.c.id == _b("k_id"))
        & ~sa.exists().where((legs.c.pvp_id == pvps.c.id) & legs.c.acknowledged.is_not(True))
    )
    .values(
        state=sa.case(
            (pvps.c.state == "committed", "settled"),
            (pvps.c.state == "aborted", "cancelled"),
            else_=pvps.c.state,
        )
    )
)
SELECT_DECISION = sa.select(decisions).where(decisions.c.pvp_id == _b("pvp_id"))
INSERT_DECISION = decisions.insert()
# A PvP with its decision and legs, one row per leg (decision columns prefixed).
SELECT_PVP_VIEW = (
    sa.select(
        pvps,
        decisions.c.decision,
        decisions.c.reason.label("decision_reason"),
        decisions.c.detail.label("decision_detail"),
        decisions.c.decided_at,
        *(c.label("leg_" + c.key) for c in legs.c),
    )
    .select_from(
        pvps.outerjoin(decisions, decisions.c.pvp_id == pvps.c.id).outerjoin(
            legs, legs.c.pvp_id == pvps.c.id
        )
    )
    .where(pvps.c.id == _b("pvp_id"))
    .order_by(legs.c.leg)
)

# legs
SELECT_LEGS_OF = sa.select(legs).where(legs.c.pvp_id == _b("pvp_id")).order_by(legs.c.leg)
SELECT_LEG = sa.select(legs).where((legs.c.pvp_id == _b("pvp_id")) & (legs.c.leg == _b("leg")))
INSERT_LEG = legs.insert()
UPDATE_LEG = legs.update().where((legs.c.pvp_id == _b("k_pvp")) & (legs.c.leg == _b("k_leg")))
# A leg with its PvP and decision in one row (read by position: ``find_leg``): the tables
# have no column name in common but ``reason`` (the decision's is ``decision_reason``).
SELECT_LEG_BY_UETR = (
    sa.select(
        legs,
        pvps.c.id,
        pvps.c.deadline,
        pvps.c.condition,
        pvps.c.secret,
        pvps.c.state,
        decisions.c.decision,
        decisions.c.reason.label("decision_reason"),
        decisions.c.detail.label("decision_detail"),
        decisions.c.decided_at,
    )
    .select_from(
        legs.join(pvps, pvps.c.id == legs.c.pvp_id).outerjoin(
            decisions, decisions.c.pvp_id == legs.c.pvp_id
        )
    )
    .where(legs.c.uetr == _b("uetr"))
)
# PostgreSQL: lock the leg's PvP before reading it (as ``SELECT_PVP_FOR_UPDATE``).
LOCK_PVP_OF_UETR = (
    sa.select(pvps.c.id)
    .join(legs, legs.c.pvp_id == pvps.c.id)
    .where(legs.c.uetr == _b("uetr"))
    .with_for_update(of=pvps)
)
SELECT_QUEUED_LEGS = (
    sa.select(legs, pvps.c.created_at, pvps.c.deadline, pvps.c.condition)
    .join(pvps, pvps.c.id == legs.c.pvp_id)
    .where(literal_is(legs.c.status, "queued") & literal_is(pvps.c.state, "pending"))
    .order_by(pvps.c.created_at, legs.c.pvp_id, legs.c.leg)
    .limit(_b("limit"))
)
SELECT_QUEUED_DECISIONS = (
    sa.select(
        legs,
        pvps.c.deadline,
        pvps.c.condition,
        pvps.c.secret,
        decisions.c.decision,
        decisions.c.reason.label("decision_reason"),
    )
    .join(pvps, pvps.c.id == legs.c.pvp_id)
    .join(decisions, decisions.c.pvp_id == legs.c.pvp_id)
    .where(legs.c.decision_queued.is_(True))
    .order_by(decisions.c.decided_at, legs.c.pvp_id, legs.c.leg)
    .limit(_b("limit"))
)

# inbox, messages and outbox
SELECT_INBOX_SHA = sa.select(inbox.c.sha256).where(
    (inbox.c.sender_bic == _b("sender_bic"))
    & (inbox.c.msg_def_id == _b("msg_def_id"))
    & (inbox.c.msg_id == _b("msg_id"))
)
INSERT_INBOX = inbox.insert()
SELECT_INBOX_PROCESSED = sa.select(inbox.c.processed).where(inbox.c.id == _b("id"))
MARK_INBOX_PROCESSED = inbox.update().where(inbox.c.id == _b("k_id")).values(processed=True)
INSERT_MESSAGE = pvp_messages.insert()
INSERT_MESSAGE_BODY = message_bodies.insert().returning(message_bodies.c.id)
SELECT_MESSAGES_OF = (
    sa.select(
        *(c for c in pvp_messages.c if c.key != "raw"),
        sa.func.coalesce(message_bodies.c.raw, pvp_messages.c.raw).label("raw"),
    )
    .select_from(
        pvp_messages.outerjoin(message_bodies, message_bodies.c.id == pvp_messages.c.body_id)
    )
    .where(pvp_messages.c.pvp_id == _b("pvp_id"))
    .order_by(pvp_messages.c.id)
)
INSERT_OUTBOX = outbox.insert()
UPDATE_OUTBOX = outbox.update().where(outbox.c.id == _b("k_id"))
# Due rows, but those already handed to a sender (``busy``): their payloads stay unread.
SELECT_DUE_OUTBOX = (
    sa.select(outbox)
    .where(
        outbox.c.sent_at.is_(None)
        & (outbox.c.available_at <= _b("now"))
        & outbox.c.id.not_in(_b("busy", expanding=True))
    )
    .order_by(outbox.c.id)
    .limit(_b("limit"))
)
# Of a PvP's single-PvP outbox rows to one network: how many still wait to be sent, and
# when the last one was delivered (redelivery counts from delivery, not from the decision).
DELIVERY_STATE = sa.select(
    sa.func.coalesce(sa.func.sum(sa.case((outbox.c.sent_at.is_(None), 1), else_=0)), 0).label(
        "unsent"
    ),
    sa.func.max(outbox.c.sent_at).label("last_sent_at"),
).where((outbox.c.pvp_id == _b("pvp_id")) & (outbox.c.destination_bic == _b("destination_bic")))
# Rows a transaction of this thread wrote, by message id (unique to the row), not sent yet.
SELECT_UNSENT_OUTBOX_BY_MSG_IDS = (
    sa.select(outbox)
    .where(
        outbox.c.msg_id.in_(_b("msg_ids", expanding=True))
        & outbox.c.sent_at.is_(None)
        & (outbox.c.available_at <= _b("now"))
    )
    .order_by(outbox.c.id)
)
SELECT_OUTBOX_PVP_BY_MSG_ID = sa.select(outbox.c.pvp_id).where(outbox.c.msg_id == _b("msg_id"))

# the sweeper: undecided PvPs past deadline - margin (``due``), decisions to send again,
# inbound messages to process again
_OVERDUE = literal_is(pvps.c.state, "pending") & (pvps.c.deadline <= _b("due"))
# A leg whose decision went out has ``redeliver_at`` (``create_schema`` fills it in rows from
# before the column), so one range of ``ix_legs_unacknowledged`` finds them: not every
# unacknowledged leg in flight, ten times a second.
_STALE = (
    pvps.c.state.in_(("committed", "aborted"))
    & legs.c.acknowledged.is_(False)
    & (legs.c.redeliver_at <= _b("now"))
)
_PENDING_INBOX = inbox.c.processed.is_(False) & (inbox.c.received_at <= _b("cutoff"))
SELECT_OVERDUE = sa.select(pvps.c.id).where(_OVERDUE).limit(_b("limit"))
SELECT_STALE_LEGS = (
    sa.select(legs.c.pvp_id, legs.c.leg)
    .join(pvps, pvps.c.id == legs.c.pvp_id)
    .where(_STALE)
    .limit(_b("limit"))
)
SELECT_PENDING_INBOX = sa.select(inbox).where(_PENDING_INBOX).order_by(inbox.c.id)
# Which of the three has anything, in one statement: mostly none has.
SWEEP_PROBE = sa.select(
    sa.exists(sa.select(pvps.c.id).where(_OVERDUE)).label("overdue"),
    sa.exists(sa.select(legs.c.pvp_id).join(pvps, pvps.c.id == legs.c.pvp_id).where(_STALE)).label(
        "stale"
    ),
    sa.exists(sa.select(inbox.c.id).where(_PENDING_INBOX)).label("inbox"),
)

# the simulated banks
SELECT_SIM_ACCOUNT = sa.select(sim_accounts).where(
    (sim_accounts.c.currency == _b("currency")) & (sim_accounts.c.account == _b("account"))
)
INSERT_SIM_ACCOUNT = sim_accounts.insert()
# Adds (signed) amounts to an account's available and held funds.
MOVE_SIM_FUNDS = (
    sim_accounts.update()
    .where(
        (sim_accounts.c.currency == _b("k_currency")) & (sim_accounts.c.account == _b("k_account"))
    )
    .values(
        available=sim_accounts.c.available + _b("d_available"),
        held=sim_accounts.c.held + _b("d_held"),
    )
)
INSERT_SIM_ISSUANCE = sim_issuance.insert()
SELECT_SIM_LOCK = sa.select(sim_locks).where(sim_locks.c.uetr == _b("uetr"))
INSERT_SIM_LOCK = sim_locks.insert()
SET_SIM_LOCK_STATE = sim_locks.update().where(sim_locks.c.uetr == _b("k_uetr"))


# --- typed rows of the decision path ---------------------------------------------------------
#
# What the handlers read of a PvP, its legs and its decision, as frozen dataclasses built from
# the row's values by position (no per-column lookups); the model's verbs take
# ``as_pvp()`` / ``as_leg()``.


@dataclass(frozen=True, slots=True)
class PvPRow:
    """A PvP's terms and state: what a decision and its messages need."""

    id: str
    deadline: int
    condition: str
    secret: str
    state: PvPState

    def as_pvp(self) -> PvP:
        return PvP(self.id, self.deadline, self.condition, self.state)


@dataclass(frozen=True, slots=True)
class LegRow:
    """A leg, every column of ``legs`` in the table's order."""

    pvp_id: str
    leg: str
    uetr: str
    network_bic: str
    currency: str
    amount: int
    debtor_bic: str
    debtor_account: str
    creditor_bic: str
    creditor_account: str
    end_to_end_id: str
    pacs009_msg_id: str
    status: LegStatus
    reason: str | None
    locked_at: int | None
    acknowledged: bool
    decision_sent_at: int | None
    decision_queued: bool
    redeliver_at: int | None
    redeliveries: int

    def as_leg(self) -> Leg:
        return Leg(
            self.pvp_id, self.leg, self.status, self.acknowledged, self.reason, self.locked_at
        )


_LEG_WIDTH = len(legs.c)
_LEG_STATUS = list(legs.c.keys()).index("status")
if tuple(f.name for f in fields(LegRow)) != tuple(legs.c.keys()):
    raise RuntimeError("LegRow's fields must be the columns of legs, in order")


def leg_row(row: Sequence[Any]) -> LegRow:
    """The leg in the first columns of ``row`` (``select(legs, ...)``)."""
    values = list(row[:_LEG_WIDTH])
    values[_LEG_STATUS] = LegStatus(values[_LEG_STATUS])
    return LegRow(*values)


class Found(NamedTuple):
    """A leg found by UETR, with its PvP and, once decided, the decision."""

    pvp: PvPRow
    leg: LegRow
    decision: Decision | None


def read_pvp(conn: Connection, pvp_id: str, *, for_update: bool = False) -> PvPRow:
    """The PvP ``pvp_id``; ``for_update`` (PostgreSQL): its row locked until the commit."""
    statement = SELECT_PVP_FOR_UPDATE if for_update else SELECT_PVP
    id_, deadline, condition, secret, state = run(conn, statement, {"pvp_id": pvp_id}).one()
    return PvPRow(id_, deadline, condition, secret, PvPState(state))


def read_legs(conn: Connection, pvp_id: str) -> list[LegRow]:
    """The PvP's legs, by name."""
    return [leg_row(r) for r in run(conn, SELECT_LEGS_OF, {"pvp_id": pvp_id})]


def read_leg(conn: Connection, pvp_id: str, leg: str) -> LegRow:
    return leg_row(run(conn, SELECT_LEG, {"pvp_id": pvp_id, "leg": leg}).one())


def read_decision(conn: Connection, pvp_id: str) -> Decision | None:
    row = run(conn, SELECT_DECISION, {"pvp_id": pvp_id}).first()
    if row is None:
        return None
    pvp, kind, reason, detail, decided_at = row
    return Decision(pvp, DecisionKind(kind), reason, detail or "", decided_at)


def find_leg(conn: Connection, uetr: str) -> Found | None:
    """The leg of ``uetr`` with its PvP and decision, in one read (see SELECT_LEG_BY_UETR)."""
    row = run(conn, SELECT_LEG_BY_UETR, {"uetr": uetr}).first()
    if row is None:
        return None
    leg = leg_row(row)
    id_, deadline, condition, secret, state, kind, reason, detail, decided_at = row[_LEG_WIDTH:]
    pvp = PvPRow(id_, deadline, condition, secret, PvPState(state))
    if kind is None:
        return Found(pvp, leg, None)
    return Found(pvp, leg, Decision(id_, DecisionKind(kind), reason, detail or "", decided_at))


__all__ = [
    "Found",
    "LegRow",
    "PvPRow",
    "find_leg",
    "leg_row",
    "make_engine",
    "now_ms",
    "read_decision",
    "read_leg",
    "read_legs",
    "read_pvp",
    "reader",
]
