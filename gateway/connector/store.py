"""The connector's own database: its engine, readers, and the statements the handlers run
on the tables of :mod:`gateway.connector.schema`.

Durability as in the gateway: SQLite in WAL with FULL durability by group commit
(:mod:`gateway.sqlite.walsync`) and ``BEGIN IMMEDIATE`` (a plain ``BEGIN`` for pure reads, see
``reader``); PostgreSQL by URL. The statements of the per-PvP path are built once. What is
read comes back as the typed rows of :mod:`gateway.connector.rows` (and the model's
:class:`~gateway.connector.model.Decision`), built by the functions at the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gateway.connector import pgtx
from gateway.connector.model import Decision, DecisionKind, LegStatus, PvPState
from gateway.connector.rows import (
    Found,
    InboxRow,
    InstructionRow,
    LegKey,
    LegRow,
    MessageRow,
    NewInstruction,
    ParticipantRow,
    PvPRecord,
    PvPRow,
    QueuedDecision,
    QueuedLeg,
    SweepProbe,
)
from gateway.connector.schema import (
    checked_after_key,
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
)
from gateway.pgengine import postgres_engine
from gateway.sqlite.engine import reader as sqlite_reader
from gateway.sqlite.engine import sqlite_engine
from gateway.sqlite.fastsql import run


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def reader(engine: Engine, *, own_rows: bool = False) -> Connection:
    """A connection for reads alone (``with reader(engine) as conn``), the gateway's kind:
    see :func:`gateway.sqlite.engine.reader` (``own_rows``: the caller acts only on rows its
    own thread committed and saw made durable). On PostgreSQL in autocommit mode: at READ
    COMMITTED each statement reads its own snapshot in a transaction too, which would only
    add a BEGIN and a ROLLBACK, each a round trip."""
    if engine.dialect.name == "sqlite":
        return sqlite_reader(engine, own_rows=own_rows)
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def make_engine(url: str, *, busy_timeout_ms: int = 10_000) -> Engine:
    """An engine with the gateway's durability settings (see the module docstring): on
    SQLite the gateway's own design (:func:`gateway.sqlite.engine.sqlite_engine`), on
    PostgreSQL the gateway's pool (:func:`gateway.pgengine.postgres_engine`) and write
    transactions in one pipeline each (:mod:`gateway.connector.pgtx`)."""
    if url.startswith("sqlite"):
        return sqlite_engine(url, busy_timeout_ms=busy_timeout_ms, pool_size=10, max_overflow=20)
    engine = postgres_engine(url, pool_size=15, max_overflow=15)
    pgtx.install(engine)
    return engine


# --- statements built once ------------------------------------------------------------------
#
# Building a Core statement and generating its cache key cost several times more than running
# it on SQLite; a statement object built once keeps its cache key. So every statement of the
# per-PvP path is built here, with ``bindparam``s named after the keys of the parameter dict
# it runs with. Parameters of a WHERE clause start with ``k_`` where an UPDATE may also set
# the column of that name. An INSERT or UPDATE without ``values()`` inserts or sets the
# columns named by the parameters' keys (compiled once per set of keys).
#
# On PostgreSQL, in a write transaction, each is sent in the transaction's pipeline
# (``gateway.connector.pgtx``): a write ``_queued`` (nobody reads its result or row count)
# goes with the next statement waited for or with the COMMIT; a read, or a write whose result
# is read, is ``_waited`` for, with what was queued before it. Both change nothing on SQLite.
# The simulated banks' statements are in ``gateway.connector.simstore``.

_b = sa.bindparam
_queued = pgtx.queued
_waited = pgtx.waited


# participants
SELECT_PARTICIPANT_BY_TOKEN = _waited(
    sa.select(participants).where(participants.c.token_sha256 == _b("digest"))
)

# instructions
SELECT_INSTRUCTION = _waited(
    sa.select(instructions).where(
        (instructions.c.party_bic == _b("party_bic"))
        & (instructions.c.instruction_id == _b("instruction_id"))
    )
)
INSERT_INSTRUCTION = _queued(instructions.insert())
SELECT_MATCH = _waited(
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
SET_INSTRUCTIONS_MATCHED = _queued(
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
# The columns of a PvPRow, in its order, and those of a decision after them (as ``_decision``
# reads them): the tables have no other column name in common than ``reason``.
PVP_COLUMNS = (pvps.c.id, pvps.c.deadline, pvps.c.condition, pvps.c.secret, pvps.c.state)
DECISION_COLUMNS = (
    decisions.c.decision,
    decisions.c.reason.label("decision_reason"),
    decisions.c.detail.label("decision_detail"),
    decisions.c.decided_at,
)
SELECT_PVP = _waited(sa.select(*PVP_COLUMNS).where(pvps.c.id == _b("pvp_id")))
# PostgreSQL: the row lock that serialises the work on one PvP (SQLite has the writer lock).
SELECT_PVP_FOR_UPDATE = SELECT_PVP.with_for_update()
SELECT_PVP_ID = _waited(sa.select(pvps.c.id).where(pvps.c.id == _b("pvp_id")))
SELECT_PVP_IDS_IN = _waited(
    sa.select(pvps.c.id).where(pvps.c.id.in_(_b("pvp_ids", expanding=True)))
)
INSERT_PVP = _queued(pvps.insert())
UPDATE_PVP = _queued(pvps.update().where(pvps.c.id == _b("k_id")))
# Every network acknowledged: committed -> settled, aborted -> cancelled. ``IS NOT TRUE``
# rather than ``IS FALSE``: with an equality on ``acknowledged`` SQLite searched the legs
# through the index of unacknowledged legs (every one of every PvP in flight) for each
# completion (quadratic in a burst); this way it takes the PvP's two legs by key.
COMPLETE_PVP = _queued(
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
SELECT_DECISION = _waited(sa.select(decisions).where(decisions.c.pvp_id == _b("pvp_id")))
INSERT_DECISION = _queued(decisions.insert())
# A PvP with its decision and legs, one row per leg (leg columns prefixed).
SELECT_PVP_VIEW = _waited(
    sa.select(
        *PVP_COLUMNS,
        *DECISION_COLUMNS,
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
SELECT_LEGS_OF = _waited(sa.select(legs).where(legs.c.pvp_id == _b("pvp_id")).order_by(legs.c.leg))
SELECT_LEG = _waited(
    sa.select(legs).where((legs.c.pvp_id == _b("pvp_id")) & (legs.c.leg == _b("leg")))
)
INSERT_LEG = _queued(legs.insert())
UPDATE_LEG = _queued(
    legs.update().where((legs.c.pvp_id == _b("k_pvp")) & (legs.c.leg == _b("k_leg")))
)
# A leg with its PvP and decision in one row (read by position: ``find_leg``).
SELECT_LEG_BY_UETR = _waited(
    sa.select(legs, *PVP_COLUMNS, *DECISION_COLUMNS)
    .select_from(
        legs.join(pvps, pvps.c.id == legs.c.pvp_id).outerjoin(
            decisions, decisions.c.pvp_id == legs.c.pvp_id
        )
    )
    .where(legs.c.uetr == _b("uetr"))
)
# PostgreSQL: lock the leg's PvP before reading it (as ``SELECT_PVP_FOR_UPDATE``).
LOCK_PVP_OF_UETR = _waited(
    sa.select(pvps.c.id)
    .join(legs, legs.c.pvp_id == pvps.c.id)
    .where(legs.c.uetr == _b("uetr"))
    .with_for_update(of=pvps)
)
SELECT_QUEUED_LEGS = _waited(
    sa.select(legs, *PVP_COLUMNS, pvps.c.created_at)
    .join(pvps, pvps.c.id == legs.c.pvp_id)
    .where(literal_is(legs.c.status, "queued") & checked_after_key(pvps.c.state, "pending"))
    .order_by(pvps.c.created_at, legs.c.pvp_id, legs.c.leg)
    .limit(_b("limit"))
)
SELECT_QUEUED_DECISIONS = _waited(
    sa.select(legs, *PVP_COLUMNS, decisions.c.decision, decisions.c.reason.label("decision_reason"))
    .join(pvps, pvps.c.id == legs.c.pvp_id)
    .join(decisions, decisions.c.pvp_id == legs.c.pvp_id)
    .where(legs.c.decision_queued.is_(True))
    .order_by(decisions.c.decided_at, legs.c.pvp_id, legs.c.leg)
    .limit(_b("limit"))
)

# inbox, messages and outbox
SELECT_INBOX_SHA = _waited(
    sa.select(inbox.c.sha256).where(
        (inbox.c.sender_bic == _b("sender_bic"))
        & (inbox.c.msg_def_id == _b("msg_def_id"))
        & (inbox.c.msg_id == _b("msg_id"))
    )
)
INSERT_INBOX = _queued(inbox.insert())
SELECT_INBOX_PROCESSED = _waited(sa.select(inbox.c.processed).where(inbox.c.id == _b("id")))
MARK_INBOX_PROCESSED = _queued(
    inbox.update().where(inbox.c.id == _b("k_id")).values(processed=True)
)
INSERT_MESSAGE = _queued(pvp_messages.insert())
INSERT_MESSAGE_BODY = _waited(message_bodies.insert().returning(message_bodies.c.id))
SELECT_MESSAGES_OF = _waited(
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
INSERT_OUTBOX = _queued(outbox.insert())
UPDATE_OUTBOX = _queued(outbox.update().where(outbox.c.id == _b("k_id")))
# Due rows, but those already handed to a sender (``busy``): their payloads stay unread.
SELECT_DUE_OUTBOX = _waited(
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
DELIVERY_STATE = _waited(
    sa.select(
        sa.func.coalesce(sa.func.sum(sa.case((outbox.c.sent_at.is_(None), 1), else_=0)), 0).label(
            "unsent"
        ),
        sa.func.max(outbox.c.sent_at).label("last_sent_at"),
    ).where((outbox.c.pvp_id == _b("pvp_id")) & (outbox.c.destination_bic == _b("destination_bic")))
)
# Rows a transaction of this thread wrote, by message id (unique to the row), not sent yet.
SELECT_UNSENT_OUTBOX_BY_MSG_IDS = _waited(
    sa.select(outbox)
    .where(
        outbox.c.msg_id.in_(_b("msg_ids", expanding=True))
        & outbox.c.sent_at.is_(None)
        & (outbox.c.available_at <= _b("now"))
    )
    .order_by(outbox.c.id)
)
SELECT_OUTBOX_PVP_BY_MSG_ID = _waited(
    sa.select(outbox.c.pvp_id).where(outbox.c.msg_id == _b("msg_id"))
)

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
SELECT_OVERDUE = _waited(sa.select(pvps.c.id).where(_OVERDUE).limit(_b("limit")))
SELECT_STALE_LEGS = _waited(
    sa.select(legs.c.pvp_id, legs.c.leg)
    .join(pvps, pvps.c.id == legs.c.pvp_id)
    .where(_STALE)
    .limit(_b("limit"))
)
SELECT_PENDING_INBOX = _waited(sa.select(inbox).where(_PENDING_INBOX).order_by(inbox.c.id))
# Which of the three has anything, in one statement: mostly none has.
SWEEP_PROBE = _waited(
    sa.select(
        sa.exists(sa.select(pvps.c.id).where(_OVERDUE)).label("overdue"),
        sa.exists(
            sa.select(legs.c.pvp_id).join(pvps, pvps.c.id == legs.c.pvp_id).where(_STALE)
        ).label("stale"),
        sa.exists(sa.select(inbox.c.id).where(_PENDING_INBOX)).label("inbox"),
    )
)

# --- typed rows, built by position ---------------------------------------------------------
#
# What the statements above select, as the frozen dataclasses of ``gateway.connector.rows``:
# each built from the row's values by position (no per-column lookups), states as the
# model's enums.

_LEG_WIDTH = len(legs.c)
_LEG_STATUS = list(legs.c.keys()).index("status")
_PVP_WIDTH = len(PVP_COLUMNS)
if tuple(f.name for f in fields(MessageRow)) != tuple(SELECT_MESSAGES_OF.selected_columns.keys()):
    raise RuntimeError("MessageRow's fields must be the columns of SELECT_MESSAGES_OF, in order")


def leg_row(row: Sequence[Any]) -> LegRow:
    """The leg in the first columns of ``row`` (``select(legs, ...)``)."""
    values = list(row[:_LEG_WIDTH])
    values[_LEG_STATUS] = LegStatus(values[_LEG_STATUS])
    return LegRow(*values)


def _pvp_row(values: Sequence[Any]) -> PvPRow:
    """The PvP in ``values``: ``PVP_COLUMNS``."""
    id_, deadline, condition, secret, state = values
    return PvPRow(id_, deadline, condition, secret, PvPState(state))


def _decision(pvp_id: str, values: Sequence[Any]) -> Decision | None:
    """The decision in ``values`` (``DECISION_COLUMNS``, of an outer join: None if none)."""
    kind, reason, detail, decided_at = values
    if kind is None:
        return None
    return Decision(pvp_id, DecisionKind(kind), reason, detail or "", decided_at)


def read_pvp(conn: Connection, pvp_id: str, *, for_update: bool = False) -> PvPRow:
    """The PvP ``pvp_id``; ``for_update`` (PostgreSQL): its row locked until the commit."""
    statement = SELECT_PVP_FOR_UPDATE if for_update else SELECT_PVP
    return _pvp_row(run(conn, statement, {"pvp_id": pvp_id}).one())


def read_legs(conn: Connection, pvp_id: str) -> list[LegRow]:
    """The PvP's legs, by name."""
    return [leg_row(r) for r in run(conn, SELECT_LEGS_OF, {"pvp_id": pvp_id})]


