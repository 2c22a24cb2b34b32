"""The ledger's hot path: the statements every command runs, as prebuilt SQL per dialect
(:mod:`gateway.ledger.sqltext`) on the driver's own cursor.

SQLAlchemy's per-statement work (compile cache lookup, IN-list expansion, bind and result
processors) costs more than these statements themselves, so they skip it: one
``SELECT ... FOR UPDATE`` per kind of row a batch touches (in id order), then one multi-row write
per table (``executemany`` on SQLite, ``unnest`` arrays on PostgreSQL). On PostgreSQL a batch may
read its wallets unlocked and write them as conditional deltas instead
(:meth:`HotPathLedgerSql.move_wallets`, :mod:`gateway.ledger.pgmoves`), held to the COMMIT in a
unit of work's transaction. Driver errors are wrapped
back into SQLAlchemy's exception classes (``raise_driver_error``), so ``gateway.db`` still sees an
``IntegrityError`` for a unique-key race and retries it. The tables themselves, and the reads off
the hot path, are :mod:`gateway.ledger.store`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn, cast

from sqlalchemy.engine import Connection

from gateway.ledger.model import (
    Lock,
    LockState,
    Transfer,
    TransferKind,
    Wallet,
    WalletKind,
    WalletStatus,
)
from gateway.ledger.moves import Needs, wallet_moves
from gateway.ledger.pgmoves import HeldMoves, move_statements
from gateway.ledger.sqltext import (
    _ENTRY_COLS,
    _L,
    _LOCK_COLS,
    _PG_INSERT_ENTRIES,
    _PG_INSERT_LOCKS,
    _PG_INSERT_TRANSFERS,
    _PG_INSERT_WALLETS,
    _PG_LOCKS_FOR_UPDATE,
    _PG_MAX_LOCKS_IN_ONE_READ,
    _PG_TRANSFERS,
    _PG_UPDATE_LOCKS,
    _PG_UPDATE_WALLETS,
    _PG_WALLETS,
    _PG_WALLETS_OF_LOCKS,
    _T,
    _TRANSFER_COLS,
    _WALLET_COLS,
    _columns,
    _marks,
    _pg_batch_read,
    _pg_read_ts,
    _pg_ts,
    _sqlite_read_ts,
    _sqlite_ts,
)
from gateway.pgarrays import FEW, any_params, pg_array
from gateway.pgpipeline import PgPipeline
from gateway.sqlite.fastsql import raise_driver_error


class HotPathLedgerSql:
    """The reads and writes every ledger command runs, on one connection inside the caller's
    transaction, through the driver's own cursor (on PostgreSQL, a :class:`PgPipeline`)."""

    def __init__(self, conn: Connection, *, pipeline: PgPipeline | None = None) -> None:
        """``pipeline``: the unit of work's, shared with its other repositories and open for
        the whole transaction (the writes wait for the next read or the COMMIT); without, on
        PostgreSQL, one of its own for each batch's reads and for its writes."""
        self.conn = conn
        self._pg = conn.dialect.name != "sqlite"
        self.pipe: PgPipeline | None = None
        if self._pg:
            self.pipe = pipeline if pipeline is not None else PgPipeline(conn, keep_open=False)
        self._for_update = self._pg
        self.conditional_wallet_writes = self._pg
        """Batches may read wallets unlocked and write them by :meth:`move_wallets`."""
        self._ts: Callable[[datetime | None], Any] = _pg_ts if self._pg else _sqlite_ts
        self._read_ts: Callable[[Any], datetime | None] = (
            _pg_read_ts if self._pg else _sqlite_read_ts
        )
        self._cursor: Any = None
        self._held: HeldMoves | None = None
        """A unit of work's transaction (its pipeline shared): the batches' moves, written
        together before the COMMIT (:class:`~gateway.ledger.pgmoves.HeldMoves`)."""
        if self.pipe is not None and self.pipe.keep_open:
            self._held = HeldMoves(self._write, self._ts)
            self.pipe.hold(self._held)

    # raw driver access ----------------------------------------------------

    def _cur(self) -> Any:
        if self._cursor is None:
            self._cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        return self._cursor

    def _fail(self, exc: Exception, sql: str, params: Any) -> NoReturn:
        raise_driver_error(self.conn, exc, sql, params)

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self.pipe is not None:
            return self.pipe.fetch(sql, params)
        cur = self._cur()
        try:
            cur.execute(sql, params)
            return cast(list[tuple[Any, ...]], cur.fetchall())
        except Exception as exc:
            self._fail(exc, sql, params)

    def _write(self, sql: str, params: Sequence[Any]) -> None:
        if self.pipe is not None:
            self.pipe.execute(sql, params)
            return
        try:
            self._cur().execute(sql, params)
        except Exception as exc:
            self._fail(exc, sql, params)

    def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.pipe is not None:
            self.pipe.executemany(sql, rows)
            return
        try:
            self._cur().executemany(sql, rows)
        except Exception as exc:
            self._fail(exc, sql, rows)

    def _insert(self, table: str, cols: str, pg_many: str, rows: list[tuple[Any, ...]]) -> None:
        """One row: a plain INSERT (cheapest to bind); many: unnest on PostgreSQL, executemany
        on SQLite (a C loop over one prepared statement)."""
        width = len(rows[0])
        if not self._pg:
            self._write_many(f"INSERT INTO {table} ({cols}) VALUES ({_marks(width)})", rows)
        elif len(rows) == 1:
            self._write(
                f"INSERT INTO {table} ({cols}) VALUES ({', '.join(['%s'] * width)})", rows[0]
            )
        else:
            self._write(pg_many, _columns(rows, width))

    def _update(
        self, table: str, sets: Sequence[str], pg_many: str, rows: list[tuple[Any, ...]]
    ) -> None:
        """Rows are (id, *values for ``sets``)."""
        if not self._pg:
            assignments = ", ".join(f"{c} = ?{i}" for i, c in enumerate(sets, start=2))
            self._write_many(f"UPDATE {table} SET {assignments} WHERE id = ?1", rows)
        elif len(rows) == 1:
            assignments = ", ".join(f"{c} = %s" for c in sets)
            row = rows[0]
            self._write(f"UPDATE {table} SET {assignments} WHERE id = %s", (*row[1:], row[0]))
        else:
            self._write(pg_many, _columns(rows, len(rows[0])))

    @contextmanager
    def pipelined(self) -> Iterator[None]:
        """Send the writes inside the block together, with no round trip each (psycopg
        pipeline mode): a pipeline of its own is left at the block's end (one round trip),
        the unit of work's shared one sends them with its next read or the COMMIT. Errors are
        raised as SQLAlchemy exceptions, when they come in; on SQLite this does nothing."""
        pipe = self.pipe
        if pipe is None or pipe.keep_open:
            yield
            return
        pipe.open()
        try:
            yield
        except BaseException:
            pipe.abandon()
            raise
        pipe.settle()

    def settle(self) -> None:
        """Wait for the statements still queued and leave pipeline mode (before SQLAlchemy
        runs a statement on the connection)."""
        if self.pipe is not None:
            self.pipe.settle()

    def _select_by_ids(
        self, table: str, cols: str, ids: Collection[str], *, lock: bool
    ) -> list[tuple[Any, ...]]:
        ordered = sorted(ids)
        if self._pg:
            if len(ordered) == 1:
                sql = f"SELECT {cols} FROM {table} WHERE id = %s"
                return self._fetch(sql + " FOR UPDATE" if lock else sql, ordered)
            sql = f"SELECT {cols} FROM {table} WHERE id = ANY(%s) ORDER BY id"
            return self._fetch(sql + " FOR UPDATE" if lock else sql, (ordered,))
        sql = f"SELECT {cols} FROM {table} WHERE id IN ({_marks(len(ordered))}) ORDER BY id"
        return self._fetch(sql, ordered)

    def _wallet_of(self, r: tuple[Any, ...]) -> Wallet:
        return Wallet(
            id=r[0],
            kind=WalletKind(r[1]),
            owner=r[2],
            currency=r[3],
            status=WalletStatus(r[4]),
            posted=r[5],
            reserved=r[6],
            created_at=cast(datetime, self._read_ts(r[7])),
            fingerprint=r[8],
        )

    def _transfer_of(self, r: tuple[Any, ...]) -> Transfer:
        return Transfer(
            id=r[0],
            kind=TransferKind(r[1]),
            debit_wallet_id=r[2],
            credit_wallet_id=r[3],
            amount=r[4],
            currency=r[5],
            reference=r[6],
            created_at=cast(datetime, self._read_ts(r[7])),
            fingerprint=r[8],
        )

    def _lock_of(self, r: tuple[Any, ...]) -> Lock:
        read_ts = self._read_ts
        return Lock(
            id=r[0],
            debit_wallet_id=r[1],
            credit_wallet_id=r[2],
            amount=r[3],
            currency=r[4],
            state=LockState(r[5]),
            condition=r[6],
            fulfilment=r[7],
            reference=r[8],
            expires_at=read_ts(r[9]),
            created_at=cast(datetime, read_ts(r[10])),
            resolved_at=read_ts(r[11]),
            fingerprint=r[12],
        )

    # reads ----------------------------------------------------------------

    def _write_held(self) -> None:
        """The moves held, written before a read of wallets that must see them."""
        if self._held:
            self._held.flush()

    def wallets_for_update(self, ids: Collection[str]) -> dict[str, Wallet]:
        """Load and row-lock wallets, always in id order, so concurrent batches cannot deadlock."""
        if not ids:
            return {}
        self._write_held()
        rows = self._select_by_ids("ledger_wallet", _WALLET_COLS, ids, lock=self._for_update)
        return {r[0]: self._wallet_of(r) for r in rows}

    def locks_for_update(self, ids: Collection[str]) -> dict[str, Lock]:
        """Locks are row-locked before wallets, in id order (the global lock order)."""
        if not ids:
            return {}
        rows = self._select_by_ids("ledger_lock", _LOCK_COLS, ids, lock=self._for_update)
        return {r[0]: self._lock_of(r) for r in rows}

    def read_for_batch(
        self,
        lock_ids: Collection[str],
        transfer_ids: Collection[str],
        wallet_ids: Collection[str],
        wallets_of_locks: Collection[str],
        *,
        lock_wallets: bool = True,
    ) -> tuple[dict[str, Lock], dict[str, Transfer], dict[str, Wallet]]:
        """What a batch reads before it applies: its locks (row-locked), its transfers, and
        its wallets (row-locked, unless not ``lock_wallets``): ``wallet_ids`` and those of
        the stored locks among ``wallets_of_locks``. On PostgreSQL in one round trip (with
        what the pipeline holds); the same rows, locked in the same order, as
        :meth:`locks_for_update`, :meth:`transfers` then :meth:`wallets_for_update` (or
        :meth:`wallets_by_id`) would return. Wallets read unlocked come with the moves the
        transaction holds added (they are written with the COMMIT); a locked read writes
        them first."""
        locks, transfers, wallets = self._read_for_batch(
            lock_ids, transfer_ids, wallet_ids, wallets_of_locks, lock_wallets=lock_wallets
        )
        if not lock_wallets and self._held:
            wallets = self._held.overlay(wallets)
        return locks, transfers, wallets

    def _read_for_batch(
        self,
        lock_ids: Collection[str],
        transfer_ids: Collection[str],
        wallet_ids: Collection[str],
        wallets_of_locks: Collection[str],
        *,
        lock_wallets: bool,
    ) -> tuple[dict[str, Lock], dict[str, Transfer], dict[str, Wallet]]:
        if not self._pg or len(wallets_of_locks) > _PG_MAX_LOCKS_IN_ONE_READ:
            locks = self.locks_for_update(lock_ids)
            ids = set(wallet_ids)
            for lock_id in wallets_of_locks:
                if (lk := locks.get(lock_id)) is not None:
                    ids |= {lk.debit_wallet_id, lk.credit_wallet_id}
            read = self.wallets_for_update if lock_wallets else self._wallets
            return locks, self.transfers(transfer_ids), read(ids)
        if not lock_wallets:
            return self._batch_read(lock_ids, transfer_ids, wallet_ids, wallets_of_locks)
        self._write_held()
        queries: list[tuple[str, tuple[Any, ...]]] = []
        if lock_ids:
            queries.append((_PG_LOCKS_FOR_UPDATE, (sorted(lock_ids),)))
        if transfer_ids:
            queries.append((_PG_TRANSFERS, (sorted(transfer_ids),)))
        if wallets_of_locks:
            of_locks = sorted(wallets_of_locks)
            params = (sorted(wallet_ids), of_locks, of_locks)
            queries.append((_PG_WALLETS_OF_LOCKS + " FOR UPDATE", params))
        elif wallet_ids:
            queries.append((_PG_WALLETS + " FOR UPDATE", (sorted(wallet_ids),)))
        pipe = self.pipe
        assert pipe is not None
        pending = [pipe.query(sql, params) for sql, params in queries]
        rows = [p.rows() for p in pending]  # the first waits for them all: one round trip
        found = iter(rows)
        locks = {r[0]: self._lock_of(r) for r in next(found)} if lock_ids else {}
        transfers = {r[0]: self._transfer_of(r) for r in next(found)} if transfer_ids else {}
        wallets = (
            {r[0]: self._wallet_of(r) for r in next(found)}
            if wallets_of_locks or wallet_ids
            else {}
        )
        return locks, transfers, wallets

    def _batch_read(
        self,
        lock_ids: Collection[str],
        transfer_ids: Collection[str],
        wallet_ids: Collection[str],
        wallets_of_locks: Collection[str],
    ) -> tuple[dict[str, Lock], dict[str, Transfer], dict[str, Wallet]]:
        ids = [sorted(lock_ids), sorted(transfer_ids), sorted(wallet_ids)]
        of = sorted(wallets_of_locks) if lock_ids else []
        locks: dict[str, Lock] = {}
        transfers: dict[str, Transfer] = {}
        wallets: dict[str, Wallet] = {}
        if not (ids[0] or ids[1] or ids[2]):
            return locks, transfers, wallets
        # A few ids of each kind, their numbers known; more of any kind: every kind as an
        # array, the statement planned for them each time (``_pg_batch_read``).
        many = any(len(values) > FEW for values in (*ids, of))
        params = [
            p
            for values in (*ids, of, of)
            if values
            for p in ([pg_array(values)] if many else any_params(values))
        ]
        sizes = [FEW + 1 if many and values else len(values) for values in (*ids, of)]
        for r in self._fetch(_pg_batch_read(*sizes), params):
            if r[0] == 0:
                locks[r[1]] = self._lock_of(r[1 : 1 + _L])
            elif r[0] == 1:
                transfers[r[1 + _L]] = self._transfer_of(r[1 + _L : 1 + _L + _T])
            else:
                wallets[r[1 + _L + _T]] = self._wallet_of(r[1 + _L + _T :])
        return (
            {i: locks[i] for i in sorted(locks)},
            {i: transfers[i] for i in sorted(transfers)},
            {i: wallets[i] for i in sorted(wallets)},
        )

    def transfers(self, ids: Collection[str]) -> dict[str, Transfer]:
        if not ids:
            return {}
        rows = self._select_by_ids("ledger_transfer", _TRANSFER_COLS, ids, lock=False)
        return {r[0]: self._transfer_of(r) for r in rows}

    def wallet(self, wallet_id: str) -> Wallet | None:
        return self.wallets_by_id([wallet_id]).get(wallet_id)

    def wallets_by_id(self, ids: Collection[str]) -> dict[str, Wallet]:
        """Wallets without a row lock (reads), as the transaction has left them."""
        self._write_held()
        return self._wallets(ids)

    def _wallets(self, ids: Collection[str]) -> dict[str, Wallet]:
        if not ids:
            return {}
        rows = self._select_by_ids("ledger_wallet", _WALLET_COLS, ids, lock=False)
        return {r[0]: self._wallet_of(r) for r in rows}

    def lock(self, lock_id: str) -> Lock | None:
        rows = self._select_by_ids("ledger_lock", _LOCK_COLS, [lock_id], lock=False)
        return self._lock_of(rows[0]) if rows else None

    def transfer(self, transfer_id: str) -> Transfer | None:
        return self.transfers([transfer_id]).get(transfer_id)

    # writes ---------------------------------------------------------------

    def insert_wallets(self, wallets: Sequence[Wallet]) -> None:
        if not wallets:
            return
        ts = self._ts
        rows = [
            (
                w.id,
                w.kind.value,
                w.owner,
                w.currency,
                w.status.value,
                w.posted,
                w.reserved,
                ts(w.created_at),
                w.fingerprint,
            )
            for w in wallets
        ]
        self._insert("ledger_wallet", _WALLET_COLS, _PG_INSERT_WALLETS, rows)

    def update_wallets(self, wallets: Iterable[Wallet]) -> None:
        rows = [(w.id, w.status.value, w.posted, w.reserved) for w in wallets]
        if not rows:
            return
        self._update("ledger_wallet", ("status", "posted", "reserved"), _PG_UPDATE_WALLETS, rows)

    def move_wallets(self, entries: Sequence[dict[str, Any]], needs: dict[str, Needs]) -> None:
        """Write a batch's wallet changes (its ``entries``, in order) as deltas under its
        checks (``needs`` of the wallets it names), with their history entries
        (:mod:`gateway.ledger.pgmoves`; PostgreSQL only): in a unit of work's transaction
        with the COMMIT, the moves of all its batches together; else now."""
        assert self._pg, "conditional wallet writes are PostgreSQL's"
        if self._held is not None:
            self._held.add(entries, needs)
            return
        for sql, params in move_statements(wallet_moves(entries, needs), self._ts):
            self._write(sql, params)

    def insert_transfers(self, transfers: Sequence[Transfer]) -> None:
        if not transfers:
            return
        ts = self._ts
        rows = [
            (
                t.id,
                t.kind.value,
                t.debit_wallet_id,
                t.credit_wallet_id,
                t.amount,
                t.currency,
                t.reference,
                ts(t.created_at),
                t.fingerprint,
            )
            for t in transfers
        ]
        self._insert("ledger_transfer", _TRANSFER_COLS, _PG_INSERT_TRANSFERS, rows)

    def insert_locks(self, locks: Sequence[Lock]) -> None:
        if not locks:
            return
        ts = self._ts
        rows = [
            (
                lk.id,
                lk.debit_wallet_id,
                lk.credit_wallet_id,
                lk.amount,
                lk.currency,
                lk.state.value,
                lk.condition,
                lk.fulfilment,
                lk.reference,
                ts(lk.expires_at),
                ts(lk.created_at),
                ts(lk.resolved_at),
                lk.fingerprint,
            )
            for lk in locks
        ]
        self._insert("ledger_lock", _LOCK_COLS, _PG_INSERT_LOCKS, rows)

    def update_locks(self, locks: Iterable[Lock]) -> None:
        ts = self._ts
        rows = [(lk.id, lk.state.value, lk.fulfilment, ts(lk.resolved_at)) for lk in locks]
        if not rows:
            return
        self._update("ledger_lock", ("state", "fulfilment", "resolved_at"), _PG_UPDATE_LOCKS, rows)

    def insert_entries(self, entries: Sequence[dict[str, Any]]) -> None:
        if not entries:
            return
        ts = self._ts
        rows = [
            (
                e["wallet_id"],
                e["op"],
                e["ref_id"],
                e["posted_delta"],
                e["reserved_delta"],
                e["posted_after"],
                e["reserved_after"],
                ts(e["created_at"]),
            )
            for e in entries
        ]
        self._insert("ledger_entry", _ENTRY_COLS, _PG_INSERT_ENTRIES, rows)


__all__ = ["HotPathLedgerSql"]
