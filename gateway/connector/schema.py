"""The connector's tables, on their own ``MetaData``, and what brings a database up to them.

No migration tool: :func:`create_schema` at every start creates what is missing, adds the
columns added since the first release, replaces old indexes by partial ones and installs the
triggers (the mock's schema is its own business). Times are integer milliseconds since the
epoch (UTC).

Invariants the schema enforces itself:

- one decision per PvP (``decisions.pvp_id`` is the primary key) that never changes and is
  never deleted (triggers refuse UPDATE and DELETE on ``decisions``);
- a UETR is used by one leg only; an inbound message id is processed once per sender.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.pgengine import compress_with_lz4

metadata = sa.MetaData()


def _partial(name: str, *columns: str, where: Any) -> sa.Index:
    """An index of only the rows ``where`` holds (SQLite and PostgreSQL): the sweeper's and
    the dispatcher's work lists. A full index on a state column rewrote one of its pages at
    every change of state, in every transaction; a row outside the condition costs nothing.
    The statements repeat ``where`` word for word (with constants, not bound parameters),
    or SQLite cannot use the index."""
    return sa.Index(name, *columns, sqlite_where=where, postgresql_where=where)


def literal_is(column: str | sa.ColumnElement[Any], value: str) -> Any:
    """``column = 'value'`` with the value in the SQL text (see :func:`_partial`): the
    statements that use a partial index repeat its condition with this."""
    col = sa.column(column) if isinstance(column, str) else column
    return col == sa.literal_column(f"'{value}'")


def checked_after_key(column: str | sa.ColumnElement[Any], value: str) -> Any:
    """``column = 'value'`` for a table reached by key from another's work list, written
    (``(...) IS TRUE``) so that PostgreSQL cannot serve it from a partial index of that
    table. Its statistics, taken when few rows had ``value`` (a PvP is pending for
    milliseconds), put such an index at one row, and a join then scanned the whole index
    for every row of the work list (``ix_pvps_pending_deadline`` for each queued leg: 3 s
    for 8,000 legs); by key it is one look-up each (``test_pg_query_plans.py``)."""
    col = sa.column(column) if isinstance(column, str) else column
    return (col == sa.literal_column(f"'{value}'")).is_(sa.true())


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
    _partial("ix_pvps_pending_deadline", "deadline", where=literal_is("state", "pending")),
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
    _partial("ix_legs_queued", "pvp_id", where=literal_is("status", "queued")),
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


# Indexes replaced by partial ones (``_partial``): dropped from databases made before.
_DROPPED_INDEXES = (
    "ix_pvps_state_deadline",
    "ix_legs_status",
    "ix_legs_decision_queued",
    "ix_legs_redeliver",
    "ix_inbox_unprocessed",
    "ix_outbox_due",
)

# Messages' bytes: compressed with LZ4 on PostgreSQL (``gateway.pgengine.compress_with_lz4``).
_MESSAGE_COLUMNS = (
    ("inbox", "raw"),
    ("message_bodies", "raw"),
    ("pvp_messages", "raw"),
    ("outbox", "payload"),
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
        compress_with_lz4(conn, _MESSAGE_COLUMNS)
    with engine.begin() as conn:
        for ddl in _SQLITE_TRIGGERS if engine.dialect.name == "sqlite" else _PG_TRIGGERS:
            conn.exec_driver_sql(ddl)


__all__ = [
    "checked_after_key",
    "create_schema",
    "decisions",
    "inbox",
    "instructions",
    "legs",
    "literal_is",
    "message_bodies",
    "metadata",
    "outbox",
    "participants",
    "pvp_messages",
    "pvps",
    "sim_accounts",
    "sim_issuance",
    "sim_locks",
    "sim_seen",
]
