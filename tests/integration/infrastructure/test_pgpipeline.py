"""A unit of work's statements in one psycopg pipeline on PostgreSQL (``gateway/pgpipeline.py``):
what is queued is seen by the next read and committed with the COMMIT, a savepoint that fails
undoes only its own statements (its SAVEPOINT sent only when a read must see its writes),
failures reported late still fail the transaction, and the connection goes back to the pool as
it was lent; a read-only unit that asks for a snapshot sees one point in time."""

from __future__ import annotations

import select
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from psycopg import pq
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.db import PgPipeline, SqlUnitOfWork, TransientDatabaseError, pipeline_of
from gateway.messaging.outbox import OutboxRepository, outbox_t
from tests.support.databases import PgDatabases, migrated_engine

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


class _Uow(SqlUnitOfWork):
    pipelined = True
    outbox: OutboxRepository

    def _bind(self, conn: Connection) -> None:
        self.outbox = OutboxRepository(conn, claim_for=timedelta(seconds=30))


@pytest.fixture
def engine(pg_database_factory: PgDatabases) -> Iterator[Engine]:
    eng = migrated_engine(pg_database_factory(migrated=True))
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    yield eng
    eng.dispose()


def _insert(pg: PgPipeline, *rows: tuple[int | None, str]) -> None:
    for row in rows:
        pg.execute("INSERT INTO t VALUES (%s, %s)", row)


def _in_savepoint(
    pg: PgPipeline, *rows: tuple[int, str], outbox: OutboxRepository | None = None
) -> None:
    """Inserts ``rows`` in a savepoint (and an outbox row first), then waits for them: a
    duplicate key is reported inside the block."""
    with pg.savepoint():
        if outbox is not None:
            outbox.add("topic", b"undone", event_id="undone", now=NOW)
        _insert(pg, *rows)
        pg.fetch("SELECT 1")


def _refused_in_savepoint(pg: PgPipeline) -> None:
    with pg.savepoint():
        _insert(pg, (3, "c"))
        raise ValueError("refused")


def _refused_after_writing(
    pg: PgPipeline,
    row: tuple[int, str],
    *,
    outbox: OutboxRepository | None = None,
    seen: list[tuple[int]] | None = None,
) -> None:
    """A block that writes ``row`` (and an outbox row), reads the ids (``seen``) and fails."""
    with pg.savepoint():
        _insert(pg, row)
        if outbox is not None:
            outbox.add("topic", b"undone", event_id="undone", now=NOW)
        if seen is not None:
            assert pg.fetch("SELECT id FROM t ORDER BY id") == seen
        raise ValueError("refused")


def _commit_duplicate(uow: _Uow) -> None:
    with uow:
        assert uow.pg is not None
        _insert(uow.pg, (1, "a"), (None, "no id"), (2, "b"))
        uow.commit()


def _rows(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.exec_driver_sql("SELECT id, v FROM t ORDER BY id")]


def test_queued_writes_are_read_back_and_committed_with_the_commit(engine: Engine) -> None:
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None and pipeline_of(uow.conn) is pg
        pg.execute("INSERT INTO t VALUES (%s, %s)", (1, "a"))
        pg.execute("INSERT INTO t VALUES (%s, %s)", (2, "b"))
        assert pg.fetch("SELECT count(*) FROM t") == [(2,)]
        pg.execute("UPDATE t SET v = %s WHERE id = %s", ("c", 2))
        uow.commit()
    assert _rows(engine) == [(1, "a"), (2, "c")]


def test_nothing_is_kept_without_the_commit(engine: Engine) -> None:
    uow = _Uow(engine)
    with uow:
        assert uow.pg is not None
        uow.pg.execute("INSERT INTO t VALUES (%s, %s)", (1, "a"))
        assert uow.pg.fetch("SELECT count(*) FROM t") == [(1,)]
    assert _rows(engine) == []


def test_a_write_that_fails_fails_the_commit_whenever_it_is_reported(engine: Engine) -> None:
    with pytest.raises(IntegrityError):
        _commit_duplicate(_Uow(engine))
    assert _rows(engine) == []


def _commit_once_the_failure_came_back(uow: _Uow) -> None:
    with uow:
        pg = uow.pg
        assert pg is not None
        _insert(pg, (1, "a"))
        assert pg.fetch("SELECT count(*) FROM t") == [(1,)]
        _insert(pg, (1, "again"))
        # Queued statements wait in libpq's buffer for the sync (``gateway.pgsend``): send
        # this one now. The server sends an error at once: wait until it is back, so that
        # psycopg reads it while it sends the COMMIT.
        driver = pg.conn.connection.driver_connection
        assert driver is not None
        while driver.pgconn.flush():
            select.select([], [driver.pgconn.socket], [], 30)
        readable, _, _ = select.select([driver.pgconn.socket], [], [], 30)
        assert readable
        uow.commit()


