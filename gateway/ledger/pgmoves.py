"""PostgreSQL: a batch's wallet changes written as conditional deltas (:mod:`gateway.ledger.moves`),
so that the batch reads its wallets without row locks and holds each only from its write to the
COMMIT.

Two statements at most. The wallets moved: locked in id order (the global lock order, so that
transactions moving the same wallets queue instead of deadlocking), each updated by its deltas
if the row, as it is once locked (after a concurrent writer's COMMIT), passes the checks, and
the history entries inserted with the balances the update returned. The wallets only checked (a
new lock's beneficiary): read ``FOR KEY SHARE``, which a concurrent balance update does not wait
for but a status change (its wallet read ``FOR UPDATE``) does, so that a hot beneficiary (a
foreign central bank's wallet, in every PvP) is not held exclusively. A row that fails its
checks calls ``ledger_wallet_changed`` (migration 0013), which raises a serialization failure:
the transaction fails whatever statement reports it (the COMMIT queued behind it included) and
the unit of work runs again (``gateway.db.retrying``), reading the wallet as it now is, where
the service's own checks refuse or accept the batch.

In a unit of work's transaction (its shared pipeline) the batches' moves are held in the client
(:class:`HeldMoves`) and written together just before the COMMIT: a later batch of the same
transaction reads its wallets with the held moves added. Written batch by batch, each batch's
statement locked its wallets in id order, but a transaction with several batches (a reception's
messages, a group commit's operations) took them in batch order: one holding a participant's
wallet from a lock and asking for a foreign central bank's for a commit deadlocked with one
holding them the other way round. Written once, every transaction takes its wallets in one
order, and holds them only for its COMMIT. The checks of all its batches are those of their
entries in order (:func:`~gateway.ledger.moves.wallet_moves` over them all), so the rows pass
them exactly when each batch's checks would pass, taken in turn, on the rows as they are.

The entries' insert comes after the update in the same statement, so the collateral log's
trigger pools a segregated wallet's movements in the order their row locks were taken.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from gateway.ledger.model import Wallet, WalletKind
from gateway.ledger.moves import MovedEntry, Moves, Needs, WalletMove, wallet_moves
from gateway.pgarrays import pg_array, rows_params, values_of

# What the row must be for the batch's checks to pass on it (``need``: moves.Needs).
_PASSES = (
    "(CASE m.need WHEN 2 THEN w.status = 'open' WHEN 1 THEN w.status <> 'closed' ELSE true END"
    f" AND (w.kind = '{WalletKind.ISSUANCE.value}' OR w.posted - w.reserved >= m.available)"
    " AND w.posted BETWEEN m.low AND m.high)"
)

MOVE = (
    "WITH m AS MATERIALIZED (SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[],"
    " %s::int[], %s::bigint[], %s::bigint[], %s::bigint[])"
    " AS m(id, pd, rd, need, available, low, high)),"
    # The rows locked in id order before any is written (concurrent batches queue, never
    # deadlock); the update, on the rows as they are once locked, checks them.
    " l AS MATERIALIZED (SELECT id FROM ledger_wallet WHERE id IN (SELECT id FROM m)"
    " ORDER BY id FOR NO KEY UPDATE),"
    " w AS (UPDATE ledger_wallet w SET posted = w.posted + m.pd, reserved = w.reserved + m.rd"
    f" FROM m JOIN l USING (id) WHERE w.id = m.id AND CASE WHEN {_PASSES} THEN true"
    " ELSE ledger_wallet_changed(w.id) END RETURNING w.id, w.posted, w.reserved)"
    " INSERT INTO ledger_entry (wallet_id, op, ref_id, posted_delta, reserved_delta,"
    " posted_after, reserved_after, created_at)"
    " SELECT w.id, e.op, e.ref_id, e.pd, e.rd, w.posted - e.rp, w.reserved - e.rr, e.at"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[],"
    " %s::bigint[], %s::timestamptz[]) WITH ORDINALITY AS e(wid, op, ref_id, pd, rd, rp, rr, at, n)"
    " JOIN w ON w.id = e.wid ORDER BY e.n"
)
"""The moved wallets' deltas and their history entries, in one statement."""


@functools.cache
def _move(wallets: int, entries: int) -> str:
    """:data:`MOVE` with its wallets' and its entries' rows as rows of parameters when they
    are few (their numbers; 0: arrays), :func:`~gateway.pgarrays.values_of`."""
    return values_of(MOVE, wallets, entries)


CHECK = (
    "SELECT 1 FROM ledger_wallet w JOIN unnest(%s::text[], %s::int[]) AS m(id, need)"
    " USING (id) WHERE CASE WHEN CASE m.need WHEN 2 THEN w.status = 'open'"
    " WHEN 1 THEN w.status <> 'closed' ELSE true END THEN true"
    " ELSE ledger_wallet_changed(w.id) END"
    " ORDER BY w.id FOR KEY SHARE OF w"
)
"""The wallets the batch only checks (a new lock's beneficiary)."""

