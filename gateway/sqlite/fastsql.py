"""Prebuilt SQLAlchemy Core statements run straight on the SQLite driver.

Even a cached Core statement costs 60-80 µs of Python per execution in SQLAlchemy (parameter
processing, execution context, result set-up), several times what SQLite takes for a keyed read
or write. :func:`run` compiles a statement once per set of parameter keys and then executes it
on the DB-API cursor of the caller's connection, inside the caller's transaction (it begins one
the way SQLAlchemy would, so the engine's ``begin`` listeners still run). What SQLAlchemy does
around each execution is decided once, at compile time: bind and result type processing, the
constants the statement carries, scalar column defaults of an INSERT.

The result answers what the hot paths ask of a ``CursorResult``: ``first``, ``one``,
``one_or_none``, ``all``, ``scalar_one``, ``scalar``, iteration and ``rowcount``; rows are
named tuples with ``_mapping``. Driver errors are raised as SQLAlchemy's (``IntegrityError``,
...). Anything this does not cover runs through ``Connection.execute`` unchanged: other
dialects (psycopg's own overhead is a smaller share of a networked round trip), empty ``IN``
lists (SQLAlchemy renders the empty set), executemany with RETURNING, IN lists or rows whose
keys differ, callable defaults, duplicate result column names.

Statements must be long-lived (module constants): plans are keyed by the statement object.

:func:`savepoint` is ``Connection.begin_nested`` on the same terms: SQLAlchemy's nested
transaction cost ~0.3 ms of Python per use, its SAVEPOINT and RELEASE a few microseconds.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Literal, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.base import Executable

__all__ = ["Rows", "raise_driver_error", "run", "savepoint"]

_MAX_PLANS = 2000


class Rows:
    """The rows of one execution (all fetched), or the row count of a write."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise sa.exc.MultipleResultsFound(
                "Multiple rows were found when one or none was required"
            )
        return self.first()

    def one(self) -> Any:
        if not self._rows:
            raise sa.exc.NoResultFound("no row where one was required")
        if len(self._rows) > 1:
            raise sa.exc.MultipleResultsFound(
                "Multiple rows were found when exactly one was required"
            )
        return self._rows[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None


class _Plan:
    """One statement compiled for one set of parameter keys."""

    __slots__ = (
        "_sql_for",
        "binders",
        "constants",
        "expanding",
        "make_row",
        "names",
        "returns",
        "sql",
        "statement",
    )

    def __init__(
        self,
        statement: Executable,
        sql: str,
        names: tuple[str, ...],
        constants: dict[str, Any],
        binders: dict[int, Callable[[Any], Any]],
        make_row: Callable[[Sequence[Any]], Any] | None,
        *,
        expanding: frozenset[int] = frozenset(),
        returns: bool = False,
    ) -> None:
        self.statement = statement  # keeps the key's id from being reused
        self.sql = sql
        self.names = names
        self.constants = constants
        self.binders = binders
        self.make_row = make_row
        self.expanding = expanding
        """Positions of ``IN`` lists (``expanding`` bind parameters): one ``?`` per item."""
        self.returns = returns
        """INSERT/UPDATE ... RETURNING: rows even from a write."""
        self._sql_for: dict[tuple[int, ...], str] = {}

    def bind(self, params: Mapping[str, Any]) -> tuple[str | None, list[Any]]:
        """The SQL and positional values for one parameter dict (no SQL: run it through
        SQLAlchemy)."""
        values = {**self.constants, **params} if self.constants else params
        out = [values[name] for name in self.names]
        for index, process in self.binders.items():
            if index not in self.expanding and out[index] is not None:
                out[index] = process(out[index])
        if not self.expanding:
            return self.sql, out
        flat: list[Any] = []
        lengths = []
        for index, value in enumerate(out):
            if index in self.expanding:
                items = list(value)
                convert = self.binders.get(index)
                if convert is not None:
                    items = [v if v is None else convert(v) for v in items]
                flat.extend(items)
                lengths.append(len(items))
            else:
                flat.append(value)
        key = tuple(lengths)
        if 0 in key:
            return None, flat  # IN () / NOT IN (): SQLAlchemy renders the empty set
        sql = self._sql_for.get(key)
        if sql is None:
            sql = self.sql
            for index, length in zip(sorted(self.expanding), key, strict=True):
                marker = f"__[POSTCOMPILE_{self.names[index]}]"
                sql = sql.replace(marker, ", ".join("?" * length), 1)
            self._sql_for[key] = sql
        return sql, flat


_plans: dict[tuple[int, frozenset[str]], _Plan | None] = {}
_plans_lock = threading.Lock()


def _as_mapping(row: Any) -> dict[str, Any]:
    return dict(zip(row._fields, row, strict=True))


def _row_factory(
    columns: Sequence[Any], dialect: Dialect
) -> Callable[[Sequence[Any]], Any] | Literal[False] | None:
    """A row maker for the statement's result columns; False when they cannot be named
    tuples; None when the statement returns no rows."""
    if not columns:
        return None
    fields = [entry.keyname for entry in columns]
    if len(set(fields)) != len(fields) or not all(f.isidentifier() for f in fields):
        return False
    processors = [
        (i, p)
        for i, entry in enumerate(columns)
        if (p := entry.type._cached_result_processor(dialect, None)) is not None
    ]
    try:
        base = collections.namedtuple("Row", fields)  # type: ignore[misc]
    except ValueError:  # a keyword or a leading underscore
        return False
    row_class: Any = type("Row", (base,), {"__slots__": (), "_mapping": property(_as_mapping)})
    make: Callable[[Sequence[Any]], Any] = row_class._make
    if not processors:
        return make

    def make_processed(raw: Sequence[Any]) -> Any:
        values = list(raw)
        for index, process in processors:
            values[index] = process(values[index])
        return make(values)

    return make_processed


def _compile(statement: Executable, dialect: Dialect, keys: frozenset[str]) -> _Plan | None:
    compiled: Any = statement.compile(dialect=dialect, column_keys=sorted(keys))  # type: ignore[attr-defined]
    names = compiled.positiontup
    if names is None or compiled.update_prefetch:
        return None
    constants: dict[str, Any] = {}
    for column in compiled.insert_prefetch:
        default = column.default
        if default is None or not default.is_scalar:
            return None
        constants[column.key] = default.arg
    expanding = set()
    for name, bind in compiled.binds.items():
        if name in keys or name in constants:
            if bind.expanding:
                if names.count(name) != 1:
                    return None
                expanding.add(names.index(name))
            continue
        if bind.expanding or bind.callable is not None or (bind.value is None and bind.required):
            return None  # e.g. a missing parameter: let SQLAlchemy say so
        constants[name] = bind.effective_value
    if any(name not in keys and name not in constants for name in names):
        return None
    binders = {
        i: p
        for i, name in enumerate(names)
        if (p := compiled.binds[name].type._cached_bind_processor(dialect)) is not None
    }
    make_row = _row_factory(compiled._result_columns, dialect)
    if make_row is False:
        return None
    return _Plan(
        statement,
        compiled.string,
        tuple(names),
        constants,
        binders,
        make_row,
        expanding=frozenset(expanding),
        returns=bool(compiled.effective_returning),
    )


def _plan(conn: Connection, statement: Executable, keys: frozenset[str]) -> _Plan | None:
    key = (id(statement), keys)
    try:
        return _plans[key]
    except KeyError:
        pass
    plan = _compile(statement, conn.dialect, keys)
    with _plans_lock:
        if len(_plans) < _MAX_PLANS:
            _plans[key] = plan
    return plan


def raise_driver_error(conn: Connection, exc: Exception, sql: str, params: Any) -> NoReturn:
    """Re-raise an error of the driver, used under SQLAlchemy's feet, as SQLAlchemy would have
    (``IntegrityError``, ``OperationalError``, ...), invalidating the connection if it is gone."""
    dialect = conn.dialect
    dbapi = dialect.loaded_dbapi
    if not isinstance(exc, dbapi.Error):
        raise exc
    disconnect = dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
    if disconnect:
        conn.invalidate(exc)
    raise sa.exc.DBAPIError.instance(
        sql, params, exc, dbapi.Error, connection_invalidated=disconnect, dialect=dialect
    ) from exc


def run(conn: Connection, statement: Executable, params: Any = None) -> Any:
    """Execute ``statement`` with ``params`` (one dict, or a list of them for executemany) in
    the connection's transaction; a :class:`Rows`, or the ``CursorResult`` of the fallback."""
    if conn.dialect.name != "sqlite":
        return conn.execute(statement, params)
    many = isinstance(params, list)
    if many and not params:
        return Rows([], 0)
    first: Mapping[str, Any] = params[0] if many else (params or {})
    plan = _plan(conn, statement, frozenset(first))
    if plan is None or (
        many
        and (
            plan.returns
            or plan.expanding
            or any(p.keys() != first.keys() for p in params)  # as SQLAlchemy would refuse
        )
    ):
        return conn.execute(statement, params)
    if not conn.in_transaction():
        conn.begin()  # as autobegin would: BEGIN and the engine's "begin" listeners
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    cursor = dbapi_conn.cursor()
    bound: Any = None
    try:
        if many:
            bound = [plan.bind(p)[1] for p in params]
            cursor.executemany(plan.sql, bound)
            return Rows([], cursor.rowcount)
        sql, bound = plan.bind(first)
        if sql is None:
            return conn.execute(statement, params)
        cursor.execute(sql, bound)
        make_row = plan.make_row
        rows = [make_row(r) for r in cursor.fetchall()] if make_row is not None else []
        return Rows(rows, cursor.rowcount)
    except Exception as exc:
        raise_driver_error(conn, exc, plan.sql, bound)
    finally:
        cursor.close()


_savepoint_names = itertools.count()


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """A nested transaction in the caller's: leaving the block by an exception undoes only
    what the block did (the exception propagates); leaving it normally keeps it, committed or
    rolled back with the enclosing transaction. ``Connection.begin_nested`` but on SQLite."""
    if conn.dialect.name != "sqlite":
        with conn.begin_nested():
            yield
        return
    if not conn.in_transaction():
        conn.begin()
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    name = f"fastsql_{next(_savepoint_names)}"
    try:
        dbapi_conn.execute(f"SAVEPOINT {name}")
    except Exception as exc:
        raise_driver_error(conn, exc, f"SAVEPOINT {name}", ())
    try:
        yield
    except BaseException:
        # Undo the block, then forget the savepoint. If SQLite already ended the whole
        # transaction (it does on some errors), there is nothing left to undo here: the
        # caller's rollback ends it, and the block's own exception is the one to see.
        with suppress(Exception):
            dbapi_conn.execute(f"ROLLBACK TO {name}")
            dbapi_conn.execute(f"RELEASE {name}")
        raise
    try:
        dbapi_conn.execute(f"RELEASE {name}")
    except Exception as exc:
        raise_driver_error(conn, exc, f"RELEASE {name}", ())
