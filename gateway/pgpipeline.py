"""Psycopg's pipeline mode for the statements of one PostgreSQL transaction
(:class:`PgPipeline`), shared by the repositories of a unit of work (``gateway.db``).

On a network a statement costs a round trip to the server whatever it does; most of a
message's statements need no answer before the next is sent (writes, savepoints, COMMIT), and
the reads that do can often be sent together. ``docs/performance.md`` ("PostgreSQL round
trips") has the counts per message and the decisions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Protocol, cast

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from gateway.pgsend import send_at_sync
from gateway.sqlite.fastsql import raise_driver_error

log = logging.getLogger(__name__)


OPTION = "dt_pg_pipeline"
"""The execution option under which a unit of work's SQLAlchemy connection carries its
pipeline (:func:`pipeline_of`)."""


def pipeline_of(conn: Connection) -> PgPipeline | None:
    """The pipeline of the unit of work ``conn`` belongs to, for a repository given only the
    connection (None: SQLite, or a unit of work without one)."""
    pipe: PgPipeline | None = conn.get_execution_options().get(OPTION)
    return pipe


class Pending:
    """A read queued in a :class:`PgPipeline` (or a write ``RETURNING``): its rows arrive with
    the pipeline's next sync. A write held back by a savepoint (see
    :meth:`PgPipeline.savepoint`) is sent once it is asked for its rows, or with its block."""

    __slots__ = ("_cursor", "_pipe", "_rows", "params", "ready", "serial", "sql", "then")

    def __init__(
        self,
        pipe: PgPipeline,
        sql: str,
        params: Sequence[Any] | None,
        then: Callable[[list[tuple[Any, ...]]], None] | None = None,
    ) -> None:
        self._pipe = pipe
        self.sql = sql
        self.params = params
        self._cursor: Any = None
        """The cursor it was sent on (None: held back, not sent yet)."""
        self.serial = 0
        """Its place among the statements of the pipeline (see ``savepoint``), once sent."""
        self._rows: list[tuple[Any, ...]] | None = None
        self.ready = False
        """Synced: the rows are in (or the pipeline failed)."""
        self.then = then
        """Called with the rows once they are in (by the sync that brings them)."""

    def rows(self) -> list[tuple[Any, ...]]:
        """The read's rows; a round trip, for it and everything queued before, unless synced."""
        if self._rows is None:
            if self._cursor is None:
                self._pipe.send_held()
                if self._cursor is None:
                    raise RuntimeError("a write of a savepoint's block left by an exception")
            if not self.ready:
                self._pipe.sync()
            self._rows = self._cursor.fetchall()
        return self._rows


class _Block:
    """A savepoint's block (:meth:`PgPipeline.savepoint`): its name, whether its SAVEPOINT was
    sent, and the writes it holds back until then."""

    __slots__ = ("held", "name", "sent", "since")

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = False
        self.since = 0
        """The serial of the first read queued after its SAVEPOINT."""
        self.held: list[tuple[str, Any, bool] | Pending] = []
        """Writes held back: (sql, params, many), or a write ``RETURNING`` (its Pending)."""


_LOCKING = re.compile(r"\bFOR\s+(NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)\b", re.IGNORECASE)
_WRITING = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)
_KINDS: dict[str, tuple[bool, bool]] = {}


def _kind(sql: str) -> tuple[bool, bool]:
    """(a read, a read that locks nothing), remembered: the statements' texts are constants."""
    kind = _KINDS.get(sql)
    if kind is None:
        head = sql.lstrip()[:6].upper()
        locks = _LOCKING.search(sql) is not None
        # A WITH that writes nothing (a read of several parts) reads; one that writes, writes.
        read = head == "SELECT" or (
            head[:4] == "WITH" and not _WRITING.search(_LOCKING.sub("", sql))
        )
        kind = (read, read and not locks)
        if len(_KINDS) < 4096:
            _KINDS[sql] = kind
    return kind


