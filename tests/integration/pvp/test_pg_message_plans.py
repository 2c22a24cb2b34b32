"""PostgreSQL keeps one plan for the reads every message runs at the gateway.

psycopg prepares a statement at its fifth use on a connection, and PostgreSQL then runs the
generic plan it made once, unless that plan looks dearer than one made for the values at hand.
Of an array parameter the planner knows nothing and reckons on ten values, so a read of one
leg, or of one lock and its two wallets, was planned again at every execution, about half its
server CPU. Sent as ``ARRAY[%s, ...]`` (``gateway.pgarrays.any_of``), their number is known and
the generic plan is kept. No functional test can see a plan: these ask PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from gateway.ledger import service, sqltext
from gateway.ledger.model import CreateLock, Issue, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.pvp import pgstore
from tests.support.databases import PgDatabases, migrated_engine, plans_kept

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def gateway(pg_database_factory: PgDatabases) -> Iterator[Engine]:
    engine = migrated_engine(pg_database_factory(migrated=True), pool_size=2)
    service.apply(
        LedgerUnitOfWork(engine),
        [OpenWallet(w, WalletKind.PARTICIPANT, w) for w in ("w-a", "w-b")]
        + [Issue("fund", "w-a", 10_000)]
        + [CreateLock(f"lk-{i}", "w-a", "w-b", 1) for i in range(3_000)],
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO pvp_leg (uetr, state, status_requests, created_at, updated_at)"
            " SELECT 'uetr-' || i, 'settled', 0, now(), now() FROM generate_series(1, 3000) AS i"
        )
    with engine.connect() as conn:  # as a running database's tables are
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    yield engine
    engine.dispose()


READS: dict[str, tuple[str, list[Any]]] = {
    "a lock's batch read": (sqltext._pg_batch_read(1, 0, 2, 0), ["lk-new", "w-a", "w-b"]),
    "a commit's batch read": (sqltext._pg_batch_read(1, 0, 0, 1), ["lk-7", "lk-7", "lk-7"]),
    "a message's duplicate check with its leg": (
        pgstore._inbound_sha_and_legs(1),
        ["uetr-1", "CBAUAEAA", "pacs.009.001.08", "msg-1"],
    ),
    "a message's duplicate check with its leg and the instruction to follow": (
        pgstore._inbound_sha_legs_and_instructions(1, 1),
        ["uetr-1", "e2e-1", "CBAUAEAA", "pacs.009.001.08", "msg-1"],
    ),
}


@pytest.mark.parametrize("name", sorted(READS))
def test_a_message_s_reads_keep_their_plan(gateway: Engine, name: str) -> None:
    sql, params = READS[name]
    url = gateway.url.render_as_string(hide_password=False)
    assert plans_kept(url, sql, params) == (5, 7)