def read_leg(conn: Connection, pvp_id: str, leg: str) -> LegRow:
    return leg_row(run(conn, SELECT_LEG, {"pvp_id": pvp_id, "leg": leg}).one())


def read_decision(conn: Connection, pvp_id: str) -> Decision | None:
    row = run(conn, SELECT_DECISION, {"pvp_id": pvp_id}).first()
    return None if row is None else _decision(row[0], row[1:])


def found(row: Sequence[Any]) -> Found:
    """A leg with its PvP and decision: a row of SELECT_LEG_BY_UETR (or SELECT_PVPS...)."""
    pvp = _pvp_row(row[_LEG_WIDTH : _LEG_WIDTH + _PVP_WIDTH])
    return Found(pvp, leg_row(row), _decision(pvp.id, row[_LEG_WIDTH + _PVP_WIDTH :]))


def find_leg(conn: Connection, uetr: str) -> Found | None:
    """The leg of ``uetr`` with its PvP and decision, in one read (see SELECT_LEG_BY_UETR)."""
    row = run(conn, SELECT_LEG_BY_UETR, {"uetr": uetr}).first()
    return None if row is None else found(row)


def read_pvp_record(conn: Connection, pvp_id: str) -> PvPRecord | None:
    """The PvP with its decision and legs, in one read (SELECT_PVP_VIEW); None if there is
    no such PvP."""
    rows = run(conn, SELECT_PVP_VIEW, {"pvp_id": pvp_id}).all()
    if not rows:
        return None
    first = rows[0]
    pvp = _pvp_row(first[:_PVP_WIDTH])
    at_legs = _PVP_WIDTH + len(DECISION_COLUMNS)
    decision = _decision(pvp.id, first[_PVP_WIDTH:at_legs])
    # A PvP without legs (the outer join's one row of NULLs) has none.
    return PvPRecord(pvp, decision, [leg_row(r[at_legs:]) for r in rows if r[at_legs] is not None])


