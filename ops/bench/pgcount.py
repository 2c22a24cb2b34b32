"""Statements and round trips to PostgreSQL, counted in the driver, for the benchmarks.

A process counts once :func:`install` has run in it: every psycopg connection that SQLAlchemy
opens from then on is a :class:`CountingConnection`, whatever engine opens it (the gateway's,
the connector's), and adds to counters kept in a small memory-mapped file that the benchmark
reads at any moment (:func:`read`), before and after each run, without asking the process.
The benchmarks start the product's processes with ``PYTHONPATH`` led by ``ops/bench/pgsite``
and ``DT_BENCH_PG_COUNTS`` naming a directory (:func:`process_env`); that directory's
``sitecustomize`` installs the counter at start, so the product carries no code for it and
pays nothing when it is not measured.

What is counted:

- statements: each statement the server runs for the process: every ``execute``, every row of
  an ``executemany``, and BEGIN and COMMIT or ROLLBACK of each transaction;
- round trips: each time the process waits for PostgreSQL's answer: a statement sent alone (a
  transaction's BEGIN is one of its own when psycopg sends it before the first statement; a
  BEGIN the product queues itself, its connection in autocommit mode, is a statement), a
  COMMIT or ROLLBACK, and in pipeline mode each flush or sync whose results it waits for (the
  statements queued before it ride along). psycopg's first PREPARE of a statement on a
  connection adds one that is not counted (once per statement and connection, nothing per
  message).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq

ENV = "DT_BENCH_PG_COUNTS"
SITE = Path(__file__).resolve().parent / "pgsite"
FIELDS = ("statements", "round_trips", "transactions")
_FORMAT = "<" + "q" * len(FIELDS)
_SIZE = struct.calcsize(_FORMAT)

# The pipeline generators that wait for the server's answer (the others only send what is
# queued and take what has already arrived).
_PIPELINE_WAITS = frozenset({"_fetch_gen", "_sync_gen", "_exit_gen"})
_ENDS = frozenset({"_commit_gen", "_rollback_gen"})
# Generators that only change the connection's state in the client, sending nothing.
_LOCAL = frozenset(
    {
        "_enter_gen",
        "_set_autocommit_gen",
        "_set_isolation_level_gen",
        "_set_read_only_gen",
        "_set_deferrable_gen",
    }
)


class _Counts:
    """Counters in a shared file: written by one process, read by the benchmark."""

    def __init__(self, path: Path) -> None:
        with path.open("wb") as fh:
            fh.write(b"\0" * _SIZE)
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)
        self._values = [0] * len(FIELDS)
        self._lock = threading.Lock()

    def add(self, statements: int = 0, round_trips: int = 0, transactions: int = 0) -> None:
        with self._lock:
            v = self._values
            v[0] += statements
            v[1] += round_trips
            v[2] += transactions
            struct.pack_into(_FORMAT, self._map, 0, *v)


_counts: _Counts | None = None


def _add(statements: int = 0, round_trips: int = 0, transactions: int = 0) -> None:
    if _counts is not None:
        _counts.add(statements, round_trips, transactions)


class CountingCursor(psycopg.Cursor[Any]):
    def execute(self, query: Any, params: Any = None, **kw: Any) -> CountingCursor:
        _add(statements=1)
        super().execute(query, params, **kw)
        return self

    def executemany(self, query: Any, params_seq: Iterable[Any], **kw: Any) -> None:
        rows = list(params_seq)
        _add(statements=len(rows))
        super().executemany(query, rows, **kw)


class CountingConnection(psycopg.Connection[Any]):
    """A psycopg connection that counts what it sends and how often it waits (see above)."""

    def wait(self, gen: Any, *args: Any, **kw: Any) -> Any:
        name = getattr(getattr(gen, "gi_code", None), "co_name", "")
        status = self.pgconn.transaction_status
        idle = status == pq.TransactionStatus.IDLE
        if name in _LOCAL:
            trips = 0
        elif name in _ENDS:
            trips = 0 if idle else 1
        elif self.pgconn.pipeline_status:
            trips = 1 if name in _PIPELINE_WAITS else 0
        else:
            trips = 1
        try:
            return super().wait(gen, *args, **kw)
        finally:
            now_idle = self.pgconn.transaction_status == pq.TransactionStatus.IDLE
            # A COMMIT sent as a statement (in a pipeline, behind the writes) ends a
            # transaction too: the cursor counted its statement.
            ended = 1 if not idle and now_idle else 0
            if name in _ENDS and not idle:
                _add(statements=1, round_trips=trips, transactions=ended)
            elif idle and not now_idle and not self.autocommit:
                # psycopg sent BEGIN first and waited for it, in a pipeline too (it syncs).
                _add(statements=1, round_trips=trips + 1)
            else:
                _add(round_trips=trips, transactions=ended)

    @classmethod
    def connect(cls, *args: Any, **kw: Any) -> Any:
        conn = super().connect(*args, **kw)
        conn.cursor_factory = CountingCursor
        return conn


def install(path: Path) -> None:
    """Count every psycopg connection this process opens through SQLAlchemy from now on."""
    global _counts
    import sqlalchemy as sa

    _counts = _Counts(path)

    def connect(dialect: Any, _rec: Any, cargs: Any, cparams: Any) -> Any:
        if dialect.driver != "psycopg":
            return None
        return CountingConnection.connect(*cargs, **cparams)

    sa.event.listen(sa.engine.Engine, "do_connect", connect)


def install_from_env() -> None:
    """Count into ``<DT_BENCH_PG_COUNTS>/<pid>`` (a directory: processes started with the same
    settings, such as a server and its command-line tools, keep their own counters)."""
    folder = os.environ.get(ENV)
    if folder:
        install(Path(folder) / str(os.getpid()))


def read(path: Path) -> dict[str, int]:
    """The counters a process has written so far (zeros before it starts counting)."""
    try:
        data = path.read_bytes()[:_SIZE]
    except FileNotFoundError:
        return dict.fromkeys(FIELDS, 0)
    if len(data) < _SIZE:
        return dict.fromkeys(FIELDS, 0)
    return dict(zip(FIELDS, struct.unpack(_FORMAT, data), strict=True))


def process_env(folder: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Settings that make a product process count into ``folder/<its pid>``."""
    env = os.environ if env is None else env
    pythonpath = [str(SITE), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(pythonpath), ENV: str(folder)}


def per(before: Mapping[str, int], after: Mapping[str, int], n: int) -> dict[str, float]:
    """Counters per operation between two :func:`read`."""
    return {k: (after[k] - before[k]) / n for k in FIELDS}
