"""The connector's work lists on PostgreSQL reach the rows they join by key, whatever the
statistics say.

A running database's statistics are taken at moments: a PvP is pending for milliseconds, so
an ``ANALYZE`` usually finds none, and the planner then puts a partial index of pending rows
at one row. Joined to a work list as long, a plan that scans such an index for each row of
the list is quadratic: the batched flush read its queued legs in 0.4 s a call in the PvP
benchmark, 3 s for 8,000 legs. No functional test can see a plan; this one asks PostgreSQL
for it in that state (analyzed with nothing pending, then a backlog)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.connector import schema, store

pytestmark = pytest.mark.postgres

_LEG_COLUMNS = (
    "pvp_id, leg, uetr, network_bic, currency, amount, debtor_bic, debtor_account, "
    "creditor_bic, creditor_account, end_to_end_id, pacs009_msg_id, status, acknowledged, "
    "decision_queued, redeliveries"
)


def _add_pvps(conn: sa.Connection, first: int, count: int, state: str, status: str) -> None:
    span = {"first": first, "last": first + count - 1}
    conn.exec_driver_sql(
        "INSERT INTO pvps (id, deadline, condition, secret, state, created_at) "
        "SELECT 'PVP' || i, 10000000000000 + i, 'c', 's', %(state)s, i "
        "FROM generate_series(%(first)s::int, %(last)s::int) AS i",
        {**span, "state": state},
    )
    conn.exec_driver_sql(
        f"INSERT INTO legs ({_LEG_COLUMNS}) "
        "SELECT 'PVP' || i, leg, 'PVP' || i || '-' || leg, 'NETWORKXXXX', currency, 100, "
        "'DEBTORXXXXX', 'd', 'CREDITORXXX', 'c', 'E' || i, 'M' || i, %(status)s, false, "
        "false, 0 FROM generate_series(%(first)s::int, %(last)s::int) AS i, "
        "(VALUES ('DT', 'KZT'), ('FX', 'AED')) AS l(leg, currency)",
        {**span, "status": status},
    )


@pytest.fixture
def backlog(pg_database_factory: Callable[[], str]) -> Iterator[Engine]:
    """2,000 settled PvPs analyzed, then 1,500 pending ones with their legs queued."""
    engine = store.make_engine(pg_database_factory())
    schema.create_schema(engine)
    with engine.begin() as conn:
        _add_pvps(conn, 1, 2000, "settled", "settled")
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    with engine.begin() as conn:
        _add_pvps(conn, 2001, 1500, "pending", "queued")
    yield engine
    engine.dispose()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_queued_legs_reach_their_pvps_by_key(backlog: Engine) -> None:
    sql = str(store.SELECT_QUEUED_LEGS.compile(dialect=backlog.dialect))
    with backlog.connect() as conn:
        # The statement as psycopg runs it once prepared: a generic plan.
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        found = store.read_queued_legs(conn, 2000)
        (row,) = conn.exec_driver_sql(
            "EXPLAIN (FORMAT JSON, ANALYZE) " + sql, {"limit": 2000}
        ).fetchone()
    plan = (row if isinstance(row, list) else json.loads(row))[0]["Plan"]
    reads = {n["Relation Name"]: n for n in _nodes(plan) if "Relation Name" in n}
    assert reads["pvps"]["Index Name"] == "pvps_pkey", plan
    assert reads["pvps"]["Actual Loops"] <= 3000, plan  # one look-up per queued leg
    assert len(found) == 2000
    assert [q.pvp.id for q in found[:4]] == ["PVP2001", "PVP2001", "PVP2002", "PVP2002"]