def test_a_failure_that_comes_back_while_the_commit_is_sent_is_the_databases_error(
    engine: Engine,
) -> None:
    """A unique-key race reported as the COMMIT goes out is still a lost race, retried (the
    ledger's units once raised the driver's own error there, which no caller retried)."""
    with pytest.raises(TransientDatabaseError):
        _commit_once_the_failure_came_back(_Uow(engine))
    assert _rows(engine) == []


def test_a_savepoint_that_fails_undoes_only_its_own_statements(engine: Engine) -> None:
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None
        _insert(pg, (1, "a"))
        with pytest.raises(IntegrityError):
            _in_savepoint(pg, (2, "b"), (1, "again"))
        with pytest.raises(ValueError, match="refused"):
            _refused_in_savepoint(pg)
        _insert(pg, (4, "d"))
        uow.commit()
    assert _rows(engine) == [(1, "a"), (4, "d")]


# A row's xmin is the id of the (sub)transaction that wrote it: the transaction's own when no
# SAVEPOINT was sent before the write.
_WRITTEN_BY_THE_TRANSACTION = (
    "SELECT id, xmin::text::bigint = txid_current() % 4294967296 FROM t ORDER BY id"
)


def test_a_block_sends_its_savepoint_only_when_a_read_must_see_its_writes(engine: Engine) -> None:
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None
        with pg.savepoint():
            # A read (a WITH that writes nothing too) before the block's writes needs none.
            assert pg.fetch("WITH c AS (SELECT count(*) FROM t) SELECT * FROM c") == [(0,)]
            _insert(pg, (1, "a"))  # held back, then sent with nothing around it
        with pg.savepoint():
            _insert(pg, (2, "b"))
            assert pg.fetch("SELECT count(*) FROM t") == [(2,)]  # SAVEPOINT, the write, this
        assert pg.fetch(_WRITTEN_BY_THE_TRANSACTION) == [(1, True), (2, False)]
        uow.commit()
    assert _rows(engine) == [(1, "a"), (2, "b")]


def test_writes_of_a_block_left_by_an_exception_never_reach_the_database(engine: Engine) -> None:
    """A duplicate key written in a refused block is no error: the database never sees it."""
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None
        _insert(pg, (1, "a"))
        with pytest.raises(ValueError, match="refused"):
            _refused_after_writing(pg, (1, "again"), outbox=uow.outbox)
        del uow.outbox.claimed[:]  # as the PvP unit of work's savepoint does
        _insert(pg, (2, "b"))
        uow.commit()
    assert _rows(engine) == [(1, "a"), (2, "b")]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(outbox_t)).scalar_one() == 0


def test_nested_blocks_undo_only_their_own_writes_and_see_their_parents(engine: Engine) -> None:
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None
        with pg.savepoint():
            _insert(pg, (1, "a"))
            with pytest.raises(ValueError, match="refused"):
                _refused_after_writing(pg, (2, "b"), seen=[(1,), (2,)])
            with pg.savepoint():
                _insert(pg, (3, "c"))
            _insert(pg, (4, "d"))
        uow.commit()
    assert _rows(engine) == [(1, "a"), (3, "c"), (4, "d")]


def test_claimed_outbox_rows_get_their_ids_by_the_commit_and_not_from_a_failed_block(
    engine: Engine,
) -> None:
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None
        uow.outbox.add("topic", b"kept", event_id="kept", now=NOW)
        with pytest.raises(IntegrityError):
            _in_savepoint(pg, (1, "a"), (1, "again"), outbox=uow.outbox)
        del uow.outbox.claimed[1:]  # as the PvP unit of work's savepoint does
        uow.outbox.add("topic", b"after", event_id="after", now=NOW)
        uow.commit()
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.select(outbox_t.c.event_id, outbox_t.c.id)).all())
    assert set(ids) == {"kept", "after"}
    assert [(m.event_id, m.id) for m in uow.outbox.claimed] == [
        ("kept", ids["kept"]),
        ("after", ids["after"]),
    ]


def test_the_connection_goes_back_out_of_autocommit_mode(engine: Engine) -> None:
    for commit in (True, False):
        uow = _Uow(engine)
        with uow:
            assert uow.pg is not None
            uow.pg.execute("INSERT INTO t VALUES (%s, %s)", (1, "a"))
            driver = uow.pg.conn.connection.driver_connection
            assert driver is not None and driver.autocommit  # our BEGIN, queued
            if commit:
                uow.commit()
        assert not driver.autocommit
        with engine.begin() as conn:  # the same pooled connection, as SQLAlchemy lends it
            conn.exec_driver_sql("DELETE FROM t")
            conn.exec_driver_sql("INSERT INTO t VALUES (9, 'z')")
            conn.rollback()
        assert _rows(engine) == ([(1, "a")] if commit else [])
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM t")