def pvp_exists(conn: Connection, pvp_id: str) -> bool:
    return run(conn, SELECT_PVP_ID, {"pvp_id": pvp_id}).first() is not None


def read_message_log(conn: Connection, pvp_id: str) -> list[MessageRow]:
    """The PvP's message log, oldest first."""
    return [MessageRow(*r) for r in run(conn, SELECT_MESSAGES_OF, {"pvp_id": pvp_id})]


def pvp_values(pvp: PvPRow, created_at: int) -> dict[str, Any]:
    """The columns of a new PvP's ``pvps`` row (``INSERT_PVP``)."""
    return {
        "id": pvp.id,
        "deadline": pvp.deadline,
        "condition": pvp.condition,
        "secret": pvp.secret,
        "state": pvp.state,
        "created_at": created_at,
    }


_LEG_COLUMNS = tuple(legs.c.keys())


def leg_values(leg: LegRow) -> dict[str, Any]:
    """The columns of a new leg's row (``INSERT_LEG``): all of them."""
    return {name: getattr(leg, name) for name in _LEG_COLUMNS}


# batched mode


def read_queued_legs(conn: Connection, limit: int) -> list[QueuedLeg]:
    """Legs waiting for their pacs.009, oldest PvP first."""
    pvp_end = _LEG_WIDTH + _PVP_WIDTH
    return [
        QueuedLeg(leg_row(r), _pvp_row(r[_LEG_WIDTH:pvp_end]), r[pvp_end])
        for r in run(conn, SELECT_QUEUED_LEGS, {"limit": limit})
    ]


