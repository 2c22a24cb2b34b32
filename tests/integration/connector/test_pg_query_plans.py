"""The connector's work lists on PostgreSQL reach the rows they join by key, whatever the
statistics say.

A running database's statistics are taken at moments: a PvP is pending for milliseconds, so
an ``ANALYZE`` usually finds none, and the planner then puts a partial index of pending rows
at one row. Joined to a work list as long, a plan that scans such an index for each row of
the list is quadratic: the batched flush read its queued legs in 0.4 s a call in the PvP
benchmark, 3 s for 8,000 legs. No functional test can see a plan; these ask PostgreSQL for
them in that state (analyzed with nothing in flight, then a backlog): the queued legs' read,
run, and every read of the connector's, none of which may scan a partial index whole on the
inner side of a nested loop (once for each row of the outer side)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.connector import pgrepo, schema, simstore, store
from gateway.connector.pgwrites import Writes
from gateway.pgarrays import FEW, FEW_ROWS
from tests.support.databases import plans_kept

pytestmark = pytest.mark.postgres

_LEG_COLUMNS = (
    "pvp_id, leg, uetr, network_bic, currency, amount, debtor_bic, debtor_account, "
    "creditor_bic, creditor_account, end_to_end_id, pacs009_msg_id, status, acknowledged, "
    "decision_queued, redeliveries"
)


def _add_outbox(conn: sa.Connection, first: int, count: int, *, sent: bool) -> None:
    conn.exec_driver_sql(
        "INSERT INTO outbox (destination_bic, msg_def_id, msg_id, payload, created_at,"
        " available_at, attempts, sent_at) SELECT 'NETWORKXXXX', 'pacs.009.001.08', 'OUT' || i,"
        " 'x', i, i, 0, CASE WHEN %(sent)s THEN i END"
        " FROM generate_series(%(first)s::int, %(last)s::int) AS i",
        {"first": first, "last": first + count - 1, "sent": sent},
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


@pytest.fixture(scope="module")
def backlog(pg_database_factory: Callable[[], str]) -> Iterator[Engine]:
    """2,000 settled PvPs and their sent messages analyzed, then 1,500 pending ones with their
    legs queued and their messages unsent."""
    engine = store.make_engine(pg_database_factory())
    schema.create_schema(engine)
    with engine.begin() as conn:
        _add_pvps(conn, 1, 2000, "settled", "settled")
        _add_outbox(conn, 1, 2000, sent=True)
        conn.exec_driver_sql(
            "INSERT INTO sim_locks (uetr, currency, msg_id, debtor_account, creditor_account,"
            " amount, state) SELECT uetr, currency, 'M', 'd', 'c', amount, 'committed' FROM legs"
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    with engine.begin() as conn:
        _add_pvps(conn, 2001, 1500, "pending", "queued")
        _add_outbox(conn, 2001, 1500, sent=False)
    yield engine
    engine.dispose()


def _plan(explained: Any) -> dict[str, Any]:
    """The top node of ``EXPLAIN (FORMAT JSON)``'s answer (parsed by the driver, or text)."""
    found: dict[str, Any] = (explained if isinstance(explained, list) else json.loads(explained))[
        0
    ]["Plan"]
    return found


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_queued_legs_reach_their_pvps_by_key(backlog: Engine) -> None:
    sql = str(store.SELECT_QUEUED_LEGS.compile(dialect=backlog.dialect))
    with backlog.connect() as conn:
        # The statement as psycopg runs it once prepared: a generic plan.
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        found = store.read_queued_legs(conn, 2000)
        plan = _plan(
            conn.exec_driver_sql(
                "EXPLAIN (FORMAT JSON, ANALYZE) " + sql, {"limit": 2000}
            ).scalar_one()
        )
    reads = {n["Relation Name"]: n for n in _nodes(plan) if "Relation Name" in n}
    assert reads["pvps"]["Index Name"] == "pvps_pkey", plan
    assert reads["pvps"]["Actual Loops"] <= 3000, plan  # one look-up per queued leg
    assert len(found) == 2000
    assert [q.pvp.id for q in found[:4]] == ["PVP2001", "PVP2001", "PVP2002", "PVP2002"]


_PARTIAL = {
    ix.name
    for table in schema.metadata.sorted_tables
    for ix in table.indexes
    if ix.dialect_options["postgresql"]["where"] is not None
}
_READS = {
    name: statement
    for module in (store, pgrepo)
    for name, statement in vars(module).items()
    if name.lstrip("_").isupper() and isinstance(statement, sa.sql.Select)
}


def _generic_plan(conn: sa.Connection, statement: sa.sql.Select[Any]) -> dict[str, Any]:
    """The plan PostgreSQL keeps for ``statement`` once psycopg has prepared it (a generic
    plan: the same whatever the parameters)."""
    sql = str(statement.compile(dialect=conn.dialect))
    sql = re.sub(r"\(__\[POSTCOMPILE_(\w+)\]\)", r"(%(\1)s)", sql)  # an expanding IN
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
    for n, name in enumerate(names, 1):
        sql = sql.replace(f"%({name})s", f"${n}")
    conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    conn.exec_driver_sql(f"PREPARE plan_of AS {sql}")
    try:
        args = f"({', '.join(['NULL'] * len(names))})" if names else ""
        query = f"EXPLAIN (FORMAT JSON) EXECUTE plan_of{args}"
        return _plan(conn.exec_driver_sql(query).scalar_one())
    finally:
        conn.exec_driver_sql("DEALLOCATE plan_of")


