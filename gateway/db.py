"""Database engine, schema migrations and the unit-of-work plumbing shared by every store.

SQLite (the embedded default) runs in WAL mode with FULL durability (by group commit: see
:mod:`gateway.sqlite.walsync`), a busy timeout and foreign keys on; every write transaction starts
with ``BEGIN IMMEDIATE`` so that SQLite's single writer is taken up front instead of failing
on lock upgrade. PostgreSQL runs through psycopg 3 at READ COMMITTED; stores take row locks
in a fixed order and :func:`retrying` retries the rare deadlock or serialization failure, so
neither reaches a caller.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field

from gateway.config import DatabaseSettings
from gateway.errors import GatewayError, TransientError
from gateway.sqlite.walsync import NO_SYNC, WalGroupSync, attach, prepare_connection

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

T = TypeVar("T")


class SchemaOutOfDate(GatewayError):
    code = "SCHEMA_OUT_OF_DATE"
    kind = "unavailable"
    title = "Database schema is not at the newest migration"


class TransientDatabaseError(TransientError):
    """Deadlock, serialization failure, lock timeout or a lost unique-key race: retry."""

    code = "DB_RETRY"


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # SQLite stores the text of SQLAlchemy's DATETIME; these make and read that same text in
    # one step each (the composed processors took ~2 µs a value against ~0.8 here, on
    # every row of the hot path: a PvP message binds a dozen date-times).

    def bind_processor(self, dialect: sa.Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            v = value.astimezone(UTC)
            return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 (the fastest here)
                v.year,
                v.month,
                v.day,
                v.hour,
                v.minute,
                v.second,
                v.microsecond,
            )

        return process

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            return datetime.fromisoformat(value).replace(tzinfo=UTC)

        return process


def big_int_field(*, nullable: bool = False) -> Any:
    """A SQLModel field on a 64-bit integer column (amounts, balances)."""
    return Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=nullable))


def utc_field(*, nullable: bool = False) -> Any:
    """A SQLModel field on a :class:`UtcDateTime` column."""
    return Field(default=None, sa_column=sa.Column(UtcDateTime, nullable=nullable))


def autoincrement_field() -> Any:
    """A 64-bit auto-incrementing primary key (INTEGER on SQLite: only that autoincrements)."""
    return Field(
        default=None,
        sa_column=sa.Column(
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
    )


def partial_index(name: str, *columns: str, where: str) -> sa.Index:
    """An index of only the rows ``where`` holds (SQLite and PostgreSQL), for a work list
    (unsent, unprocessed, locked): a full index on a state column rewrites one of its pages
    at every change of state. Statements that read through it repeat ``where`` with its
    constants in the SQL text: with a bound parameter SQLite cannot tell that it applies."""
    condition = sa.text(where)
    return sa.Index(name, *columns, sqlite_where=condition, postgresql_where=condition)


def table_of(model: type[Any]) -> sa.Table:
    """The Core table behind a SQLModel table class (stores query with Core on the hot path)."""
    return cast(sa.Table, model.__table__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class _WriterQueue:
    """One SQLite writer at a time *within this process*, queued on a lock, and group commit.

    SQLite's busy handler sleeps 1, 2, 5, 10 ... 100 ms between attempts, so under concurrent
    writers (HTTP reception, inbox workers, outbox dispatchers, jobs) a writer slept far longer
    than the transaction it waited for. Here it waits on a lock and starts the moment the
    previous writer commits. The lock is taken before ``BEGIN IMMEDIATE`` and released once the
    driver's COMMIT or ROLLBACK has returned (or the connection closes); other processes (the
    CLI, a second server) still meet SQLite's own lock and busy timeout.

    With ``sync`` (a file database), a writer's commit then waits, outside the lock, until the
    log is on disk, and a reader's transaction ends only once nothing it could have read is
    still waiting for that (see :mod:`gateway.sqlite.walsync`).
    """

    def __init__(self, timeout_s: float, sync: WalGroupSync | None) -> None:
        self.lock = threading.Lock()
        self.timeout_s = timeout_s
        self.sync = sync

    def connection_class(self) -> type[sqlite3.Connection]:
        queue = self

        class WriterConnection(sqlite3.Connection):
            holds_writer = False

            def take_writer(self) -> None:
                if not queue.lock.acquire(timeout=queue.timeout_s):
                    raise sqlite3.OperationalError("database is locked (in-process writer queue)")
                self.holds_writer = True

            def give_writer(self) -> None:
                if self.holds_writer:
                    self.holds_writer = False
                    queue.lock.release()

            skip_sync = False

            def commit(self) -> None:
                sync = queue.sync
                if self.skip_sync:  # see walsync.NO_SYNC
                    self.skip_sync = False
                    sync = None
                if sync is None:
                    try:
                        super().commit()
                    finally:
                        self.give_writer()
                    return
                if not self.holds_writer:  # a reader's transaction
                    read = self.in_transaction
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
                read = self.in_transaction and not self.holds_writer
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


def make_engine(settings: DatabaseSettings) -> Engine:
    """Create the engine for ``settings.url`` with the durability settings described above."""
    url = settings.url
    if is_sqlite(url):
        db_path = sa.engine.make_url(url).database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        file_db = bool(db_path) and db_path != ":memory:" and "mode=memory" not in url
        sync = WalGroupSync(str(Path(db_path).resolve())) if file_db and db_path else None
        writers = _WriterQueue(settings.sqlite_busy_timeout_ms / 1000, sync)
        if sync is not None:
            sync.checkpointer.writer_lock = writers.lock
        engine = sa.create_engine(
            url,
            connect_args={
                "check_same_thread": False,
                "timeout": settings.sqlite_busy_timeout_ms / 1000,
                "factory": writers.connection_class(),
            },
            pool_size=settings.pool_size,
            max_overflow=settings.pool_size,
        )
        busy_ms = settings.sqlite_busy_timeout_ms

        if sync is not None:
            attach(engine, sync)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            prepare_connection(dbapi_conn, sync, busy_ms)  # WAL, group commit (walsync)

        @event.listens_for(engine, "commit")
        def _sqlite_commit(conn: Connection) -> None:
            if conn.get_execution_options().get(NO_SYNC, False):
                conn.connection.dbapi_connection.skip_sync = True  # type: ignore[union-attr]

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            readonly = conn.get_execution_options().get("dt_readonly", False)
            sql = "BEGIN" if readonly else "BEGIN IMMEDIATE"
            # Straight on the driver: exec_driver_sql's bookkeeping cost more than the BEGIN.
            # A busy database still surfaces as SQLAlchemy's OperationalError (retryable).
            dbapi_conn = conn.connection.dbapi_connection
            assert dbapi_conn is not None
            try:
                if not readonly:
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
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sa.create_engine(
        url, pool_size=settings.pool_size, max_overflow=settings.pool_size, pool_pre_ping=True
    )


# ------------------------------------------------------------------ migrations


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (``dt-gateway db upgrade``)."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """(current revision in the database, newest revision the code knows)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    assert head is not None
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def check_schema(engine: Engine) -> None:
    """Refuse to run on a database whose schema is not at the newest migration."""
    current, head = schema_revisions(engine)
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, the code needs {head}: "
            "run `dt-gateway db upgrade` first"
        )