def _is_read(sql: str) -> bool:
    """A statement that changes nothing a savepoint would have to undo (row locks aside)."""
    return _kind(sql)[0]


def _is_plain_read(sql: str) -> bool:
    """A read that locks nothing: at READ COMMITTED it sees the same rows inside a transaction
    or alone (each statement has its own snapshot)."""
    return _kind(sql)[1]


class HeldToCommit(Protocol):
    """A repository's writes held in the client until the COMMIT (:meth:`PgPipeline.hold`),
    or until SQLAlchemy runs a statement that may read them."""

    def snapshot(self) -> object:
        """What a savepoint rolled back must restore."""

    def restore(self, snapshot: object) -> None: ...

    def flush(self) -> None:
        """Queue what is held (through the pipeline), and hold nothing."""


class PgPipeline:
    """The statements of one PostgreSQL transaction in psycopg's pipeline mode: a statement
    whose result nobody waits for costs no round trip of its own.

    Writes (:meth:`execute`) and reads (:meth:`query`) are queued; a read's rows are fetched
    when first asked for, and that one round trip brings the results of everything queued
    before it. With ``keep_open`` (a unit of work's pipeline, shared by its repositories) it
    stays open for the whole transaction: the transaction's BEGIN goes with its first
    statements (psycopg would send it alone and wait: the driver connection is in autocommit
    mode from our BEGIN to the end of the transaction, :meth:`release`), writes wait for the
    next read, and :meth:`commit` sends COMMIT behind the last ones. Without, it is opened
    for a batch of statements and left after it (:meth:`open`, :meth:`settle`), and a lone
    statement runs as a plain one.

    With ``lazy_begin`` too, the BEGIN goes with the first statement that is not a plain read
    (a write, a read ``FOR UPDATE``) or before SQLAlchemy runs one: the plain reads before it
    run alone, as they would see the same at READ COMMITTED, and a transaction that only
    read (a job's look at its empty work list) sends neither BEGIN nor COMMIT.

    What is queued goes to the server in one write at the next sync (:mod:`gateway.pgsend`).
    Errors of queued statements surface at the next sync (or as results come in), raised as
    SQLAlchemy's, so :func:`retrying` still sees a deadlock or a unique-key race and retries
    the unit: a failed statement fails the transaction, whichever statement reports it.
    SQLAlchemy cannot run a statement inside a pipeline: :meth:`settle` waits for what is
    queued and leaves pipeline mode first (the unit of work's ``conn`` does it).
    """

    def __init__(self, conn: Connection, *, keep_open: bool, lazy_begin: bool = False) -> None:
        self.conn = conn
        self.keep_open = keep_open
        self.lazy_begin = lazy_begin
        self._begin_due = False
        """Our BEGIN is owed: sent before the next statement that is not a plain read."""
        self._pipeline: Any = None
        """psycopg's ``Pipeline`` while in pipeline mode."""
        self._exit: Any = None
        """Its context manager's ``__exit__``, which leaves pipeline mode."""
        self._driver: Any = None
        self._cursor: Any = None
        self._queued: list[Pending] = []
        self._failed: list[Pending] = []
        """Reads of the last sync that failed: a savepoint's rollback keeps those before it."""
        self._began = False
        """The driver connection put in autocommit mode, to restore (:meth:`release`)."""
        self._begun = False
        """The transaction's BEGIN sent, or owed (``lazy_begin``)."""
        self._savepoints = 0
        self._serial = 0
        self._blocks: list[_Block] = []
        """The savepoints' blocks open, outermost first (see :meth:`savepoint`)."""
        self._holders: list[HeldToCommit] = []

    def hold(self, holder: HeldToCommit) -> None:
        """Have ``holder`` flush what it holds before the COMMIT and before SQLAlchemy runs a
        statement (:meth:`settle`), and restore it when a savepoint rolls back."""
        self._holders.append(holder)

    def _flush_holders(self) -> None:
        for holder in self._holders:
            holder.flush()

    def _drv(self) -> Any:
        if self._driver is None:
            self._driver = self.conn.connection.driver_connection
        return self._driver

    def _fail(self, exc: Exception, sql: str, params: Any) -> Any:
        raise_driver_error(self.conn, exc, sql, params)

    def open(self) -> None:
        """Enter pipeline mode (kept open: with the transaction's BEGIN, if none was sent)."""
        if self._pipeline is not None:
            return
        from psycopg import pq

        driver = self._drv()
        begin = (
            self.keep_open
            and not self._begun
            and driver.pgconn.transaction_status == pq.TransactionStatus.IDLE
        )
        try:
            if begin:
                self._autocommit(driver)
            manager = driver.pipeline()
            pipeline = manager.__enter__()
        except Exception as exc:
            self._fail(exc, "pipeline", None)
        send_at_sync(pipeline)
        self._pipeline, self._exit = pipeline, manager.__exit__
        if begin:
            self._begun = True
            if self.lazy_begin:
                self._begin_due = True
            else:
                self._send("BEGIN", None)

    def _autocommit(self, driver: Any) -> None:
        """No BEGIN of psycopg's, sent alone and waited for: ours, queued (or none, for plain
        reads before it)."""
        if not self._began:
            driver.autocommit = True
            self._began = True

    def _begin(self, sql: str) -> None:
        """Our BEGIN, if owed, before ``sql`` (unless a plain read)."""
        if self._begin_due and not _is_plain_read(sql):
            self._begin_due = False
            try:
                self._cur().execute("BEGIN")
            except Exception as exc:
                self._fail(exc, "BEGIN", None)

    def _direct(self) -> bool:
        """A statement now runs as a plain one (not kept open, and no batch open)."""
        return self._pipeline is None and not self.keep_open

    def _cur(self) -> Any:
        if self._cursor is None:
            self._cursor = self._drv().cursor()
        return self._cursor

    def _holding(self) -> _Block | None:
        """The block that holds back writes now: the innermost, if its SAVEPOINT is unsent."""
        if self._blocks and not self._blocks[-1].sent:
            return self._blocks[-1]
        return None

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        """Queue a statement whose result nobody reads."""
        block = self._holding()
        if block is not None:
            block.held.append((sql, params, False))
            return
        self._send(sql, params)

    def _send(self, sql: str, params: Sequence[Any] | None) -> None:
        if not self._direct():
            self.open()
        if self._begin_due:
            self._begin(sql)
        try:
            self._cur().execute(sql, params)
        except Exception as exc:
            self._fail(exc, sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        block = self._holding()
        if block is not None:
            block.held.append((sql, rows, True))
            return
        self._send_many(sql, rows)

    def _send_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not self._direct():
            self.open()
        if self._begin_due:
            self._begin(sql)
        try:
            self._cur().executemany(sql, rows)
        except Exception as exc:
            self._fail(exc, sql, rows)

    def query(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        then: Callable[[list[tuple[Any, ...]]], None] | None = None,
    ) -> Pending:
        """Queue a read (or a write ``RETURNING``); its rows come with the next sync
        (:meth:`Pending.rows`), which also calls ``then`` with them: a caller that needs them
        only by the commit need not wait for them. A read sees the writes held back by the
        savepoints open (they are sent before it); a write in a block is held back as any."""
        pending = Pending(self, sql, params, then)
        if _is_read(sql):
            if self._blocks:
                self.send_held()
        else:
            block = self._holding()
            if block is not None:
                block.held.append(pending)
                return pending
        self._send_query(pending)
        return pending

    def _send_query(self, pending: Pending) -> None:
        self.open()
        if self._begin_due:
            self._begin(pending.sql)
        cursor = self._drv().cursor()
        try:
            cursor.execute(pending.sql, pending.params)
        except Exception as exc:
            self._fail(exc, pending.sql, pending.params)
        self._serial += 1
        pending.serial = self._serial
        pending._cursor = cursor
        self._queued.append(pending)

    def send_held(self) -> None:
        """Send the writes the open savepoints hold back, each block's SAVEPOINT first (for a
        read that must see them, or a statement of SQLAlchemy's)."""
        last = max((i for i, b in enumerate(self._blocks) if b.held), default=-1)
        for block in self._blocks[: last + 1]:
            if not block.sent:
                self._send(f"SAVEPOINT {block.name}", None)
                block.sent = True
                block.since = self._serial + 1
            held, block.held = block.held, []
            self._send_all(held)

    def _send_all(self, held: list[tuple[str, Any, bool] | Pending]) -> None:
        for item in held:
            if isinstance(item, Pending):
                self._send_query(item)
            elif item[2]:
                self._send_many(item[0], item[1])
            else:
                self._send(item[0], item[1])

    def fetch(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """A read's rows now (with what is queued before it: one round trip)."""
        if not self._direct() and not self._alone(sql):
            return self.query(sql, params).rows()
        cursor = self._cur()
        try:
            cursor.execute(sql, params)
            return cast(list[tuple[Any, ...]], cursor.fetchall())
        except Exception as exc:
            return cast(list[tuple[Any, ...]], self._fail(exc, sql, params))

    def _alone(self, sql: str) -> bool:
        """With ``lazy_begin``: a plain read that is the transaction's first statement runs
        alone, outside pipeline mode (whose end costs a round trip of its own), in autocommit
        mode, with no BEGIN yet."""
        if not (self.lazy_begin and self._pipeline is None and not self._begun):
            return False
        if self._blocks or not _is_plain_read(sql):
            return False
        from psycopg import pq

        driver = self._drv()
        if driver.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return False
        self._autocommit(driver)
        return True

    def _synced(self, *, ok: bool = True) -> None:
        queued, self._queued = self._queued, []
        for pending in queued:
            pending.ready = True
        self._failed = [] if ok else queued
        if ok:
            for pending in queued:
                if pending.then is not None:
                    pending.then(pending.rows())

    def sync(self) -> None:
        """Wait for everything queued: one round trip (not kept open: leaving the pipeline).
        Writes a savepoint holds back stay held (nothing sent waits for them)."""
        if self._pipeline is None:
            return
        if not self.keep_open:
            self.settle()
            return
        try:
            self._pipeline.sync()
        except Exception as exc:
            self._synced(ok=False)
            self._fail(exc, "sync", None)
        self._synced()

    def settle(self) -> None:
        """Wait for everything queued and leave pipeline mode (one round trip, none if not
        open): SQLAlchemy may then run statements on the connection (which see the writes
        held back by savepoints: they are sent first, and so is an owed BEGIN: they run in
        the transaction)."""
        self._flush_holders()
        if self._blocks:
            self.send_held()
        if self._begin_due:
            self._begin("BEGIN")
        elif self.keep_open and self._began and not self._begun:
            self._restore()  # only plain reads ran alone: psycopg begins SQLAlchemy's
        self._leave_pipeline()

    def _leave_pipeline(self) -> None:
        leave, self._pipeline, self._exit = self._exit, None, None
        if leave is None:
            return
        try:
            leave(None, None, None)
        except Exception as exc:
            self._synced(ok=False)
            self._fail(exc, "pipeline", None)
        self._synced()

    def commit(self) -> None:
        """Send COMMIT behind what is queued and wait for both: one round trip where the
        writes and the commit took two. The transaction is then over in the database (the
        caller's commit finds nothing left to do); a failed write or commit is raised here.
        Not open: nothing (SQLAlchemy's commit sends it). What holders hold goes first."""
        self._flush_holders()
        if self._pipeline is None:
            return
        self.send_held()
        if self._begin_due:  # it only read: nothing to commit
            self._begin_due = False
        else:
            self._send("COMMIT", None)
        self._leave_pipeline()
        self._restore()

    def rollback(self) -> None:
        """End the transaction without its writes: ROLLBACK goes with the pipeline's last
        sync (one round trip where leaving the pipeline, then the ROLLBACK, took two). Not
        open: nothing (SQLAlchemy's rollback sends it, if a transaction is open)."""
        if self._pipeline is None:
            return
        if not self._begin_due:
            with suppress(Exception):  # the connection is gone: the rollback is the server's
                self._send("ROLLBACK", None)
        self.abandon()

    def abandon(self) -> None:
        """Leave the pipeline without its results: the transaction is rolling back."""
        self._blocks = []
        self._begin_due = False
        self._begun = False
        leave, self._pipeline, self._exit = self._exit, None, None
        self._synced(ok=False)
        if leave is not None:
            with suppress(Exception):
                leave(None, None, None)

    def release(self) -> None:
        """Once the transaction has ended: the driver connection back out of autocommit
        mode, as the pool lent it (or discarded, if it cannot be)."""
        self.abandon()
        self._restore()

    def _restore(self) -> None:
        self._begun = False
        if not self._began:
            return
        self._began = False
        try:
            self._drv().autocommit = False
        except Exception:
            log.warning("a connection left in autocommit mode is discarded", exc_info=True)
            with suppress(Exception):
                self.conn.invalidate()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: leaving the block by an exception undoes what it wrote.

        Its SAVEPOINT is sent only when needed: the block's writes are held back (in the
        client) until it ends, and go out then with nothing around them; a block left by an
        exception drops them, and the database never saw them. Only a read that must see
        them (a statement queued in the block after its writes, or one of SQLAlchemy's)
        makes the SAVEPOINT go out, with the writes held, before it; from then on the block
        is an ordinary savepoint, released or rolled back to. A block that writes nothing,
        or reads only before writing, so costs no statement (a refusal found by its reads
        keeps their row locks to the end of the transaction).

        A statement of the block that fails may be reported only after it (by the commit,
        say), failing the whole transaction, and so does a read of the block that fails
        before the SAVEPOINT went out: the caller that goes on after a failed block must be
        ready for that (``gateway.pvp.reception``)."""
        self._savepoints += 1
        block = _Block(f"pipelined_{self._savepoints}")
        self._blocks.append(block)
        held = [(holder, holder.snapshot()) for holder in self._holders]
        try:
            yield
        except BaseException as exc:
            for holder, snapshot in held:
                holder.restore(snapshot)
            self._leave(block)
            if not block.sent:
                raise  # nothing of the block reached the database
            failed = isinstance(exc, DBAPIError)
            if failed:
                self._recover(block.since)
            try:
                self._send(f"ROLLBACK TO SAVEPOINT {block.name}", None)
                self._send(f"RELEASE SAVEPOINT {block.name}", None)
            except DBAPIError:
                if failed:  # a failure from before the savepoint: the first one is the cause
                    raise exc from exc.__cause__
                raise
            raise
        self._leave(block)
        if block.sent:
            self._send(f"RELEASE SAVEPOINT {block.name}", None)
        elif block.held:
            parent = self._holding()
            if parent is not None:
                parent.held += block.held
            else:
                self._send_all(block.held)

    def _leave(self, block: _Block) -> None:
        while self._blocks:
            if self._blocks.pop() is block:
                return

    def _recover(self, since: int) -> None:
        """After a statement failed inside a savepoint: a sync ends the pipeline's aborted
        state (the errors it reports are that failure's), so that the ROLLBACK TO runs. What
        was queued before the savepoint came in; what was queued in it is dropped with it."""
        if self._pipeline is not None:
            with suppress(Exception):
                self._pipeline.sync()
        queued, self._queued, self._failed = [*self._failed, *self._queued], [], []
        for pending in queued:
            pending.ready = True
        for pending in queued:
            if pending.serial < since and pending.then is not None:
                # Came in, unless it failed itself: then the ROLLBACK TO fails too, later.
                with suppress(Exception):
                    pending.then(pending.rows())


__all__ = ["OPTION", "HeldToCommit", "Pending", "PgPipeline", "pipeline_of"]
