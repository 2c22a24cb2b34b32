"""Group commit on SQLite: every commit returns only after an fsync of the log that started
after it, readers never act on a commit that is not on disk yet, and concurrent commits
share fsyncs. Power loss cannot be staged in a test; what is checked is the ordering that
makes a commit durable before anyone can learn of it."""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.config import DatabaseSettings
from gateway.connector import store as connector_store
from gateway.db import SqlUnitOfWork, make_engine
from gateway.sqlite import walsync
from gateway.sqlite.engine import sqlite_engine
from gateway.sqlite.walsync import WalGroupSync
from tests.support.waiting import wait_for


class RecordingFsync:
    """An fsync that records the paths it synced."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, path: str) -> None:
        with self.lock:
            self.calls.append(path)


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_each_commit_waits_for_an_fsync_that_started_after_it_and_they_share_fsyncs() -> None:
    """Fifteen commits made while one commit's fsync is in flight wait for the next fsync,
    which covers them all."""
    events: list[tuple[str, int]] = []  # in the order they happened
    lock = threading.Lock()
    in_flight, release = threading.Event(), threading.Event()

    def record(what: str, i: int) -> None:
        with lock:
            events.append((what, i))

    def fsync(_path: str) -> None:
        with lock:
            n = sum(1 for what, _ in events if what == "fsync started")
            events.append(("fsync started", n))
        if n == 0:
            in_flight.set()
            assert release.wait(10)
        record("fsync ended", n)

    sync = WalGroupSync("/db", fsync=fsync)

    def writer(i: int) -> None:
        sync.before_commit()
        record("announced", i)
        sync.committed()
        record("returned", i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    threads[0].start()
    assert in_flight.wait(10)
    for t in threads[1:]:
        t.start()
    wait_for(
        lambda: sync.waiting == 16,
        "fifteen commits wait behind the fsync in flight",
        interval=0.001,
    )
    release.set()
    for t in threads:
        t.join(10)
    assert sync.fsyncs == 2
    at = {event: index for index, event in enumerate(events)}
    for i in range(16):
        # Some fsync started after this commit was announced and ended before it returned.
        assert any(
            at[("announced", i)] < at[("fsync started", n)]
            and at[("fsync ended", n)] < at[("returned", i)]
            for n in range(2)
        ), i


def test_a_reader_waits_only_while_a_commit_is_on_its_way_to_disk() -> None:
    fsync = RecordingFsync()
    sync = WalGroupSync("/db", fsync=fsync)
    sync.barrier()
    assert fsync.calls == []  # nothing in flight: free
    sync.before_commit()  # a writer's COMMIT returned; its fsync has not run yet
    sync.barrier()
    assert fsync.calls == ["/db-wal"]  # the reader did not go on before the log was synced
    sync.committed()
    assert sync.fsyncs == 2
    sync.barrier()
    assert sync.fsyncs == 2


def test_a_failed_fsync_fails_the_commit_and_the_next_one_syncs_again() -> None:
    attempts: list[str] = []

    def flaky(path: str) -> None:
        attempts.append(path)
        if len(attempts) == 1:
            raise OSError(5, "Input/output error")

    sync = WalGroupSync("/db", fsync=flaky)
    sync.before_commit()
    with pytest.raises(OSError):
        sync.committed()
    sync.barrier()  # nothing in flight any more
    sync.before_commit()
    sync.committed()
    assert len(attempts) == 2 and sync.fsyncs == 1


def test_slow_fsyncs_are_logged_at_most_once_a_second_with_their_count_and_the_longest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    seconds = [0.001, 0.03, 0.025, 0.04]  # what each fsync takes, by the clock
    sync = WalGroupSync("/db", fsync=lambda _path: clock.advance(seconds.pop(0)), clock=clock)

    def commit() -> None:
        sync.before_commit()
        sync.committed()

    with caplog.at_level(logging.WARNING, logger="gateway.sqlite.walsync"):
        commit()  # 1 ms: usual, not logged
        assert caplog.records == []
        commit()  # 30 ms: logged
        commit()  # 25 ms, within the second: counted, not logged yet
        [first] = caplog.records
        assert first.getMessage().startswith(
            "slow fsync of /db-wal: 1 over 20 ms since the last report, the longest 30.0 ms"
        )
        clock.advance(1.0)
        commit()  # 40 ms, a second later: logged with the one held back
    [_, second] = caplog.records
    assert second.getMessage().startswith(
        "slow fsync of /db-wal: 2 over 20 ms since the last report, the longest 40.0 ms"
    )
    # What the PvP benchmark reads back from a process's log: both reports, three fsyncs.
    text = "".join(f"... WARNING gateway.sqlite.walsync {r.getMessage()}\n" for r in caplog.records)
    assert walsync.slow_fsync_reports(text) == (3, 40.0)
    assert walsync.slow_fsync_reports("nothing slow here\n") == (0, 0.0)


def _engine_with(db: Path, **edges: Any) -> Engine:
    """The gateway's SQLite engine (its settings' defaults) on ``db``, its group commit given
    ``edges`` (``fsync``, ``checkpoint``) that a test can hold or watch, in place of the
    disk's and SQLite's own."""
    settings = DatabaseSettings(url=f"sqlite:///{db}")
    return sqlite_engine(
        settings.url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_size,
        group_sync=functools.partial(WalGroupSync, **edges),
    )


def _synchronous(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


def test_gateway_engine_commits_through_the_group_sync(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{db}"))
    try:
        assert _synchronous(engine) == 1  # NORMAL: the fsync is ours, after COMMIT
        sync = _sync_of(engine)
        assert sync.wal_path == f"{db.resolve()}-wal"
        with SqlUnitOfWork(engine) as uow:
            uow.conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            uow.commit()
        before = sync.fsyncs
        with SqlUnitOfWork(engine) as uow:
            uow.conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            uow.commit()
        assert sync.fsyncs == before + 1
        assert Path(sync.wal_path).exists()
        with SqlUnitOfWork(engine, readonly=True) as uow:  # nothing in flight: no fsync
            assert uow.conn.exec_driver_sql("SELECT x FROM t").scalar_one() == 1
            uow.commit()
        assert sync.fsyncs == before + 1
    finally:
        engine.dispose()


def test_a_gateway_writer_past_its_fsync_does_not_wait_for_another_writers_fsync(
    tmp_path: Path,
) -> None:
    """Once a writer's commit is on disk, handing its connection back to the pool (a
    rollback, which reads nothing) does not wait for an fsync of another writer's commit;
    a reader's transaction, which could have seen that commit, does."""
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'gateway.db'}"))
    try:
        with SqlUnitOfWork(engine) as uow:
            uow.conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            uow.commit()
        sync = _sync_of(engine)
        sync.before_commit()  # another writer, between its COMMIT and its fsync
        try:
            before = sync.fsyncs
            with SqlUnitOfWork(engine) as uow:
                uow.conn.exec_driver_sql("INSERT INTO t VALUES (1)")
                uow.commit()
            assert sync.fsyncs == before + 1  # its own, and no other
            with SqlUnitOfWork(engine, readonly=True) as uow:
                assert uow.conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1
            assert sync.fsyncs == before + 2
        finally:
            sync.committed()
    finally:
        engine.dispose()


