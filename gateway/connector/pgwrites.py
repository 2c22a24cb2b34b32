"""The writes of one PostgreSQL write transaction, held back and sent as one statement
(:class:`Writes`), not one per row and per change.

Sent one by one, a PvP's rows cost the server a statement each time a handler writes: a leg
was updated six times in three transactions, a message logged by a statement of its own, a
batch of 100 PvPs written row by row, the simulated bank's account (a row every PvP of a pair
of banks writes) locked from its update to the commit. Held here instead, and sent as the
parts of one statement (data-modifying WITH queries, :func:`flush_sql`):

- rows inserted (PvPs, legs, decisions, outbox and inbox rows, the message log, a simulated
  bank's locks): one ``INSERT ... SELECT * FROM unnest(...)`` per table, over arrays, so that
  the text is one whatever the number of rows and psycopg prepares it (each array sent as
  one literal, :func:`gateway.pgarrays.pg_array`: the driver's dumping of lists element by
  element was ~12 % of the connector's samples under py-spy, and a flush-shaped statement
  costs the client half as much without it);
- a change to a row inserted in the same transaction changes the row to insert; the changes
  to a leg, a PvP or a simulated lock already stored: one ``UPDATE ... FROM unnest`` per
  table, setting only the columns the transaction set (a leg's delivery bookkeeping is
  written by others without the PvP's lock: what this transaction did not set is left as it
  is when the update runs);
- a simulated account's moves, summed per account, and its credits: the last parts, right
  before the COMMIT in the same round trip, so that its row lock is held only for the commit.

What is held is sent (:meth:`Writes.flush`) before any statement that reads what it may have
written, and before the COMMIT (:mod:`gateway.connector.pgtx` does it): a transaction's reads
see its own writes, as before. A read that names the tables it reads (``only``) sends only
what was held for those, so a simulated bank's read of its locks does not send the legs'
updates, nor a read of legs the accounts' moves. A simulated bank's read of its accounts
sends nothing and adds the moves held itself (:meth:`Writes.funds`): sent, they would lock
the account's row from the read to the COMMIT while the transaction's other messages are
handled (an account that only a credit held opens is the exception: its row is sent, and
read again, so that the moves that follow find it). A savepoint keeps a copy of what was held
when it began (:meth:`Writes.copy`), which its rollback brings back: what the block held is
forgotten with what it did (and what the block sent of what was held before it, undone by
the rollback, is sent again).

Failures: a write that fails fails the transaction at its flush, as a queued write failed it
at the next wait or at the commit before; that may now be after the savepoint of the block
that wrote it (the callers take a failed transaction again, one message at a time).
Balances: a simulated account's moves within one transaction are summed before its check
(``available >= 0 AND held >= 0``) sees them; each move is checked against the balance read
before it is made (``gateway.connector.sim``), as before.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from gateway.connector.schema import (
    decisions,
    inbox,
    legs,
    outbox,
    pvp_messages,
    pvps,
    sim_locks,
)
from gateway.pgarrays import array_type, pg_array, rows_params, values_of


class Pipe(Protocol):
    """What a flush needs of the transaction's pipeline: a statement queued, its parameters
    ``$1``, ``$2``, ... (``gateway.connector.pgtx``)."""

    def execute(self, sql: str, params: Sequence[Any]) -> None: ...


class Entry(Protocol):
    """A message log entry (``gateway.connector.outbox.Logged``)."""

    @property
    def pvp_ids(self) -> tuple[str, ...]: ...
    @property
    def direction(self) -> str: ...
    @property
    def peer(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def msg_id(self) -> str: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def sha256(self) -> str: ...
    @property
    def at(self) -> int: ...


def _arrays(table: sa.Table, columns: Sequence[str]) -> str:
    return ", ".join(f"%s::{array_type(table.c[name].type)}[]" for name in columns)


def _insert(table: sa.Table, columns: Sequence[str]) -> str:
    names = ", ".join(columns)
    return f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({_arrays(table, columns)})"


def _update(table: sa.Table, keys: Sequence[str], settable: Sequence[str]) -> str:
    """One UPDATE of many rows, each setting only the columns its flags name."""
    sets = ", ".join(f"{c} = CASE WHEN v.s_{c} THEN v.{c} ELSE t.{c} END" for c in settable)
    names = [*keys, *(n for c in settable for n in (f"s_{c}", c))]
    arrays = [f"%s::{array_type(table.c[k].type)}[]" for k in keys]
    for c in settable:
        arrays += ["%s::boolean[]", f"%s::{array_type(table.c[c].type)}[]"]
    where = " AND ".join(f"t.{k} = v.{k}" for k in keys)
    return (
        f"UPDATE {table.name} AS t SET {sets} FROM unnest({', '.join(arrays)}) "
        f"AS v({', '.join(names)}) WHERE {where}"
    )


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows of values -> one list per column (unnest's arrays)."""
    return [[row[i] for row in rows] for i in range(width)]


