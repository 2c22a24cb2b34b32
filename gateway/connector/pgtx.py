"""The connector's transactions on PostgreSQL in psycopg's pipeline mode: a statement whose
result nobody waits for costs no round trip of its own.

On a network every statement costs a round trip to the server, and most of a message's are
writes that need no answer before the next statement is sent. :func:`install` sets the
connector's PostgreSQL engine up so that, in a write transaction, the statements of
:mod:`gateway.connector.store` go through one :class:`gateway.pgpipeline.PgPipeline` (the
gateway's), whoever runs them (the handlers, the simulated banks, the message log and
delivery's records alike):

- marked :data:`QUEUE` (a write whose result and row count nobody reads): queued;
- marked :data:`WAIT` (a read, or a write whose result is read): queued and waited for, one
  round trip for it and everything queued before it;
- the transaction's BEGIN goes with its first statement (psycopg would send it alone and
  wait), and COMMIT with the last writes (:meth:`PgPipeline.commit`): a transaction that
  reads once and writes costs two round trips, one that only writes one;
- SAVEPOINT and RELEASE are queued; ROLLBACK TO waits (a rare path: a message refused);
- any other statement first waits for what is queued, then runs as SQLAlchemy runs it.

The writes of the per-PvP path (the repository's, the simulated banks', the message log) are
not statements of their own: they are held back in the transaction's
:class:`~gateway.connector.pgwrites.Writes` and sent as one statement before anything that
may read them (any statement above; :func:`query` and :func:`send` name the tables they
read) and before the COMMIT, in the same round trip. A savepoint keeps what was held when it
began, for its rollback to bring back.

Errors of queued statements surface at the next wait, or at the commit: a failed statement
fails the transaction, whichever statement reports it, and its caller's error handling (a
batch taken again one message at a time, a delivery retried) runs as for any failure of the
transaction. Connections in autocommit mode (``store.reader``'s) are left alone.

:class:`PgTx` also carries what the transaction's repository knows of the rows it locked
(:mod:`gateway.connector.pgrepo`) and the writes held back; it ends with the transaction.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import sqlalchemy as sa
from psycopg.raw_cursor import RawCursorMixin
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import (
    ReleaseSavepointClause,
    RollbackToSavepointClause,
    SavepointClause,
)

from gateway.connector.pgwrites import Writes
from gateway.pgpipeline import Pending, PgPipeline
from gateway.sqlite import fastsql
from gateway.sqlite.fastsql import raise_driver_error

OPTION = "connector_pg_pipeline"
"""The execution option that marks a statement for the pipeline."""
QUEUE: dict[str, Any] = {OPTION: "queue"}
"""``statement.execution_options(**QUEUE)``: sent with the next statement waited for."""
WAIT: dict[str, Any] = {OPTION: "wait"}
"""``statement.execution_options(**WAIT)``: sent with what is queued, and waited for."""

_S = TypeVar("_S", bound=Executable)


def queued(statement: _S) -> _S:
    """``statement`` marked :data:`QUEUE` (a module constant of the store's)."""
    if isinstance(statement, sa.Insert):
        # No id read back: PostgreSQL's one-row INSERT would otherwise carry ``RETURNING id``
        # (SQLAlchemy's ``inserted_primary_key``), a result to wait for. Same SQL on SQLite.
        statement = statement.inline()
    return statement.execution_options(**QUEUE)


def waited(statement: _S) -> _S:
    """``statement`` marked :data:`WAIT`."""
    return statement.execution_options(**WAIT)


_KEY = "connector_pg_tx"
_CLAUSES: dict[type, str] = {
    SavepointClause: "queue",
    ReleaseSavepointClause: "queue",
    RollbackToSavepointClause: "recover",
}


class PgTx:
    """One write transaction's pipeline, what its repository keeps (``state``) and the writes
    it holds back (``writes``)."""

    __slots__ = ("marks", "pipe", "state", "writes")

    def __init__(self, conn: Connection) -> None:
        self.pipe = PgPipeline(conn, keep_open=True)
        self.state: Any = None
        """The repository's per-transaction knowledge (``gateway.connector.pgrepo``)."""
        self.writes = Writes()
        """Writes held back until a read that may see them, or the commit
        (:mod:`gateway.connector.pgwrites`)."""
        self.marks: list[Writes] = []
        """What was held when each open savepoint began, innermost last."""

    def flush(self, only: frozenset[str] | None = None) -> None:
        """Queue the writes held back (those of the tables ``only`` names, else all)."""
        if self.writes:
            self.writes.flush(_Raw(self.pipe), only)

    # A savepoint's writes held back: each savepoint's mark is pushed as it begins and popped
    # as it ends (SQLAlchemy's, through ``install``'s listeners, and :func:`savepoint`'s).

    def mark(self) -> None:
        """A savepoint begins: what is held now, for its rollback to bring back."""
        self.marks.append(self.writes.copy())

    def unmark(self) -> None:
        """The innermost savepoint is released: what it held stays held."""
        if self.marks:
            self.marks.pop()

    def undo(self) -> None:
        """Rolled back to the innermost savepoint: what the block held is forgotten, what was
        held before it is held as it was then, and what the repository knew is read again."""
        self.state = None
        self.writes = self.marks.pop() if self.marks else Writes()

    def recover(self) -> None:
        """Before a ROLLBACK TO: a statement of the block may have failed, its error raised or
        still queued; a sync ends the pipeline's aborted state (the error it reports is that
        failure's; one before the savepoint makes the ROLLBACK TO fail in turn)."""
        with suppress(sa.exc.DBAPIError):
            self.pipe.sync()

    def end(self) -> None:
        """The transaction is rolling back: out of the pipeline, ROLLBACK, and the driver
        connection as the pool lent it."""
        self.pipe.abandon()
        driver: Any = self.pipe.conn.connection.driver_connection
        with suppress(Exception):
            driver.rollback()  # psycopg sends ROLLBACK unless the transaction is over
        self.pipe.release()


_raw_cursors: dict[type, Any] = {}


def _raw_cursor(driver: Any) -> Any:
    """A cursor of ``driver``'s kind (its ``cursor_factory``, whatever that adds) that sends
    queries as they are, as psycopg's ``RawCursor`` does."""
    factory = driver.cursor_factory
    kind = _raw_cursors.get(factory)
    if kind is None:
        kind = _raw_cursors[factory] = type(f"Raw{factory.__name__}", (RawCursorMixin, factory), {})
    return kind(driver)


class _Raw:
    """A flush's statement queued in the pipeline as it is, its placeholders PostgreSQL's
    own (psycopg's ``RawCursor``): no parse of its text at each execution."""

    __slots__ = ("pipe",)

    def __init__(self, pipe: PgPipeline) -> None:
        self.pipe = pipe

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        pipe = self.pipe
        pipe.open()
        driver: Any = pipe.conn.connection.driver_connection
        try:
            _raw_cursor(driver).execute(sql, params)
        except Exception as exc:
            raise_driver_error(pipe.conn, exc, sql, params)


def tx_of(conn: Connection) -> PgTx | None:
    """The pipelined transaction ``conn`` is in, begun if need be; None on SQLite, outside a
    transaction, and on a connection in autocommit mode."""
    if conn.dialect.name == "sqlite" or not conn.in_transaction():
        return None
    return _tx(conn, begin=True)


def writes_of(conn: Connection) -> Writes | None:
    """Where the write transaction ``conn`` is in holds its writes back; None where they are
    run as they come (SQLite, a connection in autocommit mode)."""
    tx = tx_of(conn)
    return None if tx is None else tx.writes


def _tx(conn: Connection, *, begin: bool) -> PgTx | None:
    tx: PgTx | None = conn.get_execution_options().get(_KEY)
    if tx is None and begin:
        driver = conn.connection.driver_connection
        if driver is None or driver.autocommit:
            return None
        tx = PgTx(conn)
        conn.execution_options(**{_KEY: tx})  # on this Connection object only, until its end
    return tx


def _pop(conn: Connection) -> PgTx | None:
    tx: PgTx | None = conn.get_execution_options().get(_KEY)
    if tx is not None:
        conn.execution_options(**{_KEY: None})
    return tx


_FORMAT = psycopg_dialect(paramstyle="format")  # type: ignore[no-untyped-call]
_compiled: dict[int, tuple[Executable, str, tuple[str, ...]]] = {}


def _sql(statement: Executable) -> tuple[str, tuple[str, ...]]:
    """``statement``'s SQL for psycopg, with positional parameters, and their names in order
    (compiled once: statements are module constants)."""
    entry = _compiled.get(id(statement))
    if entry is None:
        compiled: Any = statement.compile(dialect=_FORMAT)  # type: ignore[attr-defined]
        entry = (statement, compiled.string, tuple(compiled.positiontup or ()))
        _compiled[id(statement)] = entry
    return entry[1], entry[2]


def query(
    tx: PgTx,
    statement: Executable,
    params: Mapping[str, Any],
    only: frozenset[str] | None = None,
) -> Pending:
    """``statement`` (a read) queued in the transaction's pipeline: its rows (plain tuples,
    in its columns' order) come with the next wait, or when first asked for. The writes held
    back are queued before it (``only``: those of the tables it reads)."""
    sql, names = _sql(statement)
    tx.flush(only)
    return tx.pipe.query(sql, [params[name] for name in names])


def send(
    tx: PgTx,
    statement: Executable,
    params: Mapping[str, Any],
    only: frozenset[str] | None = None,
) -> None:
    """``statement`` queued in the transaction's pipeline, its result unread (a row lock),
    after the writes held back (``only``: as :func:`query`)."""
    sql, names = _sql(statement)
    tx.flush(only)
    tx.pipe.execute(sql, [params[name] for name in names])


def execute(tx: PgTx, sql: str, params: Any) -> None:
    """SQL text (psycopg's) queued in the transaction's pipeline, after the writes held
    back."""
    tx.flush()
    tx.pipe.execute(sql, params)


def _mode(context: Any) -> str | None:
    mode: str | None = context.execution_options.get(OPTION)
    compiled = context.compiled
    if compiled is None:
        return mode
    if mode is None:
        return _CLAUSES.get(type(compiled.statement))
    if mode == "queue" and compiled.effective_returning:
        return "wait"  # SQLAlchemy reads what RETURNING brings as soon as it has run
    return mode


def _pipelined(context: Any, send: Callable[[], Any]) -> bool:
    """Run the statement in the transaction's pipeline if it is marked; True if it did."""
    conn: Connection = context.root_connection
    mode = _mode(context)
    tx = _tx(conn, begin=mode is not None)
    if tx is None:
        return False
    compiled = context.compiled
    if compiled is None or type(compiled.statement) not in _CLAUSES:
        # What it reads or writes may depend on what was held back. (Not before a savepoint
        # statement: a ROLLBACK TO would undo what was held before it; ``install``'s
        # listeners keep what was held in step with savepoints.)
        tx.flush()
    if mode is None:
        tx.pipe.settle()  # SQLAlchemy runs it outside pipeline mode
        return False
    if mode == "recover":
        tx.recover()  # so that the ROLLBACK TO runs
    tx.pipe.open()
    send()
    if mode != "queue":
        tx.pipe.sync()
    return True


_savepoint_names = itertools.count(1)


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """A nested transaction in the caller's write transaction (leaving the block by an
    exception undoes what it did), its SAVEPOINT and RELEASE queued in the transaction's
    pipeline as :func:`install` queues SQLAlchemy's, with the writes held back kept in step.
    ``Connection.begin_nested`` costs ~0.25 ms of Python a block (its savepoint statements
    go through SQLAlchemy's execution, and its events), for two statements that need no
    answer: once per message of a reception or a lane's batch. Elsewhere (SQLite, a
    connection in autocommit mode): :func:`gateway.sqlite.fastsql.savepoint`."""
    tx = tx_of(conn)
    if tx is None:
        with fastsql.savepoint(conn):
            yield
        return
    name = f"pgtx_{next(_savepoint_names)}"
    tx.mark()
    tx.pipe.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        tx.undo()
        tx.recover()
        tx.pipe.execute(f"ROLLBACK TO SAVEPOINT {name}")
        tx.pipe.sync()
        raise
    tx.unmark()
    tx.pipe.execute(f"RELEASE SAVEPOINT {name}")


def install(engine: Engine) -> None:
    """Run ``engine``'s write transactions as described above (PostgreSQL engines only)."""

    def do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        return _pipelined(context, lambda: cursor.execute(statement, parameters))

    def do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        return _pipelined(context, lambda: cursor.executemany(statement, parameters))

    def commit(conn: Connection) -> None:
        tx = _pop(conn)
        if tx is None:
            return
        try:
            tx.flush()
            tx.pipe.open()  # COMMIT goes with what is queued
            tx.pipe.commit()  # SQLAlchemy's own COMMIT then finds nothing to do
        except BaseException:
            tx.end()
            raise

    def rollback(conn: Connection) -> None:
        tx = _pop(conn)
        if tx is not None:
            tx.end()

    # SQLAlchemy's savepoints (``begin_nested``) keep the writes held back in step too.
    def savepoint(conn: Connection, _name: str | None) -> None:
        tx = tx_of(conn)
        if tx is not None:
            tx.mark()

    def release_savepoint(conn: Connection, _name: str, _context: Any) -> None:
        tx = _tx(conn, begin=False)
        if tx is not None:
            tx.unmark()

    def rollback_savepoint(conn: Connection, _name: str, _context: Any) -> None:
        tx = _tx(conn, begin=False)
        if tx is not None:
            tx.undo()

    sa.event.listen(engine, "do_execute", do_execute)
    sa.event.listen(engine, "do_executemany", do_executemany)
    sa.event.listen(engine, "commit", commit)
    sa.event.listen(engine, "rollback", rollback)
    sa.event.listen(engine, "savepoint", savepoint)
    sa.event.listen(engine, "release_savepoint", release_savepoint)
    sa.event.listen(engine, "rollback_savepoint", rollback_savepoint)


__all__ = [
    "QUEUE",
    "WAIT",
    "PgTx",
    "execute",
    "install",
    "query",
    "queued",
    "savepoint",
    "send",
    "tx_of",
    "waited",
    "writes_of",
]
