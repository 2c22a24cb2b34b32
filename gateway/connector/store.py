"""The connector's own database: SQLAlchemy Core tables on their own ``MetaData``.

No migrations: ``create_all`` at start (the mock's schema is its own business). Times are
integer milliseconds since the epoch (UTC). Durability as in the gateway: SQLite in WAL with
FULL durability by group commit (:mod:`gateway.sqlite.walsync`) and ``BEGIN IMMEDIATE`` (a plain
``BEGIN`` for pure reads, see ``reader``); PostgreSQL by URL. The statements of the per-PvP
path are built once, at the end.

Invariants the store enforces itself:

- one decision per PvP (``decisions.pvp_id`` is the primary key) that never changes and is
  never deleted (triggers refuse UPDATE and DELETE on ``decisions``);
- a UETR is used by one leg only; an inbound message id is processed once per sender.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gateway.sqlite.engine import reader as sqlite_reader
from gateway.sqlite.engine import sqlite_engine

log = logging.getLogger(__name__)

metadata = sa.MetaData()


def _partial(name: str, *columns: str, where: Any) -> sa.Index:
    """An index of only the rows ``where`` holds (SQLite and PostgreSQL): the sweeper's and
    the dispatcher's work lists. A full index on a state column rewrote one of its pages at
    every change of state, in every transaction; a row outside the condition costs nothing.
    The statements repeat ``where`` word for word (with constants, not bound parameters),
    or SQLite cannot use the index."""
    return sa.Index(name, *columns, sqlite_where=where, postgresql_where=where)


def _is(column: str | sa.ColumnElement[Any], value: str) -> Any:
    """``column = 'value'`` with the value in the SQL text (see :func:`_partial`)."""
    col = sa.column(column) if isinstance(column, str) else column
    return col == sa.literal_column(f"'{value}'")


_BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

participants = sa.Table(
    "participants",
    metadata,
    sa.Column("bic", sa.String(11), primary_key=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("endpoint", sa.String(500), nullable=True),
    sa.Column("cert_pem", sa.Text, nullable=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("registered_at", sa.BigInteger, nullable=False),
)

instructions = sa.Table(
    "instructions",
    metadata,
    sa.Column("id", _BigInt, primary_key=True, autoincrement=True),
    sa.Column("instruction_id", sa.String(35), nullable=False),
    sa.Column("party_bic", sa.String(11), nullable=False),
    sa.Column("counterparty_bic", sa.String(11), nullable=False),
    sa.Column("sell_currency", sa.String(3), nullable=False),
    sa.Column("sell_amount", sa.BigInteger, nullable=False),
    sa.Column("sell_account", sa.String(34), nullable=False),
    sa.Column("buy_currency", sa.String(3), nullable=False),
    sa.Column("buy_amount", sa.BigInteger, nullable=False),
    sa.Column("buy_account", sa.String(34), nullable=False),
    sa.Column("value_time", sa.BigInteger, nullable=False),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("submitted_by", sa.String(11), nullable=False),
    sa.Column("pvp_id", sa.String(35), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("party_bic", "instruction_id", name="uq_instruction"),
    sa.Index("ix_instructions_open", "counterparty_bic", "party_bic", "pvp_id"),
)

pvps = sa.Table(
    "pvps",
    metadata,
    sa.Column("id", sa.String(35), primary_key=True),
    sa.Column("deadline", sa.BigInteger, nullable=False),
    sa.Column("condition", sa.String(64), nullable=False),
    sa.Column("secret", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    # pending -> committed | aborted -> completed (every network acknowledged).
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # Undecided PvPs by deadline: the sweeper's overdue check.
    _partial("ix_pvps_pending_deadline", "deadline", where=_is("state", "pending")),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("pvp_id", sa.String(35), sa.ForeignKey("pvps.id"), primary_key=True),
    sa.Column("decision", sa.String(6), nullable=False),
    sa.Column("reason", sa.String(4), nullable=True),
    sa.Column("detail", sa.String(300), nullable=True),
    sa.Column("decided_at", sa.BigInteger, nullable=False),
    sa.CheckConstraint("decision IN ('COMMIT', 'ABORT')", name="ck_decision"),
)

legs = sa.Table(
    "legs",
    metadata,
    sa.Column("pvp_id", sa.String(35), sa.ForeignKey("pvps.id"), primary_key=True),
    sa.Column("leg", sa.String(8), primary_key=True),
    sa.Column("uetr", sa.String(36), nullable=False, unique=True),
    sa.Column("network_bic", sa.String(11), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("debtor_bic", sa.String(11), nullable=False),
    sa.Column("debtor_account", sa.String(34), nullable=False),
    sa.Column("creditor_bic", sa.String(11), nullable=False),
    sa.Column("creditor_account", sa.String(34), nullable=False),
    sa.Column("end_to_end_id", sa.String(35), nullable=False),
    sa.Column("pacs009_msg_id", sa.String(35), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    # instructed -> locked | rejected; then settled | released | refused (camt.029 RJCR).
    sa.Column("reason", sa.String(4), nullable=True),
    sa.Column("locked_at", sa.BigInteger, nullable=True),
    sa.Column("acknowledged", sa.Boolean, nullable=False, default=False),
    # The network acknowledged the decision (ACSC or camt.029).
    sa.Column("decision_sent_at", sa.BigInteger, nullable=True),
    # Batched mode: the decision waits to be grouped into one message per network.
    sa.Column("decision_queued", sa.Boolean, nullable=False, default=False),
    # When an unacknowledged decision is sent again (exponential backoff), and how often it was.
    sa.Column("redeliver_at", sa.BigInteger, nullable=True),
    sa.Column("redeliveries", sa.Integer, nullable=False, default=0),
    # Batched mode's queues: legs waiting for a pacs.009, decisions waiting for a message.
    _partial("ix_legs_queued", "pvp_id", where=_is("status", "queued")),
    _partial("ix_legs_decisions_queued", "pvp_id", where=sa.column("decision_queued").is_(True)),
    # Decisions sent and not acknowledged, by when they are sent again.
    _partial(
        "ix_legs_unacknowledged",
        "redeliver_at",
        where=sa.column("acknowledged").is_(False) & sa.column("redeliver_at").is_not(None),
    ),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", _BigInt, primary_key=True, autoincrement=True),
    sa.Column("sender_bic", sa.String(11), nullable=False),
    sa.Column("msg_def_id", sa.String(35), nullable=False),
    sa.Column("msg_id", sa.String(35), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    # The bytes, while they are nowhere else: empty for a message processed on receipt that
    # concerned a PvP (its bytes are in pvp_messages; a second copy was ~3 KB more written per
    # message, for nothing that reads it).
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("processed", sa.Boolean, nullable=False, default=False),
    sa.UniqueConstraint("sender_bic", "msg_def_id", "msg_id", name="uq_inbox_msg"),
    # Stored but not processed (a failure): the sweeper retries them. Most are stored
    # processed, and never enter it.
    _partial("ix_inbox_pending", "id", where=sa.column("processed").is_(False)),
)

# The bytes of a message that concerns several PvPs (batched mode: one pacs.009 carries up to
# ``batch_max`` of them), stored once; each PvP's ``pvp_messages`` row points to them.
message_bodies = sa.Table(
    "message_bodies",
    metadata,
    sa.Column("id", _BigInt, primary_key=True, autoincrement=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),
)

pvp_messages = sa.Table(
    "pvp_messages",
    metadata,
    sa.Column("id", _BigInt, primary_key=True, autoincrement=True),
    sa.Column("pvp_id", sa.String(35), nullable=False, index=True),
    sa.Column("direction", sa.String(3), nullable=False),
    sa.Column("peer_bic", sa.String(11), nullable=False),
    sa.Column("msg_def_id", sa.String(35), nullable=False),
    sa.Column("msg_id", sa.String(35), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    # Set when the bytes are in ``message_bodies`` (``raw`` is then empty).
    sa.Column("body_id", _BigInt, nullable=True),
    sa.Column("at", sa.BigInteger, nullable=False),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", _BigInt, primary_key=True, autoincrement=True),
    sa.Column("destination_bic", sa.String(11), nullable=False),
    sa.Column("msg_def_id", sa.String(35), nullable=False),
    sa.Column("msg_id", sa.String(35), nullable=False),
    sa.Column("pvp_id", sa.String(35), nullable=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("available_at", sa.BigInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("sent_at", sa.BigInteger, nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    # What waits to be sent, in order (the dispatcher filters by ``available_at``).
    _partial("ix_outbox_unsent", "id", where=sa.column("sent_at").is_(None)),
    sa.Index("ix_outbox_pvp", "pvp_id"),
    sa.Index("ix_outbox_msg_id", "msg_id"),  # an admi.002 names the message it rejects
)

# --- the simulated foreign central banks' ledgers ----------------------------------------

sim_accounts = sa.Table(
    "sim_accounts",
    metadata,
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("account", sa.String(34), primary_key=True),
    sa.Column("available", sa.BigInteger, nullable=False),
    sa.Column("held", sa.BigInteger, nullable=False),
    sa.CheckConstraint("available >= 0 AND held >= 0", name="ck_sim_nonnegative"),
)

sim_issuance = sa.Table(
    "sim_issuance",
    metadata,
    sa.Column("id", _BigInt, primary_key=True, autoincrement=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("account", sa.String(34), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
)

sim_locks = sa.Table(
    "sim_locks",
    metadata,
    sa.Column("uetr", sa.String(36), primary_key=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("pvp_id", sa.String(35), nullable=True),
    sa.Column("msg_id", sa.String(35), nullable=False),
    sa.Column("end_to_end_id", sa.String(35), nullable=True),
    sa.Column("debtor_account", sa.String(34), nullable=False),
    sa.Column("creditor_account", sa.String(34), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("condition", sa.String(64), nullable=True),
    sa.Column("state", sa.String(10), nullable=False),
    # locked | rejected | committed | released | cancelled (camt.056 before pacs.009).
    sa.Column("reason", sa.String(4), nullable=True),
)

sim_seen = sa.Table(
    "sim_seen",
    metadata,
    sa.Column("currency", sa.String(3), primary_key=True),
    sa.Column("msg_def_id", sa.String(35), primary_key=True),
    sa.Column("msg_id", sa.String(35), primary_key=True),
)


_SQLITE_TRIGGERS = (
    """CREATE TRIGGER IF NOT EXISTS decisions_final_update BEFORE UPDATE ON decisions
       BEGIN SELECT RAISE(ABORT, 'a PvP decision is final'); END""",
    """CREATE TRIGGER IF NOT EXISTS decisions_final_delete BEFORE DELETE ON decisions
       BEGIN SELECT RAISE(ABORT, 'a PvP decision is final'); END""",
)

_PG_TRIGGERS = (
    """CREATE OR REPLACE FUNCTION connector_decision_final() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'a PvP decision is final'; END; $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS decisions_final ON decisions",
    """CREATE TRIGGER decisions_final BEFORE UPDATE OR DELETE ON decisions
       FOR EACH ROW EXECUTE FUNCTION connector_decision_final()""",
)


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