PVP_COLUMNS = ("id", "deadline", "condition", "secret", "state", "created_at")
LEG_COLUMNS = tuple(legs.c.keys())
LEG_SETTABLE = (
    "pacs009_msg_id",
    "status",
    "reason",
    "locked_at",
    "acknowledged",
    "decision_sent_at",
    "decision_queued",
    "redeliver_at",
    "redeliveries",
)
"""The columns of a leg the handlers change."""
DECISION_COLUMNS = ("pvp_id", "decision", "reason", "detail", "decided_at")
OUTBOX_COLUMNS = (
    "destination_bic",
    "msg_def_id",
    "msg_id",
    "pvp_id",
    "payload",
    "created_at",
    "available_at",
    "attempts",
    "sent_at",
)
INBOX_COLUMNS = ("sender_bic", "msg_def_id", "msg_id", "sha256", "raw", "received_at", "processed")
SIM_LOCK_COLUMNS = tuple(sim_locks.c.keys())
_MESSAGE_COLUMNS = ("pvp_id", "direction", "peer_bic", "msg_def_id", "msg_id", "sha256", "raw")

# The parts of the one statement a flush sends (:func:`flush_sql`), in their order: each a
# statement over arrays (its text one whatever the number of rows).
_PARTS: tuple[tuple[str, str], ...] = (
    ("pvps", _insert(pvps, PVP_COLUMNS)),
    ("legs", _insert(legs, LEG_COLUMNS)),
    ("leg_sets", _update(legs, ("pvp_id", "leg"), LEG_SETTABLE)),
    (
        "pvp_states",
        "UPDATE pvps AS t SET state = v.state FROM unnest(%s::text[], %s::text[]) "
        "AS v(id, state) WHERE t.id = v.id",
    ),
    ("decisions", _insert(decisions, DECISION_COLUMNS)),
    ("outbox", _insert(outbox, OUTBOX_COLUMNS)),
    ("inbox", _insert(inbox, INBOX_COLUMNS)),
    ("sim_locks", _insert(sim_locks, SIM_LOCK_COLUMNS)),
    (
        "sim_states",
        "UPDATE sim_locks AS t SET state = v.state FROM unnest(%s::text[], %s::text[]) "
        "AS v(uetr, state) WHERE t.uetr = v.uetr",
    ),
    # The message log: ids drawn for the bodies of messages about several PvPs (stored once
    # each, ``message_bodies``), then every row in the log's order (``body``: the number of
    # its body among them, for a row that points to one).
    (
        "bodies",
        "SELECT n, nextval(pg_get_serial_sequence('message_bodies', 'id')) AS id, sha256, raw "
        "FROM unnest(%s::text[], %s::bytea[]) WITH ORDINALITY AS x(sha256, raw, n)",
    ),
    (
        "body_rows",
        "INSERT INTO message_bodies (id, sha256, raw) SELECT id, sha256, raw FROM w_bodies",
    ),
    (
        "log",
        f"INSERT INTO pvp_messages ({', '.join(_MESSAGE_COLUMNS)}, body_id, at) "
        f"SELECT {', '.join('m.' + c for c in _MESSAGE_COLUMNS)}, b.id, m.at "
        f"FROM unnest({_arrays(pvp_messages, [*_MESSAGE_COLUMNS, 'at'])}, %s::bigint[]) "
        f"WITH ORDINALITY AS m({', '.join(_MESSAGE_COLUMNS)}, at, body, o) "
        "LEFT JOIN w_bodies AS b ON b.n = m.body ORDER BY m.o",
    ),
    ("log_plain", _insert(pvp_messages, [*_MESSAGE_COLUMNS, "at"])),
    # A simulated account's moves, by account (one order of row locks for every transaction).
    (
        "moves",
        "UPDATE sim_accounts AS t "
        "SET available = t.available + v.available, held = t.held + v.held "
        "FROM (SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) "
        "AS u(currency, account, available, held) ORDER BY currency, account) AS v "
        "WHERE t.currency = v.currency AND t.account = v.account",
    ),
    # Credits, the accounts opened if need be (by account, as the moves).
    (
        "credits",
        "INSERT INTO sim_accounts (currency, account, available, held) "
        "SELECT currency, account, amount, 0 FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
        "AS v(currency, account, amount) ORDER BY currency, account "
        "ON CONFLICT (currency, account) DO UPDATE "
        "SET available = sim_accounts.available + excluded.available",
    ),
)
_SQL = dict(_PARTS)
_ORDER = {name: i for i, (name, _sql) in enumerate(_PARTS)}
_WIDTHS = {name: sql.count("%s") for name, sql in _PARTS}
_flush_sql: dict[tuple[tuple[str, ...], tuple[int, ...]], str] = {}