# One wallet and one entry (a lone lock's or transfer's debit), one wallet checked: the same
# with plain parameters, which the driver binds faster than arrays.
_PASSES_ONE = _PASSES.replace("m.need", "%(need)s").replace("m.available", "%(available)s")
_PASSES_ONE = _PASSES_ONE.replace("m.low", "%(low)s").replace("m.high", "%(high)s")
MOVE_ONE = (
    "WITH w AS (UPDATE ledger_wallet w SET posted = w.posted + %(pd)s,"
    " reserved = w.reserved + %(rd)s"
    f" WHERE w.id = %(id)s AND CASE WHEN {_PASSES_ONE} THEN true"
    " ELSE ledger_wallet_changed(w.id) END RETURNING w.posted, w.reserved)"
    " INSERT INTO ledger_entry (wallet_id, op, ref_id, posted_delta, reserved_delta,"
    " posted_after, reserved_after, created_at)"
    " SELECT %(id)s, %(op)s, %(ref_id)s, %(pd)s, %(rd)s, w.posted, w.reserved, %(at)s FROM w"
)
CHECK_ONE = (
    "SELECT 1 FROM ledger_wallet w WHERE w.id = %(id)s AND CASE WHEN CASE %(need)s"
    " WHEN 2 THEN w.status = 'open' WHEN 1 THEN w.status <> 'closed' ELSE true END THEN true"
    " ELSE ledger_wallet_changed(w.id) END FOR KEY SHARE"
)


def _move_one(m: WalletMove, e: MovedEntry, ts: Callable[[datetime], Any]) -> tuple[str, Any]:
    params = {
        "id": m.wallet_id,
        "pd": m.posted_delta,
        "rd": m.reserved_delta,
        "need": int(m.need),
        "available": m.min_available,
        "low": m.posted_range[0],
        "high": m.posted_range[1],
        "op": e.op,
        "ref_id": e.ref_id,
        "at": ts(e.created_at),
    }
    return MOVE_ONE, params


def move_statements(moves: Moves, ts: Callable[[datetime], Any]) -> list[tuple[str, Any]]:
    """The statements that write ``moves``: the written wallets and their entries, then the
    wallets only checked."""
    written = [m for m in moves.wallets if m.written]
    out: list[tuple[str, Any]] = []
    if len(written) == 1 and len(moves.entries) == 1:
        out.append(_move_one(written[0], moves.entries[0], ts))
        written = []
    if written:
        es = moves.entries
        wallets: list[list[Any]] = [
            [m.wallet_id for m in written],
            [m.posted_delta for m in written],
            [m.reserved_delta for m in written],
            [int(m.need) for m in written],
            [m.min_available for m in written],
            [m.posted_range[0] for m in written],
            [m.posted_range[1] for m in written],
        ]
        entries: list[list[Any]] = [
            [e.wallet_id for e in es],
            [e.op for e in es],
            [e.ref_id for e in es],
            [e.posted_delta for e in es],
            [e.reserved_delta for e in es],
            [e.rest_posted for e in es],
            [e.rest_reserved for e in es],
            [ts(e.created_at) for e in es],
        ]
        # A few rows as rows of parameters (the plan kept, no array to parse), more as arrays.
        n_wallets, wallet_values = rows_params(wallets)
        n_entries, entry_values = rows_params(entries)
        out.append((_move(n_wallets, n_entries), (*wallet_values, *entry_values)))
    checked = [m for m in moves.wallets if not m.written]
    if len(checked) == 1:
        out.append((CHECK_ONE, {"id": checked[0].wallet_id, "need": int(checked[0].need)}))
    elif checked:
        params = ([m.wallet_id for m in checked], [int(m.need) for m in checked])
        out.append((CHECK, tuple(pg_array(column) for column in params)))
    return out


_Snapshot = tuple[int, dict[str, Needs]]


class HeldMoves:
    """The wallet moves of a transaction's batches, held until the COMMIT (a
    :class:`~gateway.pgpipeline.HeldToCommit` of its pipeline)."""

    __slots__ = ("_entries", "_needs", "_ts", "_write")

    def __init__(self, write: Callable[[str, Any], None], ts: Callable[[datetime], Any]) -> None:
        self._write = write
        self._ts = ts
        self._entries: list[Mapping[str, Any]] = []
        self._needs: dict[str, Needs] = {}

    def __bool__(self) -> bool:
        return bool(self._entries or self._needs)

    def add(self, entries: Sequence[Mapping[str, Any]], needs: Mapping[str, Needs]) -> None:
        """A batch's entries (in order) and the checks of the wallets it names."""
        self._entries.extend(entries)
        for wallet_id, need in needs.items():
            if self._needs.get(wallet_id, Needs.NOTHING) < need:
                self._needs[wallet_id] = need

    def overlay(self, wallets: dict[str, Wallet]) -> dict[str, Wallet]:
        """``wallets`` as read, with the held moves added (what the transaction has made of
        them)."""
        moved: dict[str, list[int]] = {}
        for e in self._entries:
            if e["wallet_id"] in wallets:
                m = moved.setdefault(e["wallet_id"], [0, 0])
                m[0] += e["posted_delta"]
                m[1] += e["reserved_delta"]
        for wallet_id, (posted, reserved) in moved.items():
            w = wallets[wallet_id]
            wallets[wallet_id] = dataclasses.replace(
                w, posted=w.posted + posted, reserved=w.reserved + reserved
            )
        return wallets

    def snapshot(self) -> object:
        snapshot: _Snapshot = (len(self._entries), dict(self._needs))
        return snapshot

    def restore(self, snapshot: object) -> None:
        n, needs = cast(_Snapshot, snapshot)
        del self._entries[n:]
        self._needs = needs

    def flush(self) -> None:
        if not self:
            return
        moves = wallet_moves(self._entries, self._needs)
        self._entries, self._needs = [], {}
        for sql, params in move_statements(moves, self._ts):
            self._write(sql, params)


__all__ = ["CHECK", "MOVE", "HeldMoves", "move_statements"]