# Indexes replaced by partial ones (``_partial``): dropped from databases made before.
_DROPPED_INDEXES = (
    "ix_pvps_state_deadline",
    "ix_legs_status",
    "ix_legs_decision_queued",
    "ix_legs_redeliver",
    "ix_inbox_unprocessed",
    "ix_outbox_due",
)

# Columns added after the first release: (table, column, DDL type and default).
_ADDED_COLUMNS = (
    ("legs", "decision_queued", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("legs", "redeliver_at", "BIGINT"),
    ("legs", "redeliveries", "INTEGER NOT NULL DEFAULT 0"),
    ("pvp_messages", "body_id", "BIGINT"),
)


def create_schema(engine: Engine) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        for table, column, ddl in _ADDED_COLUMNS:
            if column not in {c["name"] for c in inspector.get_columns(table)}:
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
        for tbl in metadata.sorted_tables:
            for index in tbl.indexes:
                index.create(conn, checkfirst=True)
        for name in _DROPPED_INDEXES:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
        # Decisions sent before ``redeliver_at`` existed: due for redelivery now (a decision
        # sent again is answered again, at worst once more than needed).
        conn.execute(
            legs.update()
            .where(legs.c.redeliver_at.is_(None) & legs.c.decision_sent_at.is_not(None))
            .values(redeliver_at=legs.c.decision_sent_at)
        )
    with engine.begin() as conn:
        for ddl in _SQLITE_TRIGGERS if engine.dialect.name == "sqlite" else _PG_TRIGGERS:
            conn.exec_driver_sql(ddl)


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
SELECT_PVP = sa.select(pvps).where(pvps.c.id == _b("pvp_id"))
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
# A leg with its PvP and decision in one row: the tables have no column name in common but
# ``reason`` (the decision's is ``decision_reason``).
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
    .where(_is(legs.c.status, "queued") & _is(pvps.c.state, "pending"))
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
_OVERDUE = _is(pvps.c.state, "pending") & (pvps.c.deadline <= _b("due"))
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


__all__ = [
    "create_schema",
    "decisions",
    "inbox",
    "instructions",
    "legs",
    "make_engine",
    "message_bodies",
    "metadata",
    "now_ms",
    "outbox",
    "participants",
    "pvp_messages",
    "pvps",
    "reader",
    "sim_accounts",
    "sim_issuance",
    "sim_locks",
    "sim_seen",
]