def read_queued_decisions(conn: Connection, limit: int) -> list[QueuedDecision]:
    """Legs whose decision waits to be sent, oldest decision first."""
    pvp_end = _LEG_WIDTH + _PVP_WIDTH
    return [
        QueuedDecision(
            leg_row(r), _pvp_row(r[_LEG_WIDTH:pvp_end]), DecisionKind(r[pvp_end]), r[pvp_end + 1]
        )
        for r in run(conn, SELECT_QUEUED_DECISIONS, {"limit": limit})
    ]


# the sweeper and the inbox


def sweep_probe(conn: Connection, *, due: int, now: int, cutoff: int) -> SweepProbe:
    """Which of the sweeper's lists has anything (see SWEEP_PROBE): PvPs undecided at
    ``due``, decisions due for redelivery at ``now``, inbound messages stored unprocessed
    since ``cutoff`` or before."""
    overdue, stale, inbox_ = run(
        conn, SWEEP_PROBE, {"due": due, "now": now, "cutoff": cutoff}
    ).one()
    return SweepProbe(bool(overdue), bool(stale), bool(inbox_))


def overdue_pvps(conn: Connection, due: int, limit: int) -> list[str]:
    """Ids of PvPs still pending with ``deadline <= due``."""
    return [r[0] for r in run(conn, SELECT_OVERDUE, {"due": due, "limit": limit})]