def _in_transaction(pg: PgPipeline) -> bool:
    driver = pg.conn.connection.driver_connection
    assert driver is not None
    return bool(driver.pgconn.transaction_status != pq.TransactionStatus.IDLE)


def test_plain_reads_go_before_the_begin_and_a_unit_that_only_read_commits_nothing(
    engine: Engine,
) -> None:
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None
        assert pg.fetch("SELECT count(*) FROM t") == [(0,)]
        assert not _in_transaction(pg)
        uow.commit()
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None
        assert pg.fetch("SELECT count(*) FROM t") == [(0,)]
        pg.execute("INSERT INTO t VALUES (%s, %s)", (1, "a"))
        assert pg.fetch("SELECT count(*) FROM t") == [(1,)]
        assert _in_transaction(pg)
    assert _rows(engine) == []  # not committed: the write was in the transaction


def test_a_locking_read_or_sqlalchemys_statement_runs_in_the_transaction(engine: Engine) -> None:
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None
        assert pg.fetch("SELECT count(*) FROM t") == [(0,)]
        uow.conn.exec_driver_sql("INSERT INTO t VALUES (1, 'a')")
        assert _in_transaction(pg)
    assert _rows(engine) == []
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None
        assert pg.fetch("SELECT id FROM t FOR UPDATE") == []
        assert _in_transaction(pg)


def test_sqlalchemy_statements_wait_for_what_is_queued(engine: Engine) -> None:
    uow = _Uow(engine)
    with uow:
        assert uow.pg is not None
        uow.pg.execute("INSERT INTO t VALUES (%s, %s)", (1, "a"))
        assert uow.conn.exec_driver_sql("SELECT v FROM t").scalar_one() == "a"
        uow.pg.execute("INSERT INTO t VALUES (%s, %s)", (2, "b"))
        uow.commit()
    assert _rows(engine) == [(1, "a"), (2, "b")]


def test_a_unit_of_work_that_is_not_pipelined_has_none(engine: Engine) -> None:
    uow = SqlUnitOfWork(engine)
    with uow:
        assert uow.pg is None and pipeline_of(uow.conn) is None
    with pytest.raises(DBAPIError), uow:
        uow.conn.exec_driver_sql("SELECT * FROM no_such_table")


@pytest.mark.parametrize("snapshot", [True, False])
def test_a_read_only_unit_sees_one_point_in_time_only_when_it_asks_for_a_snapshot(
    engine: Engine, snapshot: bool
) -> None:
    """Reconciliation compares several reads (unsettled mints, then mints on-chain after a
    block): without one snapshot a mint moving between them was counted twice."""
    count = "SELECT count(*) FROM t"
    uow = SqlUnitOfWork(engine, readonly=True, snapshot=snapshot)
    with uow:
        assert uow.conn.exec_driver_sql(count).scalar_one() == 0
        with engine.begin() as other:
            other.exec_driver_sql("INSERT INTO t VALUES (1, 'a')")
        assert uow.conn.exec_driver_sql(count).scalar_one() == (0 if snapshot else 1)
    with engine.connect() as conn:  # the pooled connection is lent as before
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar_one() == "read committed"


def _last_statement(engine: Engine, pid: int) -> str:
    """What the server last received from the backend ``pid`` (``pg_stat_activity``)."""
    with engine.connect() as conn:
        query = conn.exec_driver_sql(
            "SELECT query FROM pg_stat_activity WHERE pid = %(pid)s", {"pid": pid}
        ).scalar_one()
    return str(query)


def test_queued_statements_reach_the_server_with_the_sync(engine: Engine) -> None:
    """``gateway.pgsend``: a statement nobody waits for is sent with the next sync, not alone
    (one write of the batch, one wake-up of the backend)."""
    uow = _Uow(engine)
    with uow:
        pg = uow.pg
        assert pg is not None
        assert pg.fetch("SELECT count(*) FROM t") == [(0,)]
        driver = pg.conn.connection.driver_connection
        assert driver is not None
        pid = driver.info.backend_pid
        _insert(pg, (1, "a"), (2, "b"))
        assert "INSERT" not in _last_statement(engine, pid)  # queued in the client
        assert pg.fetch("SELECT count(*) /* after */ FROM t") == [(2,)]
        assert "after" in _last_statement(engine, pid)
        uow.commit()
    assert _rows(engine) == [(1, "a"), (2, "b")]


def test_a_batch_larger_than_the_sockets_buffers_is_sent_whole(engine: Engine) -> None:
    """Everything a transaction queued goes out at its sync, however large (here 24 MB, far
    more than a socket buffers): written as the server reads it, nothing waits forever."""
    uow = _Uow(engine)
    big = "x" * 200_000
    with uow:
        pg = uow.pg
        assert pg is not None
        _insert(pg, *((i, big) for i in range(120)))
        assert pg.fetch("SELECT count(*), sum(length(v)) FROM t") == [(120, 120 * len(big))]
        uow.commit()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 120
