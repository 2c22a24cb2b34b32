"""The SQLite engine of both parties: one writer at a time, readers beside it, and readers that
end only once what they could have read is durable (unless they read their own rows)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from gateway.sqlite import walsync
from gateway.sqlite.engine import reader, sqlite_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = sqlite_engine(
        f"sqlite:///{tmp_path / 'db.sqlite'}", busy_timeout_ms=10_000, pool_size=2, max_overflow=2
    )
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    yield engine
    engine.dispose()


def _sync(engine: Engine) -> walsync.WalGroupSync:
    sync = walsync.group_sync(engine)
    assert sync is not None
    return sync


def test_a_reader_reads_beside_an_open_write_transaction(engine: Engine) -> None:
    with engine.begin() as writer:  # holds the process's writer lock and SQLite's
        writer.exec_driver_sql("INSERT INTO t VALUES (1)")
        with reader(engine) as conn:  # needs neither: reads the snapshot before the insert
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 0
    with reader(engine) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1


def test_a_thread_writes_again_before_its_first_connection_goes_back_to_the_pool(
    engine: Engine,
) -> None:
    """The writer lock is let go at COMMIT, not at check-in: a thread never needs it twice."""
    with engine.connect() as first:
        with first.begin():
            first.exec_driver_sql("INSERT INTO t VALUES (1)")
        with engine.begin() as second:
            second.exec_driver_sql("INSERT INTO t VALUES (2)")
        with first.begin():  # and the first connection writes again
            first.exec_driver_sql("INSERT INTO t VALUES (3)")
    with reader(engine) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 3


def test_a_reader_waits_for_another_writers_fsync_unless_it_reads_its_own_rows(
    engine: Engine,
) -> None:
    sync = _sync(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")  # this thread's row, durable now
    sync.before_commit()  # another writer, between its COMMIT and its fsync
    try:
        before = sync.fsyncs
        with reader(engine, own_rows=True) as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1
        assert sync.fsyncs == before  # none of its business
        with reader(engine) as conn:  # could have seen the other writer's rows
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1
        assert sync.fsyncs == before + 1
        with reader(engine) as conn:  # a pooled connection an own-rows reader used before
            conn.exec_driver_sql("SELECT 1").scalar_one()
            conn.commit()  # ended by a commit, as by a rollback
        assert sync.fsyncs == before + 2
    finally:
        sync.committed()


def test_a_no_sync_engine_commits_without_waiting_for_an_fsync(engine: Engine) -> None:
    sync = _sync(engine)
    before = sync.fsyncs
    with engine.execution_options(**{walsync.NO_SYNC: True}).begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    assert sync.fsyncs == before
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    assert sync.fsyncs == before + 1