def test_gateway_writers_do_not_hold_the_writer_lock_during_the_fsync(tmp_path: Path) -> None:
    """While one commit's fsync is in flight, another writer begins and commits."""
    release = threading.Event()
    entered = threading.Event()
    hold = [False]  # the next fsync waits for release

    def slow(path: str) -> None:
        if hold[0]:
            hold[0] = False
            entered.set()
            assert release.wait(10)
        walsync.fsync_path(path)

    engine = _engine_with(tmp_path / "gateway.db", fsync=slow)
    with SqlUnitOfWork(engine) as uow:
        uow.conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        uow.commit()
    pool_sync = _sync_of(engine)
    hold[0] = True

    def first() -> None:
        with SqlUnitOfWork(engine) as uow:
            uow.conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            uow.commit()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert entered.wait(10)
        # The first commit is waiting for its fsync: a second writer can still get in.
        done = threading.Event()

        def second() -> None:
            with SqlUnitOfWork(engine) as uow:
                uow.conn.exec_driver_sql("INSERT INTO t VALUES (2)")
                uow.commit()
            done.set()

        other = threading.Thread(target=second)
        other.start()
        # It committed (its BEGIN IMMEDIATE and COMMIT went through) and waits for the
        # fsync in flight, which started before its commit, then for its own.
        wait_for(
            lambda: pool_sync.waiting == 2,
            "the second commit waits behind the first",
            interval=0.001,
        )
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 2
        assert not done.is_set()
        release.set()
        other.join(10)
        assert done.is_set()
    finally:
        release.set()
        thread.join(10)
        engine.dispose()