def flush_sql(parts: tuple[str, ...], rows: tuple[int, ...]) -> str:
    """The one statement that sends the parts named (in ``_PARTS``' order): each but the
    last a data-modifying WITH query. Its parts run as one, see the same snapshot and are
    checked (keys, references) at its end; no row is written by two of them (what changes a
    row inserted in the same flush changes the row to insert, and an account both moved and
    credited is credited by a statement of its own after it). Only the parts with rows are
    sent: an empty array costs the driver as much to send as a full one. A transaction of
    one kind writes the same tables each time, so the texts are few, each prepared. ``rows``:
    each part's number of rows if it has up to ``pgarrays.FEW_ROWS``, sent as rows of parameters
    (:func:`values_of`: most parts of an unbatched PvP's flush), else 0 (arrays)."""
    sql = _flush_sql.get((parts, rows))
    if sql is None:
        texts = [values_of(_SQL[p], n) if n else _SQL[p] for p, n in zip(parts, rows, strict=True)]
        *first, last = zip(parts, texts, strict=True)
        with_ = ", ".join(f"w_{name} AS ({text})" for name, text in first)
        sql = _numbered(f"WITH {with_} {last[1]}" if first else last[1])
        _flush_sql[parts, rows] = sql
    return sql


def _numbered(sql: str) -> str:
    """``sql`` with PostgreSQL's own placeholders (``$1``, ...) for psycopg's ``%s``: sent
    as it is (:class:`Pipe`'s ``execute``), not parsed again at every execution (psycopg
    caches its parse only of statements of up to 50 parameters, and a flush often has more)."""
    pieces = sql.split("%s")
    return "".join(f"{piece}${i}" for i, piece in enumerate(pieces[:-1], 1)) + pieces[-1]


CREDIT_SIM_ACCOUNTS = _numbered(_SQL["credits"])


RECORD_SENT = (
    "UPDATE outbox AS t SET sent_at = v.sent_at, attempts = v.attempts "
    "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS v(id, sent_at, attempts) "
    "WHERE t.id = v.id"
)
"""Deliveries recorded: each row's ``sent_at`` and ``attempts``, one statement for them all."""

_LEG_INDEX = {name: i for i, name in enumerate(LEG_COLUMNS)}
_PVP_STATE = PVP_COLUMNS.index("state")
_SIM_LOCK_STATE = SIM_LOCK_COLUMNS.index("state")

PVP_TABLES = frozenset({"pvps", "legs", "decisions"})
"""What the reads of PvPs with their legs and decisions read."""
INBOX_TABLES = frozenset({"inbox"})
"""What the duplicate check of a received message reads."""
_OUTBOX_TABLES = frozenset({"outbox", "inbox"})


