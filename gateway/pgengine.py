"""PostgreSQL engines as every party of the product makes them (the gateway's ``gateway.db``
and the connector mock's store alike): psycopg 3, no ping at every checkout.

SQLAlchemy's ``pool_pre_ping`` costs a round trip before every transaction (a sixth of a ledger
operation's). A connection is pinged only at a checkout after :data:`PG_PING_IDLE_S` unused,
which a busy pool never reaches and a quiet one (where a restarted server or a dropped
connection would show) always does, and lives at most :data:`PG_POOL_RECYCLE_S`. One found
dead when used anyway (the server restarted under load) is invalidated by SQLAlchemy and its
transaction fails as after a deadlock: the gateway runs its unit of work again
(``gateway.db.retrying``), the connector's callers take it as any failed transaction (a
message refused is posted again, a delivery retried). psycopg prepares a statement on a
connection after its fifth execution (its default ``prepare_threshold``), which every hot
path's statements reach within the first messages.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

PG_POOL_RECYCLE_S = 1800
"""PostgreSQL connections are replaced after this long (checked at checkout, no round trip)."""
PG_PING_IDLE_S = 10.0
"""A PostgreSQL connection unused this long is pinged when next checked out."""


def postgres_engine(url: str, *, pool_size: int, max_overflow: int) -> Engine:
    """An engine on ``url`` (``postgresql://`` is taken as psycopg 3's) with the pool policy
    above."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = sa.create_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_recycle=PG_POOL_RECYCLE_S
    )
    ping_when_idle(engine, PG_PING_IDLE_S)
    return engine


def server_advice(engine: Engine) -> list[str]:
    """What the PostgreSQL server behind ``engine`` is set to that the gateway should not run
    on, as warnings for the log (none on SQLite). Autovacuum off: dead rows are never cleaned
    up, and tables never analyzed, so the plans each connection keeps for its prepared
    statements stay those made for the tables as they were (whole-table scans made for empty
    ones) until the connection is replaced (:data:`PG_POOL_RECYCLE_S`)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        autovacuum = conn.exec_driver_sql("SHOW autovacuum").scalar()
    if autovacuum == "off":
        return [
            "PostgreSQL runs with autovacuum off: dead rows are never cleaned up and tables "
            "never analyzed, so query plans stay those made for small tables; turn it on "
            "(autovacuum = on, docs/operations.md)"
        ]
    return []


def compress_with_lz4(conn: sa.Connection, columns: Sequence[tuple[str, str]]) -> None:
    """On PostgreSQL 14 or later built with LZ4 (Debian's packages are), store the values of these
    ``(table, column)`` that are compressed (messages over ~2 KB) with LZ4, not the default
    pglz: ~8x less server CPU for a 150 KB batched message (1.2 ms -> 0.15 ms a row), a
    little less space. Values already stored stay as they are (both read back alike);
    idempotent: a column already set is left alone, so that a process that calls this at
    every start (the connector) takes no table's exclusive lock once it is done. Nothing on
    SQLite or a server without LZ4."""
    if conn.dialect.name != "postgresql":
        return
    methods = conn.exec_driver_sql(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
    ).scalar()
    if not methods or "lz4" not in methods:
        return
    for table, column in columns:
        method = conn.exec_driver_sql(
            "SELECT attcompression FROM pg_attribute"
            " WHERE attrelid = to_regclass(%(table)s) AND attname = %(column)s",
            {"table": table, "column": column},
        ).scalar()
        if method != "l":
            conn.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")


def ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection at checkout only if it sat unused ``idle_s`` or more; a dead
    one is replaced by the pool (``DisconnectionError`` in a checkout listener)."""

    def checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("checked_in_at")
        if since is None or time.monotonic() - since < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"idle connection is gone: {exc}") from exc

    sa.event.listen(engine, "checkin", checkin)
    sa.event.listen(engine, "checkout", checkout)


__all__ = [
    "PG_PING_IDLE_S",
    "PG_POOL_RECYCLE_S",
    "compress_with_lz4",
    "ping_when_idle",
    "postgres_engine",
    "server_advice",
]