def _partial_scans_per_row(plan: dict[str, Any]) -> list[str]:
    """Partial indexes scanned whole on the inner side of a nested loop: once for every row
    of the outer side."""
    found = []
    for node in _nodes(plan):
        if node["Node Type"] != "Nested Loop" or len(node.get("Plans", [])) < 2:
            continue
        for inner in _nodes(node["Plans"][1]):
            if inner.get("Index Name") in _PARTIAL and "Index Cond" not in inner:
                found.append(inner["Index Name"])
    return found


@pytest.mark.parametrize("name", sorted(_READS))
def test_no_read_scans_a_partial_index_for_each_row(backlog: Engine, name: str) -> None:
    with backlog.connect() as conn:
        plan = _generic_plan(conn, _READS[name])
    assert not _partial_scans_per_row(plan), plan


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        (pgrepo._SELECT_PVPS_OF_UETR, {"uetr": "PVP2001-DT"}),
        (pgrepo._LOCK_PVPS_OF_UETR, {"uetr": "PVP2001-DT"}),
        (pgrepo._SELECT_PVP_BY_ID, {"pvp_id": "PVP2001"}),
        (pgrepo._LOCK_PVP_BY_ID, {"pvp_id": "PVP2001"}),
        (simstore.SELECT_SIM_LOCK, {"uetr": "PVP2001-DT"}),
    ],
    ids=["legs of a UETR", "lock of a UETR", "legs of a PvP", "lock of a PvP", "bank's lock"],
)
def test_a_message_s_reads_keep_their_plan(
    backlog: Engine, statement: sa.sql.Select[Any], params: dict[str, Any]
) -> None:
    """Planned again at each execution, the legs' read cost ~600 of its ~760 µs of server CPU
    (``gateway.pgarrays.any_of``): with one UETR or PvP, PostgreSQL keeps the generic plan
    after the first five runs."""
    sql = str(statement.compile(dialect=backlog.dialect))
    url = backlog.url.render_as_string(hide_password=False)
    assert plans_kept(url, sql, params) == (5, 7)


def test_own_outbox_rows_are_found_by_message_id_whatever_the_backlog(backlog: Engine) -> None:
    """After a commit, the thread that wrote a message or two hands them out: a look-up by
    message id, which must not walk the unsent rows of a backlog (the partial index of unsent
    rows, which statistics taken with nothing unsent put at one row)."""
    for n, ids in ((2, "'OUT3400', 'OUT3499'"), (FEW + 1, "'{OUT3400,OUT3499}'")):
        sql = pgrepo._unsent_outbox_by_msg_ids(n)
        for i in range(1, sql.count("%s") + 1):
            sql = sql.replace("%s", f"${i}", 1)
        with backlog.connect() as conn:
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            conn.exec_driver_sql(f"PREPARE own_rows_{n} AS {sql}")
            plan = _plan(
                conn.exec_driver_sql(
                    f"EXPLAIN (FORMAT JSON, ANALYZE) EXECUTE own_rows_{n}({ids}, 10000)"
                ).scalar_one()
            )
        indexes = [node["Index Name"] for node in _nodes(plan) if "Index Name" in node]
        assert indexes == ["ix_outbox_msg_id"], plan
        assert sum(node.get("Rows Removed by Filter", 0) for node in _nodes(plan)) == 0, plan
    with backlog.connect() as conn:
        found = pgrepo.unsent_outbox(conn, ["OUT3499", "OUT3400", "OUT10"], 10_000)
        many = pgrepo.unsent_outbox(conn, [f"OUT{i}" for i in range(3490, 3500)], 10_000)
    assert [row.msg_id for row in found] == ["OUT3400", "OUT3499"]  # oldest first; OUT10 sent
    assert [row.msg_id for row in many] == [f"OUT{i}" for i in range(3490, 3500)]


def test_own_outbox_rows_are_looked_up_with_a_plan_kept(backlog: Engine) -> None:
    """Of one array parameter the planner knows nothing, and the look-up after each commit
    was planned again at every call; with its few message ids as ``ARRAY[...]`` the generic
    plan is kept (``gateway.pgarrays.any_of``)."""
    url = backlog.url.render_as_string(hide_password=False)
    sql = pgrepo._unsent_outbox_by_msg_ids(2)
    assert plans_kept(url, sql, ["OUT3400", "OUT3499", 10_000]) == (5, 7)


class _Captured:
    """A pipe that keeps what it is asked to run."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []

    def execute(self, sql: str, params: list[Any]) -> None:
        self.sent.append((sql, params))


@pytest.mark.parametrize(("legs", "kept"), [(2, (5, 7)), (FEW_ROWS + 1, (12, 0))])
def test_an_unbatched_flush_keeps_its_plan(
    backlog: Engine, legs: int, kept: tuple[int, int]
) -> None:
    """An unbatched PvP's flush writes a row or two a table: sent as rows of parameters
    (``gateway.pgarrays.values_of``), PostgreSQL keeps the statement's generic plan; over
    arrays, as a batched flush's many rows are, it planned it again at every execution
    (~300 µs a flush)."""
    writes = Writes()
    for i in range(legs):
        writes.update_leg(f"PVP{2001 + i // 2}", ("DT", "FX")[i % 2], {"locked_at": 5})
    writes.set_pvp_state("PVP2001", "pending")
    pipe = _Captured()
    writes.flush(pipe)
    [(numbered, params)] = pipe.sent
    sql = re.sub(r"\$\d+", "%s", numbered)  # sent as numbered; psycopg's placeholders here
    url = backlog.url.render_as_string(hide_password=False)
    assert plans_kept(url, sql, params) == kept