class Writes:
    """What one transaction wrote and has not sent yet (see the module docstring)."""

    __slots__ = (
        "credits",
        "decisions",
        "inbox",
        "leg_sets",
        "legs",
        "log",
        "moves",
        "outbox",
        "pvp_states",
        "pvps",
        "sim_locks",
        "sim_states",
    )

    def __init__(self) -> None:
        self.pvps: dict[str, tuple[Any, ...]] = {}
        self.legs: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.leg_sets: dict[tuple[str, str], dict[str, Any]] = {}
        self.pvp_states: dict[str, str] = {}
        self.decisions: list[tuple[Any, ...]] = []
        self.outbox: list[tuple[Any, ...]] = []
        self.inbox: list[tuple[Any, ...]] = []
        self.sim_locks: dict[str, tuple[Any, ...]] = {}
        self.sim_states: dict[str, str] = {}
        self.moves: dict[tuple[str, str], tuple[int, int]] = {}
        self.credits: dict[tuple[str, str], int] = {}
        self.log: list[Entry] = []

    def copy(self) -> Writes:
        """What is held now, kept aside (a savepoint's): rows are never changed in place."""
        other = Writes()
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(other, name, value.copy())
        return other

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__slots__)

    # --- what the transaction writes ---------------------------------------------------------

    def insert_pvps(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.pvps[row["id"]] = tuple(row[c] for c in PVP_COLUMNS)

    def insert_legs(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.legs[(row["pvp_id"], row["leg"])] = tuple(row[c] for c in LEG_COLUMNS)

    def settable(self, values: Collection[str]) -> bool:
        """Whether a leg's change to ``values`` can be held (the columns handlers change)."""
        return all(name in _LEG_INDEX and name in LEG_SETTABLE for name in values)

    def update_leg(self, pvp_id: str, leg: str, values: dict[str, Any]) -> None:
        """Columns of a leg set (:meth:`settable` ones)."""
        key = (pvp_id, leg)
        new = self.legs.get(key)
        if new is not None:
            row = list(new)
            for name, value in values.items():
                row[_LEG_INDEX[name]] = value
            self.legs[key] = tuple(row)
            return
        old = self.leg_sets.get(key)
        self.leg_sets[key] = dict(values) if old is None else {**old, **values}

    def set_pvp_state(self, pvp_id: str, state: str) -> None:
        new = self.pvps.get(pvp_id)
        if new is not None:
            row = list(new)
            row[_PVP_STATE] = state
            self.pvps[pvp_id] = tuple(row)
        else:
            self.pvp_states[pvp_id] = state

    def insert_decision(self, row: dict[str, Any]) -> None:
        self.decisions.append(tuple(row[c] for c in DECISION_COLUMNS))

    def insert_outbox(self, rows: Iterable[dict[str, Any]]) -> None:
        self.outbox.extend(tuple(row[c] for c in OUTBOX_COLUMNS) for row in rows)

    def insert_inbox(self, row: dict[str, Any]) -> None:
        self.inbox.append(tuple(row[c] for c in INBOX_COLUMNS))

    def insert_sim_lock(self, values: Sequence[Any]) -> None:
        """A simulated lock's row, its columns in the table's order."""
        self.sim_locks[values[0]] = tuple(values)

    def set_sim_lock_state(self, uetr: str, state: str) -> None:
        new = self.sim_locks.get(uetr)
        if new is not None:
            row = list(new)
            row[_SIM_LOCK_STATE] = state
            self.sim_locks[uetr] = tuple(row)
        else:
            self.sim_states[uetr] = state

    def move(self, currency: str, account: str, available: int, held: int) -> None:
        """Add to an existing account's funds."""
        key = (currency, account)
        was = self.moves.get(key, (0, 0))
        self.moves[key] = (was[0] + available, was[1] + held)

    def credit(self, currency: str, account: str, amount: int) -> None:
        """Credit an account, opening it if need be."""
        key = (currency, account)
        self.credits[key] = self.credits.get(key, 0) + amount

    def add_log(self, entries: Iterable[Entry]) -> None:
        self.log.extend(entries)

    def opens(self, currency: str, account: str) -> bool:
        """Whether a credit held for the account would open it if it had no row."""
        return (currency, account) in self.credits

    def funds(self, currency: str, account: str, stored: tuple[int, int]) -> tuple[int, int]:
        """An account's ``(available, held)`` as stored (as the transaction reads it) with the
        moves and credits held for it added: what a read would see after a flush, without
        sending them, so that the account's row is locked with the COMMIT only."""
        key = (currency, account)
        available, held = self.moves.get(key, (0, 0))
        return stored[0] + available + self.credits.get(key, 0), stored[1] + held

    # --- sent ---------------------------------------------------------------------------------

    def flush(self, pipe: Pipe, only: frozenset[str] | None = None) -> None:
        """Queue what is held (for the tables ``only`` names, else all) in ``pipe``: one
        statement (:func:`flush_sql`), the simulated accounts' moves and credits its last
        parts."""
        params: dict[str, list[list[Any]]] = {}
        if only is None or only & PVP_TABLES:
            self._pvp_params(params)
        if only is None or only & _OUTBOX_TABLES:
            if self.outbox:
                params["outbox"] = _columns(self.outbox, len(OUTBOX_COLUMNS))
                self.outbox = []
            if self.inbox:
                params["inbox"] = _columns(self.inbox, len(INBOX_COLUMNS))
                self.inbox = []
        if only is None or "sim_locks" in only:
            if self.sim_locks:
                rows = list(self.sim_locks.values())
                params["sim_locks"] = _columns(rows, len(SIM_LOCK_COLUMNS))
                self.sim_locks = {}
            if self.sim_states:
                uetrs = sorted(self.sim_states)
                params["sim_states"] = [uetrs, [self.sim_states[u] for u in uetrs]]
                self.sim_states = {}
        if only is None and self.log:
            self._log_params(params)
        both: list[list[Any]] = []
        if (only is None or "sim_accounts" in only) and (self.moves or self.credits):
            both = self._account_params(params)
        if params:
            parts = tuple(sorted(params, key=_ORDER.__getitem__))
            counts: list[int] = []
            values: list[Any] = []
            for name in parts:
                n, part_values = rows_params(params[name])
                counts.append(n)
                values += part_values
            pipe.execute(flush_sql(parts, tuple(counts)), values)
        if both:
            pipe.execute(CREDIT_SIM_ACCOUNTS, [pg_array(column) for column in both])

    def _account_params(self, params: dict[str, list[list[Any]]]) -> list[list[Any]]:
        """The moves' and credits' parts; the credits of accounts also moved, returned."""
        if self.moves:
            keys = sorted(self.moves)
            moved = [self.moves[k] for k in keys]
            params["moves"] = [
                [k[0] for k in keys],
                [k[1] for k in keys],
                [m[0] for m in moved],
                [m[1] for m in moved],
            ]
        credits: list[list[Any]] = [[], [], []]
        both: list[list[Any]] = [[], [], []]
        for key in sorted(self.credits):
            into = both if key in self.moves else credits
            into[0].append(key[0])
            into[1].append(key[1])
            into[2].append(self.credits[key])
        if credits[0]:
            params["credits"] = credits
        self.moves, self.credits = {}, {}
        return both if both[0] else []

    def _pvp_params(self, params: dict[str, list[list[Any]]]) -> None:
        if self.pvps:
            params["pvps"] = _columns(list(self.pvps.values()), len(PVP_COLUMNS))
            self.pvps = {}
        if self.legs:
            params["legs"] = _columns(list(self.legs.values()), len(LEG_COLUMNS))
            self.legs = {}
        if self.leg_sets:
            sets: list[list[Any]] = [[] for _ in range(_WIDTHS["leg_sets"])]
            for (pvp_id, leg), values in sorted(self.leg_sets.items()):
                sets[0].append(pvp_id)
                sets[1].append(leg)
                for i, name in enumerate(LEG_SETTABLE):
                    given = name in values
                    sets[2 + 2 * i].append(given)
                    sets[3 + 2 * i].append(values[name] if given else None)
            params["leg_sets"] = sets
            self.leg_sets = {}
        if self.pvp_states:
            ids = sorted(self.pvp_states)
            params["pvp_states"] = [ids, [self.pvp_states[i] for i in ids]]
            self.pvp_states = {}
        if self.decisions:
            params["decisions"] = _columns(self.decisions, len(DECISION_COLUMNS))
            self.decisions = []

    def _log_params(self, params: dict[str, list[list[Any]]]) -> None:
        rows: list[tuple[Any, ...]] = []
        bodies: list[int | None] = []
        body_sha: list[str] = []
        body_raw: list[bytes] = []
        for e in self.log:
            if len(e.pvp_ids) == 1:
                one = (e.pvp_ids[0], e.direction, e.peer, e.name, e.msg_id, e.sha256, e.raw, e.at)
                rows.append(one)
                bodies.append(None)
            elif e.pvp_ids:
                body_sha.append(e.sha256)
                body_raw.append(e.raw)
                for p in e.pvp_ids:
                    rows.append((p, e.direction, e.peer, e.name, e.msg_id, e.sha256, b"", e.at))
                    bodies.append(len(body_sha))
        self.log = []
        if not rows:
            return
        log = _columns(rows, len(_MESSAGE_COLUMNS) + 1)
        if body_sha:
            params["bodies"] = [body_sha, body_raw]
            params["body_rows"] = []
            params["log"] = [*log, bodies]
        else:
            params["log_plain"] = log


__all__ = ["INBOX_TABLES", "PVP_TABLES", "RECORD_SENT", "Writes", "flush_sql"]
