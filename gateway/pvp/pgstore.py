"""The PvP repository on PostgreSQL: the per-message statements in the transaction's pipeline
(:class:`gateway.pgpipeline.PgPipeline`), so that a message costs a few round trips, not one per
statement. The SQLite repository (:class:`gateway.pvp.store.SqlPvPRepository`) is the oracle:
the same rows, read and written, locked in the same order; what differs is when the driver
waits for the server.

- Writes (legs, messages and their links, inbox items, instructions) are queued: they go with
  the next read the transaction waits for, or with its COMMIT.
- A received message's duplicate check and the legs it names (read ``FOR UPDATE``) are one
  statement (:meth:`PgPvPRepository.inbound_sha`); the message, its links and its inbox item
  are one statement whose id comes back with the next sync (:data:`MessageId`); an outbound
  message needs no id back: its row and its links are one statement with nothing to wait for.
- A leg inserted is held back to the COMMIT (or the next statement that may read it), so that
  the transaction that inserts it and then changes it (a pacs.009 received and applied) writes
  it once.
- The legs a transaction has read for update or inserted are kept with their rows' locks, as it
  last wrote them: the handler that applies a message finds the legs its storing read, with no
  second ``SELECT ... FOR UPDATE``. A savepoint rolled back (its row locks released with it)
  restores what was kept before it.
- The instructions a handler will follow are asked for as soon as its legs are known
  (:meth:`PgPvPRepository.prefetch_instructions`), so they come with its ledger reads.
- Claiming an inbox item marks it processed in the same statement (``UPDATE ... RETURNING``);
  the transaction undoes it if applying fails.

Anything else (views, jobs, the operator's reads) runs through the base class's SQLAlchemy
statements, after the pipeline has been waited for.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from gateway.db import UtcDateTime
from gateway.pgarrays import FEW, any_of, any_params, array_type, pg_array
from gateway.pgpipeline import Pending, PgPipeline
from gateway.pvp.model import FINAL_STATES, Instruction, Leg
from gateway.pvp.rows import (
    inbox_t,
    instruction_of,
    instruction_t,
    instruction_values,
    leg_of,
    leg_t,
    leg_values,
    message_t,
)
from gateway.pvp.store import Direction, MessageId, SqlPvPRepository


class _Table:
    """One table's statements as SQL text, and its rows as named tuples whose date-times are
    in UTC (what ``leg_of`` and ``instruction_of`` read, as from SQLAlchemy's rows)."""

    def __init__(self, table: sa.Table, key: str) -> None:
        self.columns = tuple(table.c.keys())
        self._times = tuple(i for i, c in enumerate(table.c) if isinstance(c.type, UtcDateTime))
        self._row: Any = namedtuple(f"{table.name}_row", self.columns)  # type: ignore[misc]
        self.cols = cols = ", ".join(self.columns)
        marks = ", ".join(["%s"] * len(self.columns))
        self.insert = f"INSERT INTO {table.name} ({cols}) VALUES ({marks})"
        sets = ", ".join(f"{c} = %s" for c in self.columns if c != key)
        self.update = f"UPDATE {table.name} SET {sets} WHERE {key} = %s"
        self._key = key
        self._name = table.name
        self._by_keys: dict[tuple[int, bool], str] = {}
        # Several rows in one statement, a parameter per column (an array of its values): a
        # statement per row was the server's work and the driver's many times over.
        arrays = ", ".join(f"%s::{array_type(c.type)}[]" for c in table.c)
        self.insert_many = f"INSERT INTO {table.name} ({cols}) SELECT * FROM unnest({arrays})"
        news = ", ".join(f"{c} = v.{c}" for c in self.columns if c != key)
        self.update_many = (
            f"UPDATE {table.name} AS t SET {news} FROM unnest({arrays}) AS v({cols})"
            f" WHERE t.{key} = v.{key}"
        )

    def by_keys(self, n: int, *, lock: bool) -> str:
        """The rows of ``n`` keys (:func:`~gateway.pgarrays.any_params` of them), in key
        order, read ``FOR UPDATE`` with ``lock``."""
        n = min(n, FEW + 1)  # more than a few: one text, an array
        sql = self._by_keys.get((n, lock))
        if sql is None:
            sql = (
                f"SELECT {self.cols} FROM {self._name} WHERE {self._key} = ANY({any_of(n)})"
                f" ORDER BY {self._key}{' FOR UPDATE' if lock else ''}"
            )
            self._by_keys[n, lock] = sql
        return sql

    def read(self, keys: Iterable[str], *, lock: bool) -> tuple[str, list[Any]]:
        """:meth:`by_keys` of ``keys`` and its parameters."""
        ordered = sorted(keys)
        return self.by_keys(len(ordered), lock=lock), any_params(ordered)

    def row(self, values: Sequence[Any]) -> Any:
        out = list(values)
        for i in self._times:
            if out[i] is not None:
                out[i] = out[i].astimezone(UTC)
        return self._row._make(out)

    def _bound(self, values: dict[str, Any], names: Iterable[str]) -> list[Any]:
        out = [values[c] for c in names]
        for v in out:
            if isinstance(v, datetime) and v.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
        return out

    def insert_params(self, values: dict[str, Any]) -> list[Any]:
        return self._bound(values, self.columns)

    def update_params(self, values: dict[str, Any]) -> list[Any]:
        out = self._bound(values, (c for c in self.columns if c != self._key))
        out.append(values[self._key])
        return out

    def many_params(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """The parameters of ``insert_many`` and ``update_many``: one array literal per column
        (:func:`~gateway.pgarrays.pg_array`: the driver dumps a list element by element)."""
        return [
            pg_array(column) for column in zip(*(self.insert_params(v) for v in rows), strict=True)
        ]


_LEGS = _Table(leg_t, "uetr")
_INSTRUCTIONS = _Table(instruction_t, "instruction_id")
_MESSAGE_COLS = (
    "direction, sender_bic, receiver_bic, msg_def_id, msg_id, sha256, reason, raw, created_at"
)
_INBOUND_SHA = (
    f"SELECT sha256 FROM {message_t.name} WHERE direction = 'in' AND sender_bic = %s"
    " AND msg_def_id = %s AND msg_id = %s"
)


def _inbound_sha_and_legs(n: int) -> str:
    """The duplicate check with the ``n`` legs a message names, locked: a row per leg (none
    found: one row of NULLs), each with the SHA-256 of the message if received."""
    return _inbound_sha_and_legs_text(min(n, FEW + 1))  # more than a few: one text, an array


@functools.cache
def _inbound_sha_and_legs_text(n: int) -> str:
    return (
        f"WITH l AS MATERIALIZED ({_LEGS.by_keys(n, lock=True)})"
        f" SELECT ({_INBOUND_SHA}), l.* FROM (VALUES (1)) AS one (x) LEFT JOIN l ON true"
        " ORDER BY l.uetr"
    )


def _inbound_sha_legs_and_instructions(n: int, m: int) -> str:
    """:func:`_inbound_sha_and_legs` of ``n`` legs, then the ``m`` instructions that will
    follow them, locked too (after the legs, as a handler locks them): rows of
    ``(0, sha, leg...)`` as there, then ``(1, NULL, NULLs for a leg, instruction...)``."""
    return _inbound_sha_legs_and_instructions_text(min(n, FEW + 1), min(m, FEW + 1))


@functools.cache
def _inbound_sha_legs_and_instructions_text(n: int, m: int) -> str:
    no_leg = ", ".join(["NULL"] * len(_LEGS.columns))
    no_instruction = ", ".join(["NULL"] * len(_INSTRUCTIONS.columns))
    return (
        f"WITH l AS MATERIALIZED ({_LEGS.by_keys(n, lock=True)}),"
        f" i AS MATERIALIZED ({_INSTRUCTIONS.by_keys(m, lock=True)})"
        f" (SELECT 0, ({_INBOUND_SHA}), l.*, {no_instruction}"
        " FROM (VALUES (1)) AS one (x) LEFT JOIN l ON true ORDER BY l.uetr)"
        f" UNION ALL (SELECT 1, NULL, {no_leg}, i.* FROM i)"
    )


# A message and its links as the WITH clause of a statement (a CTE that writes runs once
# whether or not the query reads it): a received one's with its inbox item and its id back,
# an outbound one's with its outbox row (``outbound_with``).
_MESSAGE_WITH_LINKS = (
    f"WITH m AS (INSERT INTO pvp_message ({_MESSAGE_COLS})"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id),"
    " l AS (INSERT INTO pvp_message_leg (uetr, message_id)"
    " SELECT u, m.id FROM m, unnest(%s::text[]) AS u)"
)
_INSERT_INBOUND_ALONE = _MESSAGE_WITH_LINKS + " SELECT id FROM m"
_INSERT_INBOUND_WITH_INBOX = (
    _MESSAGE_WITH_LINKS
    + f", i AS (INSERT INTO {inbox_t.name} (message_id, received_at, available_at, attempts)"
    " SELECT id, %s, %s, 0 FROM m) SELECT id FROM m"
)
# A message and its links in one statement, for a caller that needs no id back (a CTE that
# writes runs once whether or not the query reads it).
_INSERT_MESSAGE_AND_LINKS = (
    f"WITH m AS (INSERT INTO pvp_message ({_MESSAGE_COLS})"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id)"
    " INSERT INTO pvp_message_leg (uetr, message_id) SELECT u, m.id FROM m, unnest(%s::text[]) AS u"
)
# The work lists of the deadline and recovery jobs, their partial indexes' conditions as
# constants in the text (as the SQLite repository's statements have them).
_LOCKED_LEGS_PAST = (
    f"SELECT {_LEGS.cols} FROM pvp_leg WHERE state = 'locked' AND deadline <= %s"
    " ORDER BY deadline LIMIT %s"
)
_INBOX_PENDING = (
    "SELECT message_id FROM pvp_inbox WHERE processed_at IS NULL ORDER BY message_id LIMIT %s"
)
_INBOX_DUE = (
    "SELECT message_id FROM pvp_inbox WHERE processed_at IS NULL AND available_at <= %s"
    " ORDER BY message_id LIMIT %s"
)
_INSERT_INBOX = (
    f"INSERT INTO {inbox_t.name} (message_id, received_at, available_at, attempts)"
    " VALUES (%s, %s, %s, 0)"
)
_CLAIM_INBOX = (
    f"UPDATE {inbox_t.name} SET processed_at = %s, attempts = attempts + 1, last_error = NULL"
    " WHERE message_id = %s AND processed_at IS NULL RETURNING message_id"
)