# ------------------------------------------------------------------ transactions

_RETRY_SQLSTATES = {"40001", "40P01", "55P03"}


def _is_transient(exc: DBAPIError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _RETRY_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(orig)


def _is_unique_violation(exc: IntegrityError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(
        exc.orig
    )


def as_transient(exc: BaseException) -> TransientDatabaseError | None:
    """The retryable form of a driver error, or None when retrying cannot help.

    A unique-key violation counts as retryable: it is a race with a concurrent writer of the
    same id, and the retry finds that row and replays it.
    """
    if isinstance(exc, IntegrityError):
        return TransientDatabaseError(str(exc.orig)) if _is_unique_violation(exc) else None
    if isinstance(exc, DBAPIError) and _is_transient(exc):
        return TransientDatabaseError(str(exc.orig))
    return None


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Turn retryable driver errors into :class:`TransientDatabaseError` at the boundary."""
    try:
        yield
    except DBAPIError as exc:
        transient = as_transient(exc)
        if transient is not None:
            raise transient from exc
        raise


class _Transactional(Protocol):
    def __enter__(self) -> Any: ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any: ...
    def commit(self) -> None: ...


def retrying(uow: _Transactional, work: Callable[[], T], *, attempts: int = 20) -> T:
    """Run ``work`` inside ``with uow`` and commit; retry the whole unit on transient conflicts.

    ``work`` must be safe to run again from scratch: the failed attempt was rolled back.
    """
    for attempt in range(1, attempts + 1):
        try:
            with uow:
                result = work()
                uow.commit()
                return result
        except TransientError:
            if attempt == attempts:
                raise
            time.sleep(min(0.1, 0.001 * 2**attempt) * random.random())
    raise AssertionError("unreachable")


class SqlUnitOfWork:
    """One database transaction; ``with uow:`` opens it, ``commit()`` ends it.

    Re-enterable: each ``with`` block is a fresh connection and transaction, so a service can
    retry the whole unit after a :class:`gateway.errors.TransientError`.
    """

    def __init__(self, engine: Engine, *, readonly: bool = False) -> None:
        self.engine = engine
        self.readonly = readonly
        self._conn: Connection | None = None
        self._tx: sa.engine.Transaction | None = None

    @property
    def conn(self) -> Connection:
        assert self._conn is not None, "unit of work used outside its with block"
        return self._conn

    def __enter__(self) -> Self:
        conn = self.engine.connect()
        if self.readonly:
            conn = conn.execution_options(dt_readonly=True)
        self._conn = conn
        with translate_db_errors():
            self._tx = conn.begin()
        self._bind(conn)
        return self

    def _bind(self, conn: Connection) -> None:
        """Subclasses attach their repositories to the transaction's connection here."""

    def commit(self) -> None:
        assert self._tx is not None
        with translate_db_errors():
            self._tx.commit()

    def rollback(self) -> None:
        if self._tx is not None and self._tx.is_active:
            self._tx.rollback()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            self.rollback()
        finally:
            assert self._conn is not None
            self._conn.close()
            self._conn = None
        transient = as_transient(exc) if exc is not None else None
        if transient is not None:
            raise transient from exc


__all__ = [
    "SchemaOutOfDate",
    "SqlUnitOfWork",
    "TransientDatabaseError",
    "UtcDateTime",
    "as_transient",
    "autoincrement_field",
    "big_int_field",
    "check_schema",
    "is_sqlite",
    "make_engine",
    "partial_index",
    "retrying",
    "schema_revisions",
    "table_of",
    "translate_db_errors",
    "upgrade",
    "utc_field",
    "utcnow",
]
