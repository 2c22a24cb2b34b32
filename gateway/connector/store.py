"""The connector's own database: SQLAlchemy Core tables on their own ``MetaData``.

No migrations: ``create_all`` at start (the mock's schema is its own business). Times are
integer milliseconds since the epoch (UTC). Durability as in the gateway: SQLite in WAL with
``synchronous=FULL`` and ``BEGIN IMMEDIATE``; PostgreSQL by URL.

Invariants the store enforces itself:

- one decision per PvP (``decisions.pvp_id`` is the primary key) that never changes and is
  never deleted (triggers refuse UPDATE and DELETE on ``decisions``);
- a UETR is used by one leg only; an inbound message id is processed once per sender.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

metadata = sa.MetaData()

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
    sa.Index("ix_pvps_state_deadline", "state", "deadline"),
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
    sa.Index("ix_legs_status", "status"),
    sa.Index("ix_legs_decision_queued", "decision_queued"),
    sa.Index("ix_legs_redeliver", "acknowledged", "redeliver_at"),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", _BigInt, primary_key=True, autoincrement=True),
    sa.Column("sender_bic", sa.String(11), nullable=False),
    sa.Column("msg_def_id", sa.String(35), nullable=False),
    sa.Column("msg_id", sa.String(35), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("processed", sa.Boolean, nullable=False, default=False),
    sa.UniqueConstraint("sender_bic", "msg_def_id", "msg_id", name="uq_inbox_msg"),
    sa.Index("ix_inbox_unprocessed", "processed"),
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
    sa.Index("ix_outbox_due", "sent_at", "available_at"),
    sa.Index("ix_outbox_pvp", "pvp_id"),
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


def make_engine(url: str, *, busy_timeout_ms: int = 10_000) -> Engine:
    """An engine with the gateway's durability settings (see the module docstring)."""
    if url.startswith("sqlite"):
        db_path = sa.engine.make_url(url).database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
            pool_size=10,
            max_overflow=20,
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        # One writer at a time in this process, queued on a lock instead of SQLite's busy
        # handler (which sleeps 1, 2, 5, 10 ... ms between attempts: with a dozen threads
        # contending, most of their time went there). Held from BEGIN until the connection
        # goes back to the pool, i.e. after its COMMIT or ROLLBACK; reentrant for a thread
        # that opens a second connection while holding one.
        writer = threading.RLock()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            writer.acquire()
            conn.info["writer_holds"] = conn.info.get("writer_holds", 0) + 1
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        @event.listens_for(engine, "checkin")
        def _checkin(_dbapi_conn: Any, record: Any) -> None:
            for _ in range(record.info.pop("writer_holds", 0)):
                try:
                    writer.release()
                except RuntimeError:  # checked in by another thread (garbage collected)
                    log.error("connector store: a connection was returned by another thread")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


# Columns added after the first release: (table, column, DDL type and default).
_ADDED_COLUMNS = (
    ("legs", "decision_queued", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("legs", "redeliver_at", "BIGINT"),
    ("legs", "redeliveries", "INTEGER NOT NULL DEFAULT 0"),
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
    with engine.begin() as conn:
        for ddl in _SQLITE_TRIGGERS if engine.dialect.name == "sqlite" else _PG_TRIGGERS:
            conn.exec_driver_sql(ddl)


__all__ = [
    "create_schema",
    "decisions",
    "inbox",
    "instructions",
    "legs",
    "make_engine",
    "metadata",
    "now_ms",
    "outbox",
    "participants",
    "pvp_messages",
    "pvps",
    "sim_accounts",
    "sim_issuance",
    "sim_locks",
    "sim_seen",
]