def _sync_of(engine: Engine) -> WalGroupSync:
    """The WalGroupSync behind an engine (the gateway's or the connector's)."""
    sync = walsync.group_sync(engine)
    assert isinstance(sync, WalGroupSync)
    return sync


def test_connector_engine_commits_through_the_group_sync(tmp_path: Path) -> None:
    db = tmp_path / "connector.db"
    engine = connector_store.make_engine(f"sqlite:///{db}")
    try:
        assert _synchronous(engine) == 1
        sync = _sync_of(engine)
        assert sync.wal_path == f"{db.resolve()}-wal"
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        before = sync.fsyncs
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert sync.fsyncs == before + 1
        with connector_store.reader(engine) as conn:
            assert conn.execute(sa.text("SELECT x FROM t")).scalar_one() == 1
        assert sync.fsyncs == before + 1
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["gateway", "connector"])
def test_a_no_sync_commit_does_not_wait_for_an_fsync_and_the_next_commit_covers_it(
    tmp_path: Path, kind: str
) -> None:
    db = tmp_path / f"{kind}.db"
    engine = (
        make_engine(DatabaseSettings(url=f"sqlite:///{db}"))
        if kind == "gateway"
        else connector_store.make_engine(f"sqlite:///{db}")
    )
    sync = _sync_of(engine)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        before = sync.fsyncs
        with engine.begin() as conn:
            conn.execution_options(**{walsync.NO_SYNC: True})
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert sync.fsyncs == before  # no fsync for it
        with engine.connect() as conn:  # committed: visible, and nothing waits for it
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 1
        assert sync.fsyncs == before
        with engine.begin() as conn:  # the next commit's fsync covers both
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert sync.fsyncs == before + 1
    finally:
        engine.dispose()


def test_the_log_is_synced_with_fdatasync_on_linux(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As SQLite syncs its own log: data and size, not the inode's timestamps."""
    monkeypatch.setattr(walsync.sys, "platform", "linux")
    synced: list[str] = []
    real_fdatasync = walsync.os.fdatasync
    monkeypatch.setattr(walsync.os, "fsync", lambda fd: synced.append("fsync"))
    monkeypatch.setattr(
        walsync.os, "fdatasync", lambda fd: (synced.append("fdatasync"), real_fdatasync(fd))
    )
    log = tmp_path / "db-wal"
    log.write_bytes(b"frame")
    walsync.fsync_path(str(log))
    walsync.fsync_path(str(tmp_path / "gone-wal"))  # no log: nothing to sync
    assert synced == ["fdatasync"]


@pytest.mark.parametrize("kind", ["gateway", "connector"])
def test_new_databases_get_small_pages_and_older_ones_keep_theirs(
    tmp_path: Path, kind: str
) -> None:
    def engine_for(db: Path) -> Engine:
        if kind == "gateway":
            return make_engine(DatabaseSettings(url=f"sqlite:///{db}"))
        return connector_store.make_engine(f"sqlite:///{db}")

    def page_size(engine: Engine) -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())

    def net(engine: Engine) -> int:  # SQLite's own checkpoint, in pages of the database
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())

    new = engine_for(tmp_path / "new.db")
    try:
        with new.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        assert page_size(new) == walsync.PAGE_SIZE == 1024
        assert net(new) * 1024 == walsync.INLINE_CHECKPOINT_BYTES  # the same bytes of log...
    finally:
        new.dispose()
    made_before = tmp_path / "before.db"
    with sqlite3.connect(made_before) as conn:  # as this code made them before: 4 KiB, WAL
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x INTEGER)")
    conn.close()
    old = engine_for(made_before)
    try:
        with old.begin() as c:
            c.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert page_size(old) == 4096
        assert net(old) * 4096 == walsync.INLINE_CHECKPOINT_BYTES  # ...whatever the page size
        with old.connect() as c:
            assert c.exec_driver_sql("SELECT x FROM t").scalar_one() == 1
    finally:
        old.dispose()


