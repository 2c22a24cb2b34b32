"""The ledger hot path's SQL text (:mod:`gateway.ledger.rawsql` runs it): the columns, each
dialect's way of binding and reading date-times, PostgreSQL's many-row writes over ``unnest``
arrays, and a batch's reads in one statement (a few ids of each kind as ``ARRAY[%s, ...]``,
:func:`gateway.pgarrays.any_of`, so that PostgreSQL keeps the plan it made)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.pgarrays import any_of, pg_array

_WALLET_COLS = "id, kind, owner, currency, status, posted, reserved, created_at, fingerprint"
_TRANSFER_COLS = (
    "id, kind, debit_wallet_id, credit_wallet_id, amount, currency, reference, created_at,"
    " fingerprint"
)
_LOCK_COLS = (
    "id, debit_wallet_id, credit_wallet_id, amount, currency, state, condition, fulfilment,"
    " reference, expires_at, created_at, resolved_at, fingerprint"
)
_ENTRY_COLS = (
    "wallet_id, op, ref_id, posted_delta, reserved_delta, posted_after, reserved_after, created_at"
)


def _sqlite_ts(value: datetime | None) -> str | None:
    """Bind a UTC datetime exactly as ``UtcDateTime`` does on SQLite (naive UTC, 6 digits)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_read_ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _pg_ts(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value


def _pg_read_ts(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _unnest(table: str, cols: str, types: Sequence[str], ordered: bool = False) -> str:
    """``INSERT ... SELECT FROM unnest(arrays)``: many rows in one PostgreSQL statement."""
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    if ordered:  # keep the arrays' order for serial columns (entries' seq)
        names = ", ".join(f"c{i}" for i in range(len(types)))
        return (
            f"INSERT INTO {table} ({cols}) SELECT {names} FROM unnest({arrays})"
            f" WITH ORDINALITY AS v({names}, ord) ORDER BY ord"
        )
    return f"INSERT INTO {table} ({cols}) SELECT * FROM unnest({arrays})"


_WALLET_TYPES = ("text", "text", "text", "text", "text", "bigint", "bigint", "timestamptz", "text")
_TRANSFER_TYPES = ("text", "text", "text", "text", "bigint", "text", "text", "timestamptz", "text")
_LOCK_TYPES: tuple[str, ...] = (
    "text",
    "text",
    "text",
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "text",
)
_LOCK_TYPES += ("timestamptz", "timestamptz", "timestamptz", "text")
_PG_INSERT_WALLETS = _unnest("ledger_wallet", _WALLET_COLS, _WALLET_TYPES)
_PG_INSERT_TRANSFERS = _unnest("ledger_transfer", _TRANSFER_COLS, _TRANSFER_TYPES)
_PG_INSERT_LOCKS = _unnest("ledger_lock", _LOCK_COLS, _LOCK_TYPES)
_PG_INSERT_ENTRIES = _unnest(
    "ledger_entry",
    _ENTRY_COLS,
    ("text", "text", "text", "bigint", "bigint", "bigint", "bigint", "timestamptz"),
    ordered=True,
)
_PG_UPDATE_WALLETS = (
    "UPDATE ledger_wallet AS w SET status = v.status, posted = v.posted, reserved = v.reserved"
    " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[])"
    " AS v(id, status, posted, reserved) WHERE w.id = v.id"
)
# A batch resolving more locks reads them first and their wallets after: a round trip is
# nothing next to such a batch's work, and the planner may scan the locks' table for the
# subquery's long id list where the locks' own read uses the index.
_PG_MAX_LOCKS_IN_ONE_READ = 16
# The batch's reads in one pipeline (one round trip): its locks, then its transfers, then its
# wallets, named or reached through the locks that the batch resolves (``FOR UPDATE`` added
# where the batch locks them). The wallets' statement runs after the locks' (statements of a
# pipeline run in order), so rows are still locked in the global order; a lock's wallets never
# change, so reading them there is as good as from the locks' rows fetched first.
_PG_LOCKS_FOR_UPDATE = (
    f"SELECT {_LOCK_COLS} FROM ledger_lock WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
)
_PG_TRANSFERS = f"SELECT {_TRANSFER_COLS} FROM ledger_transfer WHERE id = ANY(%s) ORDER BY id"
_PG_WALLETS_OF_LOCKS = (
    f"SELECT {_WALLET_COLS} FROM ledger_wallet WHERE id = ANY("
    "%s::text[]"
    " || ARRAY(SELECT debit_wallet_id FROM ledger_lock WHERE id = ANY(%s::text[]))"
    " || ARRAY(SELECT credit_wallet_id FROM ledger_lock WHERE id = ANY(%s::text[]))"
    ") ORDER BY id"
)
_PG_WALLETS = f"SELECT {_WALLET_COLS} FROM ledger_wallet WHERE id = ANY(%s) ORDER BY id"
# A batch whose wallets are not row-locked (``lock_wallets``): its locks (``FOR UPDATE``), its
# transfers and its wallets in one statement, each row tagged with its kind (0, 1, 2) and its
# columns in their own places; the wallets of the locks it resolves are read off the locked rows.
_W, _T, _L = len(_WALLET_TYPES), len(_TRANSFER_TYPES), len(_LOCK_TYPES)


def _nulls(types: Sequence[str]) -> str:
    return ", ".join(f"NULL::{t}" for t in types)


@functools.lru_cache(maxsize=64)
def _pg_batch_read(locks: int, transfers: int, wallets: int, of_locks: int) -> str:
    """The read of a batch whose wallets are not locked, for so many ids of each kind (the
    parts with none left out; any number over ``pgarrays.FEW`` stands for all of them, sent
    as one array). A batch with more ids of one kind sends every kind as an array: with some
    numbers known and others not, PostgreSQL kept a plan that reckoned on too few rows
    (batched bursts ~10 % slower), where it plans such a batch's read for its arrays."""
    parts = []
    if locks:
        parts.append(
            f"SELECT 0, {_LOCK_COLS}, {_nulls(_TRANSFER_TYPES)}, {_nulls(_WALLET_TYPES)} FROM lk"
        )
    if transfers:
        parts.append(
            f"SELECT 1, {_nulls(_LOCK_TYPES)}, {_TRANSFER_COLS}, {_nulls(_WALLET_TYPES)}"
            f" FROM ledger_transfer WHERE id = ANY({any_of(transfers)})"
        )
    ids = [any_of(wallets)] if wallets else []
    if locks and of_locks:
        ids += [
            f"ARRAY(SELECT {side}_wallet_id FROM lk WHERE id = ANY({any_of(of_locks)}))"
            for side in ("debit", "credit")
        ]
    if ids:
        parts.append(
            f"SELECT 2, {_nulls(_LOCK_TYPES)}, {_nulls(_TRANSFER_TYPES)}, {_WALLET_COLS}"
            f" FROM ledger_wallet WHERE id = ANY({' || '.join(ids)})"
        )
    sql = " UNION ALL ".join(parts)
    if locks:
        sql = (
            f"WITH lk AS MATERIALIZED (SELECT {_LOCK_COLS} FROM ledger_lock"
            f" WHERE id = ANY({any_of(locks)}) ORDER BY id FOR UPDATE) {sql}"
        )
    return sql


_PG_UPDATE_LOCKS = (
    "UPDATE ledger_lock AS l SET state = v.state, fulfilment = v.fulfilment,"
    " resolved_at = v.resolved_at"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])"
    " AS v(id, state, fulfilment, resolved_at) WHERE l.id = v.id"
)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[str]:
    """Rows to per-column array literals, the shape ``unnest`` takes."""
    if not rows:
        return ["{}"] * width
    return [pg_array(col) for col in zip(*rows, strict=True)]