_Rows = Callable[[], list[tuple[Any, ...]]]
"""The rows of instructions asked for: a queued read's (``Pending.rows``), or rows read."""
_Snapshot = tuple[dict[str, Leg | None], tuple[frozenset[str], _Rows] | None, dict[str, Leg]]


class PgPvPRepository(SqlPvPRepository):
    """:class:`SqlPvPRepository` with its per-message statements in the pipeline (see the
    module docstring). Its SQLAlchemy statements wait for the pipeline first (``conn``)."""

    def __init__(self, conn: Connection, pipe: PgPipeline) -> None:
        self.pipe = pipe
        super().__init__(conn)
        self._held: dict[str, Leg | None] = {}
        """Legs this transaction holds the row locks of, as it last wrote them; None for a
        UETR it read for update and found no leg of (it inserts it, or ignores it)."""
        self._unwritten: dict[str, Leg] = {}
        """Legs inserted, as last changed, held back until :meth:`flush` (the COMMIT)."""
        self._prefetched: tuple[frozenset[str], _Rows] | None = None

    @property
    def conn(self) -> Connection:
        self.flush()  # what SQLAlchemy reads may be these legs
        self.pipe.settle()  # SQLAlchemy cannot run a statement inside the pipeline
        return self._conn

    @conn.setter
    def conn(self, conn: Connection) -> None:
        self._conn = conn

    # savepoints ------------------------------------------------------------

    def snapshot(self) -> object:
        return dict(self._held), self._prefetched, dict(self._unwritten)

    def restore(self, snapshot: object) -> None:
        self._held, self._prefetched, self._unwritten = cast(_Snapshot, snapshot)

    def flush(self) -> None:
        """Insert the legs held back."""
        if self._unwritten:
            legs, self._unwritten = list(self._unwritten.values()), {}
            self._insert(legs)

    def _insert(self, legs: Sequence[Leg]) -> None:
        if len(legs) == 1:
            self.pipe.execute(_LEGS.insert, _LEGS.insert_params(leg_values(legs[0])))
        else:
            self.pipe.execute(_LEGS.insert_many, _LEGS.many_params([leg_values(g) for g in legs]))

    # legs ------------------------------------------------------------------

    def _queue_legs(self, uetrs: Iterable[str], *, lock: bool = True) -> Pending | None:
        missing = sorted(set(uetrs) - self._held.keys())
        if not missing:
            return None
        return self.pipe.query(*_LEGS.read(missing, lock=lock))

    def _hold(self, pending: Pending | None, uetrs: Iterable[str]) -> None:
        """Keep the legs of ``uetrs`` read for update (and which had none)."""
        if pending is None:
            return
        for uetr in uetrs:
            self._held.setdefault(uetr, None)
        for row in pending.rows():
            leg = leg_of(_LEGS.row(row))
            self._held[leg.uetr] = leg

    def _kept(self, uetrs: Iterable[str]) -> dict[str, Leg]:
        return {u: leg for u in uetrs if (leg := self._held.get(u)) is not None}

    def legs_for_update(self, uetrs: Iterable[str]) -> dict[str, Leg]:
        wanted = sorted(set(uetrs))
        self._hold(self._queue_legs(wanted), wanted)
        legs = self._kept(wanted)
        self._open.update(u for u, leg in legs.items() if leg.state not in FINAL_STATES)
        return legs

    def legs(self, uetrs: Iterable[str]) -> dict[str, Leg]:
        wanted = sorted(set(uetrs))
        found = self._kept(wanted)
        pending = self._queue_legs(wanted, lock=False)
        if pending is not None:
            found |= {leg.uetr: leg for leg in (leg_of(_LEGS.row(r)) for r in pending.rows())}
        return dict(sorted(found.items()))

    def locked_legs_past(self, cutoff: datetime, limit: int) -> list[Leg]:
        """With the transaction's BEGIN: one round trip where the job's check took two."""
        self.flush()
        rows = self.pipe.fetch(_LOCKED_LEGS_PAST, (cutoff, limit))
        return [leg_of(_LEGS.row(r)) for r in rows]

    def insert_legs(self, legs: Sequence[Leg]) -> None:
        """Held back (:meth:`flush`), unless a UETR repeats: the database refuses it then."""
        if not legs:
            return
        uetrs = {leg.uetr for leg in legs}
        if len(uetrs) < len(legs) or not uetrs.isdisjoint(self._unwritten):
            self.flush()
            self._insert(legs)
        else:
            self._unwritten.update((leg.uetr, leg) for leg in legs)
        self._held.update((leg.uetr, leg) for leg in legs)

    def update_legs(self, legs: Sequence[Leg]) -> None:
        if not legs:
            return
        updated = []
        for leg in legs:
            self._count_if_final(leg)
            if leg.uetr in self._unwritten:
                self._unwritten[leg.uetr] = leg  # inserted as it is now, once
            else:
                updated.append(leg)
        if len(updated) == 1:
            self.pipe.execute(_LEGS.update, _LEGS.update_params(leg_values(updated[0])))
        elif updated:
            values = [leg_values(leg) for leg in updated]
            self.pipe.execute(_LEGS.update_many, _LEGS.many_params(values))
        self._held.update((leg.uetr, leg) for leg in legs)

    # messages --------------------------------------------------------------

    def inbound_sha(
        self,
        sender: str | None,
        msg_def_id: str,
        msg_id: str,
        legs: Iterable[str] = (),
        instructions: Iterable[str] = (),
    ) -> str | None:
        """With the legs read for update, and the instructions that will follow them
        (:meth:`prefetch_instructions` of them then has nothing to ask): one statement."""
        uetrs = list(legs)
        missing = sorted(set(uetrs) - self._held.keys())
        if not missing:
            found = self.pipe.fetch(_INBOUND_SHA, (sender, msg_def_id, msg_id))
            return None if not found else str(found[0][0])
        keys = sorted(set(instructions))
        if keys:
            rows = self.pipe.fetch(
                _inbound_sha_legs_and_instructions(len(missing), len(keys)),
                (*any_params(missing), *any_params(keys), sender, msg_def_id, msg_id),
            )
            read = [row[1:] for row in rows if row[0] == 0]  # as _inbound_sha_and_legs's
            at = 2 + len(_LEGS.columns)  # the part, the SHA-256, a leg, then an instruction
            found_instructions = [row[at:] for row in rows if row[0] == 1]
            self._prefetched = (frozenset(keys), lambda: found_instructions)
        else:
            read = self.pipe.fetch(
                _inbound_sha_and_legs(len(missing)),
                (*any_params(missing), sender, msg_def_id, msg_id),
            )
        for uetr in missing:
            self._held.setdefault(uetr, None)
        for row in read:
            if row[1] is not None:
                leg = leg_of(_LEGS.row(row[1 : 1 + len(_LEGS.columns)]))
                self._held[leg.uetr] = leg
        sha = read[0][0]
        return None if sha is None else str(sha)

    def add_inbound(
        self,
        raw: bytes,
        sha256: str,
        now: datetime,
        *,
        sender: str | None,
        receiver: str | None,
        msg_def_id: str,
        msg_id: str,
        uetrs: Iterable[str] = (),
        inbox_at: datetime | None = None,
    ) -> MessageId:
        """One statement, queued; its id comes with the next sync."""
        values = ("in", sender, receiver, msg_def_id, msg_id, sha256, None, raw, now)
        links = pg_array(list(dict.fromkeys(uetrs)))
        got: list[int] = []  # by the sync that brings it (the commit's at the latest)

        def keep(rows: list[tuple[Any, ...]]) -> None:
            got.append(int(rows[0][0]))

        params: tuple[Any, ...]
        if inbox_at is None:
            sql, params = _INSERT_INBOUND_ALONE, (*values, links)
        else:
            sql, params = _INSERT_INBOUND_WITH_INBOX, (*values, links, now, inbox_at)
        pending = self.pipe.query(sql, params, then=keep)
        return lambda: got[0] if got else int(pending.rows()[0][0])

    def record_message(
        self,
        direction: Direction,
        raw: bytes,
        sha256: str,
        now: datetime,
        *,
        sender: str | None = None,
        receiver: str | None = None,
        msg_def_id: str | None = None,
        msg_id: str | None = None,
        reason: str | None = None,
        uetrs: Iterable[str] = (),
    ) -> None:
        values = (direction, sender, receiver, msg_def_id, msg_id, sha256, reason, raw, now)
        links = pg_array(list(dict.fromkeys(uetrs)))
        self.pipe.execute(_INSERT_MESSAGE_AND_LINKS, (*values, links))

    def outbound_with(
        self,
        raw: bytes,
        sha256: str,
        now: datetime,
        *,
        sender: str,
        receiver: str,
        msg_def_id: str,
        msg_id: str,
        uetrs: Iterable[str] = (),
    ) -> tuple[str, tuple[Any, ...]]:
        values = ("out", sender, receiver, msg_def_id, msg_id, sha256, None, raw, now)
        return _MESSAGE_WITH_LINKS, (*values, pg_array(list(dict.fromkeys(uetrs))))

    # inbox -----------------------------------------------------------------

    def add_inbox(self, message_id: int, now: datetime, available_at: datetime) -> None:
        self.pipe.execute(_INSERT_INBOX, (message_id, now, available_at))

    def inbox_due(self, now: datetime | None, limit: int) -> list[int]:
        if now is None:
            rows = self.pipe.fetch(_INBOX_PENDING, (limit,))
        else:
            rows = self.pipe.fetch(_INBOX_DUE, (now, limit))
        return [int(r[0]) for r in rows]

    def inbox_claim(self, message_id: int, now: datetime, legs: Iterable[str] = ()) -> bool:
        """Row-lock the item and mark it processed, if it was not: one statement, with the
        legs read for update in the same round trip (inbox item first, as on SQLite)."""
        uetrs = list(legs)
        claimed = self.pipe.query(_CLAIM_INBOX, (now, message_id))
        held = self._queue_legs(uetrs)
        taken = bool(claimed.rows())
        self._hold(held, uetrs)
        return taken

    def inbox_done(self, message_id: int, now: datetime) -> None:
        """Nothing left: :meth:`inbox_claim` marked it."""

    # instructions ----------------------------------------------------------

    def prefetch_instructions(self, ids: Iterable[str]) -> None:
        keys = frozenset(ids)
        if keys and (self._prefetched is None or not keys <= self._prefetched[0]):
            query = self.pipe.query(*_INSTRUCTIONS.read(keys, lock=True))
            self._prefetched = (keys, query.rows)

    def instructions_for_update(self, ids: Iterable[str]) -> dict[str, Instruction]:
        keys = set(ids)
        if not keys:
            return {}
        rows: list[tuple[Any, ...]]
        prefetched, self._prefetched = self._prefetched, None  # one use: they may change
        if prefetched is not None and keys <= prefetched[0]:
            rows = prefetched[1]()
        else:
            rows = self.pipe.fetch(*_INSTRUCTIONS.read(keys, lock=True))
        found = (instruction_of(_INSTRUCTIONS.row(r)) for r in rows)
        return {i.instruction_id: i for i in found if i.instruction_id in keys}

    def update_instruction(self, inst: Instruction) -> None:
        self._prefetched = None
        values = instruction_values(inst)
        self.pipe.execute(_INSTRUCTIONS.update, _INSTRUCTIONS.update_params(values))


__all__ = ["PgPvPRepository"]
