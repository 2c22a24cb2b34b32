"""Database engine, schema migrations and the unit-of-work plumbing shared by every store.

SQLite (the embedded default) runs on :mod:`gateway.sqlite.engine`: WAL mode with FULL
durability (by group commit: see :mod:`gateway.sqlite.walsync`), a busy timeout and foreign keys
on; every write transaction starts with ``BEGIN IMMEDIATE`` so that SQLite's single writer is
taken up front instead of failing on lock upgrade. PostgreSQL runs through psycopg 3 at READ
COMMITTED; stores take row locks in a fixed order and :func:`retrying` retries the rare deadlock
or serialization failure, so neither reaches a caller.

PostgreSQL engines are :func:`gateway.pgengine.postgres_engine`'s (no ping at every checkout).
A unit of work that sets ``pipelined`` sends its statements through one psycopg pipeline
(:mod:`gateway.pgpipeline`): its BEGIN with its first write or locking read (a unit that only
read sends neither BEGIN nor COMMIT), its writes with its next read or its COMMIT. A read-only
unit runs its statements alone, in autocommit mode: at READ COMMITTED each statement has its
own snapshot inside a transaction too, and its BEGIN and ROLLBACK were a round trip each. A
connection found dead when used (the server restarted under load) is invalidated by SQLAlchemy
and its unit of work retried on another by :func:`retrying`, as a deadlock is, unless it died at
the commit, whose outcome is then unknown: that error reaches the caller.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field

from gateway.config import DatabaseSettings
from gateway.errors import GatewayError, TransientError
from gateway.pgengine import postgres_engine
from gateway.pgpipeline import OPTION as PIPELINE
from gateway.pgpipeline import Pending, PgPipeline, pipeline_of
from gateway.sqlite.engine import READONLY, sqlite_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

T = TypeVar("T")


class SchemaOutOfDate(GatewayError):
    code = "SCHEMA_OUT_OF_DATE"
    kind = "unavailable"
    title = "Database schema is not at the newest migration"


class TransientDatabaseError(TransientError):
    """Deadlock, serialization failure, lock timeout, a lost unique-key race, or a connection
    found dead before the commit: retry."""

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


def make_engine(settings: DatabaseSettings) -> Engine:
    """Create the engine for ``settings.url`` with the durability settings described above
    (SQLite: :func:`gateway.sqlite.engine.sqlite_engine`, the connector's engine too)."""
    url = settings.url
    if is_sqlite(url):
        return sqlite_engine(
            url,
            busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            pool_size=settings.pool_size,
            max_overflow=settings.pool_size,
        )
    return postgres_engine(url, pool_size=settings.pool_size, max_overflow=settings.pool_size)


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


def compared_with_models(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object``: whether a schema object is compared with the table models.
    Left out: the foreign keys to ``ledger_wallet``, which the models declare and SQLite keeps,
    and which PostgreSQL enforces once per statement by triggers instead (migration 0014);
    ``tests/integration/ledger/test_wallet_references.py`` checks both ways refuse the same
    rows."""
    if type_ == "foreign_key_constraint":
        return bool(obj.referred_table.name != "ledger_wallet")
    return True


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

    A subclass that sets :attr:`pipelined` gets, on PostgreSQL, one :class:`PgPipeline` for
    its transaction (``pg``) that its repositories share; ``conn`` waits for what is queued
    there before handing out the connection, and ``commit()`` sends COMMIT with it.

    ``snapshot``: every read of the transaction sees one point in time (REPEATABLE READ on
    PostgreSQL, where a read-only unit otherwise runs each statement alone in autocommit mode;
    a SQLite transaction always does), for a unit that compares what several reads return.
    """

    pipelined: ClassVar[bool] = False

    def __init__(self, engine: Engine, *, readonly: bool = False, snapshot: bool = False) -> None:
        self.engine = engine
        self.readonly = readonly
        self.snapshot = snapshot
        self._conn: Connection | None = None
        self._tx: sa.engine.Transaction | None = None
        self._committing = False
        self.pg: PgPipeline | None = None
        """The transaction's pipeline (a pipelined unit on PostgreSQL), else None."""

    @property
    def conn(self) -> Connection:
        assert self._conn is not None, "unit of work used outside its with block"
        if self.pg is not None:
            self.pg.settle()  # SQLAlchemy cannot run a statement inside a pipeline
        return self._conn

    def __enter__(self) -> Self:
        conn = self.engine.connect()
        if self.readonly:
            conn = conn.execution_options(**{READONLY: True})
        if conn.dialect.name == "postgresql" and (self.readonly or self.snapshot):
            isolation = "REPEATABLE READ" if self.snapshot else "AUTOCOMMIT"
            conn = conn.execution_options(isolation_level=isolation)
        self._conn = conn
        self._committing = False
        with translate_db_errors():
            self._tx = conn.begin()
        self.pg = None
        if self.pipelined and not self.readonly and conn.dialect.name == "postgresql":
            self.pg = PgPipeline(conn, keep_open=True, lazy_begin=True)
            conn.execution_options(**{PIPELINE: self.pg})  # for pipeline_of(conn)
        self._bind(conn)
        return self

    def _bind(self, conn: Connection) -> None:
        """Subclasses attach their repositories to the transaction's connection here."""

    def commit(self) -> None:
        assert self._tx is not None
        self._committing = True
        with translate_db_errors():
            self._commit_pending()
            if self.pg is not None:
                self.pg.commit()
            self._tx.commit()

    def _commit_pending(self) -> None:
        """Subclasses send here what they held back to go with the COMMIT."""

    def rollback(self) -> None:
        if self.pg is not None:
            self.pg.rollback()
        if self._tx is not None and self._tx.is_active:
            self._tx.rollback()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            self.rollback()
        finally:
            assert self._conn is not None
            if self.pg is not None:
                self.pg.release()
            self._conn.close()
            self._conn = None
        transient = as_transient(exc) if exc is not None else None
        if transient is None and _died_before_commit(exc, self._committing):
            transient = TransientDatabaseError(f"the database connection was lost: {exc}")
        if transient is not None:
            raise transient from exc


def _died_before_commit(exc: BaseException | None, committing: bool) -> bool:
    """The connection was found dead (and invalidated) before the commit was sent: nothing of
    the unit was stored, so it can run again on another connection."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated and not committing


__all__ = [
    "Pending",
    "PgPipeline",
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
    "pipeline_of",
    "retrying",
    "schema_revisions",
    "table_of",
    "translate_db_errors",
    "upgrade",
    "utc_field",
    "utcnow",
]
