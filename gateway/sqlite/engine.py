"""The SQLite engine of both parties (the gateway and the connector mock): one writer at a time
in the process, queued on a lock; read-only connections beside it; every commit durable by
group commit (:mod:`gateway.sqlite.walsync`).

Every write transaction starts with ``BEGIN IMMEDIATE``, so SQLite's single writer is taken up
front instead of failing on lock upgrade. A connection opened with the ``READONLY`` execution
option (:func:`reader`) starts a plain ``BEGIN`` and takes neither lock: in WAL mode it reads a
snapshot while a writer goes on. It must not write: a deferred transaction that tries to fails
against a concurrent writer.

Execution options, on an engine or a connection:

- ``READONLY``: a reader (above).
- ``OWN_ROWS``: a reader that acts only on rows its own thread committed and saw made durable,
  so its transaction does not wait for another writer's fsync (see :class:`_WriterQueue`).
- ``NO_SYNC``: a write whose commit does not wait for the log's fsync (:data:`walsync.NO_SYNC`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from gateway.sqlite.walsync import NO_SYNC, WalGroupSync, attach, prepare_connection

READONLY = "dt_readonly"
"""Execution option of a connection that only reads."""

OWN_ROWS = "dt_own_rows"
"""Execution option of a reader that acts only on rows it knows to be durable."""


class _WriterQueue:
    """One SQLite writer at a time *within this process*, queued on a lock, and group commit.

    SQLite's busy handler sleeps 1, 2, 5, 10 ... 100 ms between attempts, so under concurrent
    writers (HTTP reception, inbox workers, outbox dispatchers, jobs) a writer slept far longer
    than the transaction it waited for. Here it waits on a lock and starts the moment the
    previous writer commits. The lock is taken before ``BEGIN IMMEDIATE`` and released once the
    driver's COMMIT or ROLLBACK has returned (or the connection closes); other processes (the
    CLI, a second server) still meet SQLite's own lock and busy timeout. Since the lock is
    held for one transaction only, a thread never needs it twice: it cannot open a second
    write transaction while its first is open (SQLite's own lock would refuse it), and once
    that one has ended the lock is free.

    With ``sync`` (a file database), a writer's commit then waits, outside the lock, until the
    log is on disk, and a reader's transaction ends only once nothing it could have read is
    still waiting for that (unless it reads its own rows: ``OWN_ROWS``).
    """

    def __init__(self, timeout_s: float, sync: WalGroupSync | None) -> None:
        self.lock = threading.Lock()
        self.timeout_s = timeout_s
        self.sync = sync

    def connection_class(self) -> type[sqlite3.Connection]:
        queue = self

        class WriterConnection(sqlite3.Connection):
            holds_writer = False
            skip_sync = False  # this transaction's commit does not wait for an fsync (NO_SYNC)
            own_rows = False  # this reader's transaction does not wait for one (OWN_ROWS)

            def take_writer(self) -> None:
                if not queue.lock.acquire(timeout=queue.timeout_s):
                    raise sqlite3.OperationalError("database is locked (in-process writer queue)")
                self.holds_writer = True

            def give_writer(self) -> None:
                if self.holds_writer:
                    self.holds_writer = False
                    queue.lock.release()

            def commit(self) -> None:
                sync = queue.sync
                if self.skip_sync:
                    self.skip_sync = False
                    sync = None
                if sync is None:
                    try:
                        super().commit()
                    finally:
                        self.give_writer()
                    return
                if not self.holds_writer:  # a reader's transaction
                    read = self.in_transaction and not self.own_rows
                    super().commit()
                    if read:
                        sync.barrier()
                    return
                sync.before_commit()
                try:
                    super().commit()
                finally:
                    self.give_writer()
                    sync.committed()

            def rollback(self) -> None:
                # A reader's transaction that ends here waits for what it could have read
                # to be on disk. Not when none is open: the pool's reset of a connection
                # whose writer has committed (and waited for its own fsync) read nothing,
                # and would otherwise wait for another writer's fsync.
                read = self.in_transaction and not self.holds_writer and not self.own_rows
                try:
                    super().rollback()
                finally:
                    self.give_writer()
                if read and queue.sync is not None:
                    queue.sync.barrier()

            def close(self) -> None:
                try:
                    super().close()
                finally:
                    self.give_writer()

        return WriterConnection


def _file_path(url: str) -> str | None:
    """The database file of a SQLite ``url`` (its folder made if missing), or None for a
    database in memory."""
    db_path = sa.engine.make_url(url).database
    if not db_path or db_path == ":memory:" or "mode=memory" in url:
        return None
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    return str(Path(db_path).resolve())


def sqlite_engine(
    url: str,
    *,
    busy_timeout_ms: int,
    pool_size: int,
    max_overflow: int,
    group_sync: Callable[[str], WalGroupSync] = WalGroupSync,
) -> Engine:
    """An engine for the SQLite database at ``url``: WAL, group commit on a file database
    (FULL durability), the writer queue, readers by ``READONLY``, the busy timeout and
    foreign keys on every connection. ``group_sync`` makes the group commit of a file
    database from its path (a test gives it an fsync or a checkpoint it can hold)."""
    path = _file_path(url)
    sync = group_sync(path) if path is not None else None
    writers = _WriterQueue(busy_timeout_ms / 1000, sync)
    if sync is not None:
        sync.checkpointer.writer_lock = writers.lock
    engine = sa.create_engine(
        url,
        connect_args={
            "check_same_thread": False,
            "timeout": busy_timeout_ms / 1000,
            "factory": writers.connection_class(),
        },
        pool_size=pool_size,
        max_overflow=max_overflow,
    )
    if sync is not None:
        attach(engine, sync)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        prepare_connection(dbapi_conn, sync, busy_timeout_ms)  # WAL, group commit (walsync)

    @event.listens_for(engine, "commit")
    def _commit(conn: Connection) -> None:
        # Read here, not at BEGIN: NO_SYNC may be set on a connection already in its
        # transaction (``with engine.begin() as conn: conn.execution_options(...)``).
        if conn.get_execution_options().get(NO_SYNC, False):
            conn.connection.dbapi_connection.skip_sync = True  # type: ignore[union-attr]

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        readonly = options.get(READONLY, False)
        sql = "BEGIN" if readonly else "BEGIN IMMEDIATE"
        # Straight on the driver: exec_driver_sql's bookkeeping cost more than the BEGIN.
        # A busy database still surfaces as SQLAlchemy's OperationalError (retryable).
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        try:
            if readonly:
                dbapi_conn.own_rows = options.get(OWN_ROWS, False)
            else:
                dbapi_conn.take_writer()
            try:
                dbapi_conn.execute(sql)
            except BaseException:
                dbapi_conn.give_writer()
                raise
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(
                sql, (), exc, sqlite3.Error, dialect=conn.dialect
            ) from exc

    return engine


def reader(engine: Engine, *, own_rows: bool = False) -> Connection:
    """A connection for reads alone (``with reader(engine) as conn``): see ``READONLY``.

    Its transaction ends once nothing it could have read waits for its fsync (group commit,
    :meth:`gateway.sqlite.walsync.WalGroupSync.barrier`): what it read may then be acted upon.
    With ``own_rows`` it does not wait: the caller acts only on rows its own thread committed
    and saw made durable (the outbox rows a transaction wrote, handed out after its commit),
    so another writer's fsync in flight is none of its business."""
    options: dict[str, Any] = {READONLY: True}
    if own_rows:
        options[OWN_ROWS] = True
    return engine.connect().execution_options(**options)


__all__ = ["NO_SYNC", "OWN_ROWS", "READONLY", "reader", "sqlite_engine"]