def test_the_log_is_checkpointed_on_a_thread_of_its_own_not_in_a_commit(
    tmp_path: Path,
) -> None:
    """Held back, the checkpointer leaves the log past SQLite's own threshold (1000 pages)
    and no commit copies it into the database meanwhile; let go, it does (beside the writers,
    then once more under their lock), and the next writer starts the log again from its
    beginning. (The connector's engine is the same ``sqlite_engine``.)"""
    asked = threading.Event()
    release = threading.Event()
    rounds: list[tuple[int, int, int]] = []
    copied = threading.Semaphore(0)  # one release per copy done
    db = tmp_path / "gateway.db"

    def held(conn: sqlite3.Connection) -> tuple[int, int, int]:
        asked.set()
        assert release.wait(30)
        rounds.append(walsync.passive_checkpoint(conn))
        copied.release()
        return rounds[-1]

    engine = _engine_with(db, checkpoint=held)
    wal = Path(f"{db}-wal")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
            autocheckpoint = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
        assert autocheckpoint == walsync.INLINE_CHECKPOINT_BYTES // walsync.PAGE_SIZE
        database_size = db.stat().st_size
        blob = os.urandom(3 * 4096)
        for _ in range(400):
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (?)", (blob,))
        assert asked.wait(10)  # asked every CHECKPOINT_EVERY commits
        assert wal.stat().st_size // 4096 > 1000
        assert db.stat().st_size == database_size  # no commit checkpointed
        release.set()
        assert copied.acquire(timeout=10)
        busy, logged, pages = rounds[0]
        assert busy == 0 and logged > 1000 and pages == logged
        assert copied.acquire(timeout=10)
        # The round's second copy, under the writer lock, leaves the whole log copied.
        busy, logged, pages = rounds[1]
        assert busy == 0 and pages == logged
        assert db.stat().st_size > database_size + 400 * len(blob)
        wal_size = wal.stat().st_size
        for _ in range(10):
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert wal.stat().st_size == wal_size  # written again from its start, not grown
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 410
    finally:
        release.set()
        engine.dispose()


def test_a_round_copies_again_under_the_writer_lock_what_was_committed_during_its_first_copy(
    tmp_path: Path,
) -> None:
    calls: list[tuple[tuple[int, int, int], bool]] = []
    writer_lock = threading.Lock()  # the engine's, once it is made

    def spy(conn: sqlite3.Connection) -> tuple[int, int, int]:
        result = walsync.passive_checkpoint(conn)
        calls.append((result, writer_lock.locked()))
        if len(calls) == 1:  # a writer commits while the first copy runs
            writer = threading.Thread(target=insert)
            writer.start()
            writer.join(10)
        return result

    engine = _engine_with(tmp_path / "gateway.db", checkpoint=spy)

    def insert() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")

    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        insert()
        checkpointer = _sync_of(engine).checkpointer
        assert isinstance(checkpointer.writer_lock, type(threading.Lock()))
        writer_lock = checkpointer.writer_lock
        checkpointer._round()
        [(_, first_locked), ((busy, log, copied), second_locked)] = calls
        assert not first_locked and second_locked
        # The writer's commit is in the log (which it may have started again) and copied.
        assert busy == 0 and log >= 1 and copied == log
    finally:
        engine.dispose()
