"""The per-message statements find their rows by key on a fresh SQLite database.

Without statistics (no ANALYZE: a new deployment) SQLite picks among usable indexes by shape,
and an equality on a low-selectivity column (``legs.acknowledged``, ``pvp_message.direction``)
looks as good as a key. Such a plan reads every row in flight, or every message ever, for each
message: correct, and quadratic over a burst. These plans are asserted here, since no
functional test can see them.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

import gateway.tables  # noqa: F401  (registers every table on SQLModel.metadata)
from gateway import db
from gateway.config import DatabaseSettings
from gateway.connector import schema as cschema
from gateway.connector import store as cstore
from gateway.messaging.outbox import OutboxDispatcher
from gateway.pvp import store as pstore


def _plan(path: Path, statement: Any, dialect: sa.Dialect) -> list[str]:
    sql = str(statement.compile(dialect=dialect))
    sql = re.sub(r"\(__\[POSTCOMPILE_\w+\]\)", "('a', 'b')", sql)  # an expanding IN
    with sqlite3.connect(path) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql, ["x"] * sql.count("?")).fetchall()
    return [r[3] for r in rows]


# Partial indexes hold only the rows of a work list (unsent, pending, queued): scanning one
# reads those rows, not the table.
_PARTIAL = {
    ix.name
    for metadata in (cschema.metadata, SQLModel.metadata)
    for table in metadata.sorted_tables
    for ix in table.indexes
    if ix.dialect_options["sqlite"]["where"] is not None
}


def _scans(plan: list[str]) -> list[str]:
    """Full table scans (a subquery's constant row is none, a partial index's rows are not
    the table's)."""
    return [
        p
        for p in plan
        if p.startswith("SCAN")
        and p != "SCAN CONSTANT ROW"
        and not any(p.endswith(f"USING INDEX {name}") for name in _PARTIAL)
    ]


@pytest.fixture(scope="module")
def connector_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, sa.Dialect]:
    path = tmp_path_factory.mktemp("plans") / "connector.db"
    engine = cstore.make_engine(f"sqlite:///{path}")
    cschema.create_schema(engine)
    return path, engine.dialect


@pytest.fixture(scope="module")
def gateway_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, sa.Engine]:
    path = tmp_path_factory.mktemp("plans") / "gateway.db"
    engine = db.make_engine(DatabaseSettings(url=f"sqlite:///{path}"))
    db.upgrade(engine)
    return path, engine


CONNECTOR_STATEMENTS = sorted(
    name
    for name in dir(cstore)
    if name.isupper() and isinstance(getattr(cstore, name), sa.sql.expression.Executable)
)


@pytest.mark.parametrize("name", CONNECTOR_STATEMENTS)
def test_no_connector_statement_scans_a_table(
    connector_db: tuple[Path, sa.Dialect], name: str
) -> None:
    path, dialect = connector_db
    plan = _plan(path, getattr(cstore, name), dialect)
    assert not _scans(plan), plan


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # completing a PvP: its own legs, not every unacknowledged one
        ("COMPLETE_PVP", "SEARCH legs USING INDEX sqlite_autoindex_legs_1 (pvp_id=?)"),
        # the sweeper: decisions due for redelivery, not every leg in flight
        ("SELECT_STALE_LEGS", "SEARCH legs USING INDEX ix_legs_unacknowledged (redeliver_at<?)"),
        ("SWEEP_PROBE", "SEARCH legs USING INDEX ix_legs_unacknowledged (redeliver_at<?)"),
        ("SWEEP_PROBE", "SEARCH pvps USING INDEX ix_pvps_pending_deadline (deadline<?)"),
        ("SWEEP_PROBE", "SCAN inbox USING INDEX ix_inbox_pending"),
        ("SELECT_DUE_OUTBOX", "SCAN outbox USING INDEX ix_outbox_unsent"),
        ("SELECT_QUEUED_LEGS", "SCAN legs USING INDEX ix_legs_queued"),
        ("SELECT_OUTBOX_PVP_BY_MSG_ID", "SEARCH outbox USING INDEX ix_outbox_msg_id (msg_id=?)"),
    ],
)
def test_connector_statements_take_their_rows_by_key(
    connector_db: tuple[Path, sa.Dialect], name: str, expected: str
) -> None:
    path, dialect = connector_db
    plan = _plan(path, getattr(cstore, name), dialect)
    assert any(expected in step for step in plan), plan


def test_gateway_pvp_statements_take_their_rows_by_key(
    gateway_db: tuple[Path, sa.Engine],
) -> None:
    path, engine = gateway_db
    names = [n for n in dir(pstore) if n.startswith("_") and n[1:].isupper()]
    statements = [
        (n, s)
        for n in names
        for s in (
            getattr(pstore, n) if isinstance(getattr(pstore, n), tuple) else [getattr(pstore, n)]
        )
        if isinstance(s, sa.sql.expression.Executable)
    ]
    assert len(statements) > 10
    for name, statement in statements:
        plan = _plan(path, statement, engine.dialect)
        assert not _scans(plan), (name, plan)
        # The leg's messages by uetr: not every outbound message through ``direction``.
        assert not any("(direction=?)" in step for step in plan), (name, plan)
    plan = _plan(path, pstore._LEG_MESSAGES_OUTBOX, engine.dialect)
    assert "SEARCH pvp_message_leg USING PRIMARY KEY (uetr=?)" in plan, plan
    # The work lists through their partial indexes.
    for statement, step in (
        (pstore._LOCKED_LEGS_PAST, "SEARCH pvp_leg USING INDEX ix_pvp_leg_locked_deadline"),
        (pstore._ALERTED_LEGS, "SCAN pvp_leg USING INDEX ix_pvp_leg_locked_deadline"),
        (pstore._INBOX_PENDING, "SCAN pvp_inbox USING INDEX ix_pvp_inbox_pending"),
        (pstore._INBOX_DUE, "SCAN pvp_inbox USING INDEX ix_pvp_inbox_pending"),
    ):
        plan = _plan(path, statement, engine.dialect)
        assert any(p.startswith(step) for p in plan), plan


def test_the_outbox_claim_searches_the_due_rows(gateway_db: tuple[Path, sa.Engine]) -> None:
    path, engine = gateway_db
    dispatcher = OutboxDispatcher(engine, {"a": lambda m: None, "b": lambda m: None})
    plan = _plan(path, dispatcher.rows._due["sqlite"], engine.dialect)
    assert "SCAN outbox USING INDEX ix_outbox_unsent" in plan, plan