def stale_legs(conn: Connection, now: int, limit: int) -> list[LegKey]:
    """Legs whose decision is not acknowledged and due to be sent again at ``now``."""
    return [LegKey(*r) for r in run(conn, SELECT_STALE_LEGS, {"now": now, "limit": limit})]


def pending_inbox(conn: Connection, cutoff: int) -> list[InboxRow]:
    """Inbound messages stored unprocessed, received at ``cutoff`` or before, in order."""
    return [InboxRow(*r) for r in run(conn, SELECT_PENDING_INBOX, {"cutoff": cutoff})]


# participants and instructions


def read_participants(conn: Connection, *, by_registration: bool = False) -> list[ParticipantRow]:
    """Every participant, by BIC or (``by_registration``) oldest first. Built at each call:
    an administrative read of a small table, not a statement of the per-PvP path."""
    order = participants.c.registered_at if by_registration else participants.c.bic
    return [ParticipantRow(*r) for r in conn.execute(sa.select(participants).order_by(order))]


def participant_by_token(conn: Connection, digest: str) -> ParticipantRow | None:
    """The participant whose bearer token has SHA-256 ``digest`` (hex)."""
    row = run(conn, SELECT_PARTICIPANT_BY_TOKEN, {"digest": digest}).first()
    return None if row is None else ParticipantRow(*row)


def read_instruction(
    conn: Connection, party_bic: str, instruction_id: str
) -> InstructionRow | None:
    key = {"party_bic": party_bic, "instruction_id": instruction_id}
    row = run(conn, SELECT_INSTRUCTION, key).first()
    return None if row is None else InstructionRow(*row)


_NEW_INSTRUCTION_FIELDS = tuple(f.name for f in fields(NewInstruction))


def insert_instruction(conn: Connection, new: NewInstruction, created_at: int) -> None:
    values = {name: getattr(new, name) for name in _NEW_INSTRUCTION_FIELDS}
    run(conn, INSERT_INSTRUCTION, {**values, "created_at": created_at})


def first_match(conn: Connection, wanted: dict[str, Any]) -> InstructionRow | None:
    """The oldest open instruction with the terms ``wanted`` (SELECT_MATCH's parameters)."""
    row = run(conn, SELECT_MATCH, wanted).first()
    return None if row is None else InstructionRow(*row)


__all__ = [
    "Found",
    "LegRow",
    "PvPRow",
    "find_leg",
    "first_match",
    "found",
    "insert_instruction",
    "leg_row",
    "leg_values",
    "make_engine",
    "now_ms",
    "overdue_pvps",
    "participant_by_token",
    "pending_inbox",
    "pvp_exists",
    "pvp_values",
    "read_decision",
    "read_instruction",
    "read_leg",
    "read_legs",
    "read_message_log",
    "read_participants",
    "read_pvp",
    "read_pvp_record",
    "read_queued_decisions",
    "read_queued_legs",
    "reader",
    "stale_legs",
    "sweep_probe",
]
