"""The handlers' repository on PostgreSQL (:class:`PgRepository`): the legs a message names
cost one round trip, shared with its duplicate check, what a transaction has read of a PvP
it locked is not read again, and what it writes goes out in one statement.

:class:`~gateway.connector.repository.SqlRepository` is the oracle: the same rows are read and
written, with the same values, and a PvP is locked before its rows are read; what differs is
when the driver waits, how often it reads, and how many statements carry the writes.

- The legs a message names (:meth:`PgRepository.expect`) are read at once: their PvPs locked
  (``SELECT ... FOR UPDATE``, by id: one order for every transaction that locks several), then
  every leg of those PvPs with the PvP and its decision. Both go into the transaction's
  pipeline (:mod:`gateway.connector.pgtx`) and come with the message's duplicate check.
- A PvP the transaction locked, or inserted, is kept as the transaction last wrote it: its
  state, its legs and its decision. Its lock keeps other writers of those out until the
  commit (a leg's delivery bookkeeping, which others may write unlocked, the handlers write
  column by column), so the handlers' later reads of it (:meth:`PgRepository.find_leg`,
  ``read_legs``, ``read_decision``, ...) need no round trip.
- A savepoint rolled back forgets it all (``pgtx``): what it undid, and the locks it released.
- Its writes are held back in the transaction (:mod:`gateway.connector.pgwrites`): a leg's
  changes become one row of one UPDATE of the transaction's legs, setting only the columns
  it set; a PvP's completion (``store.COMPLETE_PVP``) is decided from the legs it keeps.
- The PostgreSQL-only statements of delivery (the outbox rows it claims and records) and of
  a trade's check that its PvP is new take arrays, so that their text is one whatever the
  number of ids, and psycopg prepares them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from gateway.connector import pgtx, pgwrites, store
from gateway.connector.model import Decision, LegStatus, PvPState
from gateway.connector.outbox import OutboxRow, Work
from gateway.connector.repository import InboxKey, SqlRepository
from gateway.connector.rows import (
    Found,
    LegRow,
    PvPRow,
    QueuedDecision,
    QueuedLeg,
    changed_leg,
)
from gateway.connector.schema import decisions, legs, pvps
from gateway.connector.store import DECISION_COLUMNS, PVP_COLUMNS
from gateway.pgarrays import FEW, any_of, any_params
from gateway.pgpipeline import Pending
from gateway.sqlite.fastsql import raise_driver_error

# The PvPs of some legs (or some PvPs) locked, by
# id (one order for every transaction that locks several at once), then every leg of theirs
# with its PvP and decision, as SELECT_LEG_BY_UETR reads one; sent together, one round trip.
_UETRS = sa.bindparam("uetrs", type_=ARRAY(sa.String))
_PVP_IDS = sa.bindparam("pvp_ids", type_=ARRAY(sa.String))
_LOCK_PVPS_ORDERED = sa.select(pvps.c.id).order_by(pvps.c.id).with_for_update(of=pvps)
_LOCK_PVPS_OF_UETRS = _LOCK_PVPS_ORDERED.join(legs, legs.c.pvp_id == pvps.c.id).where(
    legs.c.uetr == sa.any_(_UETRS)
)
_LOCK_PVPS_BY_ID = _LOCK_PVPS_ORDERED.where(pvps.c.id == sa.any_(_PVP_IDS))
_LEGS_WITH_PVPS = (
    sa.select(legs, *PVP_COLUMNS, *DECISION_COLUMNS)
    .select_from(
        legs.join(pvps, pvps.c.id == legs.c.pvp_id).outerjoin(
            decisions, decisions.c.pvp_id == legs.c.pvp_id
        )
    )
    .order_by(legs.c.pvp_id, legs.c.leg)
)
_SELECT_PVPS_OF_UETRS = _LEGS_WITH_PVPS.where(
    legs.c.pvp_id.in_(sa.select(legs.c.pvp_id).where(legs.c.uetr == sa.any_(_UETRS)))
)
_SELECT_PVPS_BY_ID = _LEGS_WITH_PVPS.where(legs.c.pvp_id == sa.any_(_PVP_IDS))
_SELECT_PVP_IDS = sa.select(pvps.c.id).where(pvps.c.id == sa.any_(_PVP_IDS))
# The same for one UETR or PvP (a message of one transaction, every message unbatched): of an
# array parameter the planner knows nothing, so a prepared statement's generic plan looked
# dearer than a plan made for the values at hand, and PostgreSQL planned the read of the legs
# with their PvPs again at every execution, ~600 of its ~760 µs of server CPU a call
# (``gateway.pgarrays.any_of``). With one value the generic plan is kept.
_UETR = sa.bindparam("uetr", type_=sa.String)
_PVP_ID = sa.bindparam("pvp_id", type_=sa.String)
_LOCK_PVPS_OF_UETR = _LOCK_PVPS_ORDERED.join(legs, legs.c.pvp_id == pvps.c.id).where(
    legs.c.uetr == _UETR
)
_LOCK_PVP_BY_ID = _LOCK_PVPS_ORDERED.where(pvps.c.id == _PVP_ID)
_SELECT_PVPS_OF_UETR = _LEGS_WITH_PVPS.where(
    legs.c.pvp_id.in_(sa.select(legs.c.pvp_id).where(legs.c.uetr == _UETR))
)
_SELECT_PVP_BY_ID = _LEGS_WITH_PVPS.where(legs.c.pvp_id == _PVP_ID)
_Read = tuple[sa.Select[Any], sa.Select[Any], str]
_Reads = tuple[_Read, _Read]
"""The lock and the read for one value, with its parameter's name, then for several."""
_OF_UETRS: _Reads = (
    (_LOCK_PVPS_OF_UETR, _SELECT_PVPS_OF_UETR, "uetr"),
    (_LOCK_PVPS_OF_UETRS, _SELECT_PVPS_OF_UETRS, "uetrs"),
)
_BY_ID: _Reads = (
    (_LOCK_PVP_BY_ID, _SELECT_PVP_BY_ID, "pvp_id"),
    (_LOCK_PVPS_BY_ID, _SELECT_PVPS_BY_ID, "pvp_ids"),
)
# A received message's duplicate check (``store.SELECT_INBOX_SHA``) as the last column of the
# read of the legs it names: the SHA-256 of the message if received before. One statement
# where the check was one more, in the same round trip.
_SHA = store.SELECT_INBOX_SHA.scalar_subquery().label("received_sha")
_OF_UETRS_CHECKED: _Reads = (
    (_OF_UETRS[0][0], _OF_UETRS[0][1].add_columns(_SHA), _OF_UETRS[0][2]),
    (_OF_UETRS[1][0], _OF_UETRS[1][1].add_columns(_SHA), _OF_UETRS[1][2]),
)
_NOTHING: frozenset[str] = frozenset()
"""A row lock reads no row the transaction holds back: nothing is sent before it."""
_PVP_AND_INBOX_TABLES = pgwrites.PVP_TABLES | pgwrites.INBOX_TABLES


def _lock_and_read(
    tx: pgtx.PgTx, reads: _Reads, values: list[str], received: InboxKey | None = None
) -> Pending:
    """The PvPs that ``values`` name locked, then read with all their legs, queued in the
    transaction's pipeline: the statements of one value for one (a plan PostgreSQL keeps),
    else the arrays'. With ``received``, each row ends with that message's duplicate check
    (``_OF_UETRS_CHECKED``)."""
    lock, select, name = reads[0] if len(values) == 1 else reads[1]
    params: dict[str, Any] = {name: values[0] if len(values) == 1 else values}
    pgtx.send(tx, lock, params, _NOTHING)
    if received is None:
        return pgtx.query(tx, select, params, pgwrites.PVP_TABLES)
    params["sender_bic"], params["msg_def_id"], params["msg_id"] = received
    return pgtx.query(tx, select, params, _PVP_AND_INBOX_TABLES)


def existing_pvps(tx: pgtx.PgTx, pvp_ids: list[str]) -> list[tuple[str]]:
    """Which of ``pvp_ids`` are PvPs (rows of their ids): one statement whatever their
    number (``store.SELECT_PVP_IDS_IN``'s text varies with it)."""
    return pgtx.query(tx, _SELECT_PVP_IDS, {"pvp_ids": pvp_ids}, pgwrites.PVP_TABLES).rows()


# The outbox rows delivery claims (``gateway.connector.delivery.InFlight``), as
# ``store.SELECT_DUE_OUTBOX`` and ``SELECT_UNSENT_OUTBOX_BY_MSG_IDS`` select them but with arrays
# for their lists, so that the text is one whatever their lengths (prepared by psycopg), run
# on the reader's driver connection.
_OUTBOX_ROW = (
    "SELECT id, destination_bic, msg_def_id, msg_id, pvp_id, payload, attempts FROM outbox"
)
# The rows in flight (up to 1,024) are the oldest unsent ones, the first the scan meets: each
# is looked up in a hash of the set (``NOT IN`` a subquery), not compared with every id of
# it (``<> ALL``, in the generic plan of a prepared statement: 30-40 ms a claim with 1,024 in
# flight, 2 ms hashed).
_DUE_OUTBOX = (
    f"{_OUTBOX_ROW} WHERE sent_at IS NULL AND available_at <= %s"
    " AND id NOT IN (SELECT unnest(%s::bigint[])) ORDER BY id LIMIT %s"
)


@functools.cache
def _unsent_outbox_by_msg_ids(n: int) -> str:
    """A thread's own rows, a message or two, by their ids (``ix_outbox_msg_id``): ``(sent_at
    IS NULL) IS TRUE``, which the partial index of unsent rows does not serve. With ``sent_at
    IS NULL`` the generic plan walked that index in id order, filtering on the message ids:
    every unsent row of a backlog (1,500: ~1.5 ms a call, against ~0.06 ms by message id).
    The ids of ``n`` messages as :func:`~gateway.pgarrays.any_of` has them: of one array
    parameter the planner knows nothing, and planned the look-up again at every call."""
    return (
        f"{_OUTBOX_ROW} WHERE msg_id = ANY({any_of(min(n, FEW + 1))})"
        " AND (sent_at IS NULL) IS TRUE AND available_at <= %s ORDER BY id"
    )


def _driver_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[OutboxRow]:
    driver: Any = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor:
            cursor.execute(sql, params)
            return [OutboxRow(*r) for r in cursor.fetchall()]
    except Exception as exc:
        raise_driver_error(conn, exc, sql, params)


def due_outbox(conn: Connection, now: int, busy: Sequence[int], limit: int) -> list[OutboxRow]:
    """Unsent rows due at ``now`` but those in ``busy``, oldest first, at most ``limit``."""
    return _driver_rows(conn, _DUE_OUTBOX, (now, list(busy), limit))


def unsent_outbox(conn: Connection, msg_ids: Sequence[str], now: int) -> list[OutboxRow]:
    """The unsent rows due at ``now`` of the messages ``msg_ids``, oldest first."""
    sql = _unsent_outbox_by_msg_ids(len(msg_ids))
    return _driver_rows(conn, sql, (*any_params(msg_ids), now))


def record_sent(conn: Connection, records: Sequence[tuple[int, int, int]]) -> None:
    """Deliveries recorded, (outbox id, sent at, attempts) each, in one statement, in the
    write transaction ``conn`` is in."""
    tx = pgtx.tx_of(conn)
    assert tx is not None
    params = [[r[i] for r in records] for i in range(3)]
    pgtx.execute(tx, pgwrites.RECORD_SENT, params)


_COMPLETED = {PvPState.COMMITTED: PvPState.SETTLED, PvPState.ABORTED: PvPState.CANCELLED}
"""What ``store.COMPLETE_PVP`` makes of a PvP once every leg is acknowledged."""


_Q = TypeVar("_Q", QueuedLeg, QueuedDecision)
_Renew = Callable[[_Q, PvPRow, LegRow], _Q | None]
"""A queued item made again from its PvP and leg as locked, or None if it left its queue."""


class _Known:
    """What one transaction knows of the PvPs it locked or inserted, as it last wrote them."""

    __slots__ = ("asked", "checks", "decisions", "legs", "loading", "pvps", "uetrs")

    def __init__(self) -> None:
        self.pvps: dict[str, PvPRow] = {}
        self.legs: dict[str, dict[str, LegRow]] = {}
        """Each PvP's legs by name."""
        self.decisions: dict[str, Decision | None] = {}
        self.uetrs: dict[str, tuple[str, str]] = {}
        """UETR -> (PvP, leg)."""
        self.loading: list[tuple[Pending, bool]] = []
        """Reads queued (``_SELECT_PVPS_...``), not taken in yet, and whether each row ends
        with a duplicate check (``_OF_UETRS_CHECKED``)."""
        self.asked: set[str] = set()
        """UETRs asked for by ``loading``."""
        self.checks: dict[InboxKey, Pending] = {}
        """Duplicate checks asked for with a read of ``loading``, not taken yet."""

    def add(self, pvp: PvPRow, legs: Sequence[LegRow], decision: Decision | None) -> None:
        self.pvps[pvp.id] = pvp
        self.legs[pvp.id] = {leg.leg: leg for leg in legs}
        self.decisions[pvp.id] = decision
        for leg in legs:
            self.uetrs[leg.uetr] = (pvp.id, leg.leg)

    def take_in(self) -> None:
        """What the queued reads brought (a round trip unless they came in already). A PvP
        known already is kept as it is: the read saw what the transaction wrote, no more."""
        loading, self.loading = self.loading, []
        self.asked.clear()
        for pending, checked in loading:
            read: dict[str, list[Found]] = {}
            cut = -1 if checked else None
            for row in pending.rows():
                found = store.found(row[:cut])
                read.setdefault(found.pvp.id, []).append(found)
            for pvp_id, rows in read.items():
                if pvp_id not in self.pvps:
                    self.add(rows[0].pvp, [f.leg for f in rows], rows[0].decision)

    def leg(self, pvp_id: str, values: dict[str, Any], name: str) -> None:
        """A leg's columns as an UPDATE just set them (if the PvP is known)."""
        legs = self.legs.get(pvp_id)
        if legs is not None:
            legs[name] = changed_leg(legs[name], values)


class PgRepository(SqlRepository):
    """:class:`SqlRepository` for PostgreSQL: what a transaction read of the PvPs it locked,
    and wrote since, is kept in its ``pgtx.PgTx`` (one repository serves every thread)."""

    def _known(self, work: Work) -> tuple[pgtx.PgTx, _Known] | None:
        tx = pgtx.tx_of(work.conn)
        if tx is None:
            return None
        if tx.state is None:
            tx.state = _Known()
        known: _Known = tx.state
        if known.loading:
            known.take_in()
        return tx, known

    def _load(self, work: Work, uetrs: list[str], received: InboxKey | None = None) -> None:
        """Queue the read of the PvPs of ``uetrs``, locked, with all their legs (and with
        ``received``, that message's duplicate check)."""
        tx = pgtx.tx_of(work.conn)
        assert tx is not None and isinstance(tx.state, _Known)
        # The lock before the writes held back (none changes which PvP a UETR names): rows of
        # legs written before the PvPs are locked are held against a holder of those locks.
        if received is None:
            tx.state.loading.append((_lock_and_read(tx, _OF_UETRS, uetrs), False))
        else:
            pending = _lock_and_read(tx, _OF_UETRS_CHECKED, uetrs, received)
            tx.state.loading.append((pending, True))
            tx.state.checks[received] = pending
        tx.state.asked.update(uetrs)

    # --- reads ---

    def expect(self, work: Work, uetrs: Sequence[str], received: InboxKey | None = None) -> None:
        """The legs' read queued, with ``received``'s duplicate check as its last column
        (:meth:`inbox_sha` takes it from there when the read found a leg)."""
        tx = pgtx.tx_of(work.conn)
        if tx is None:
            return
        if tx.state is None:
            tx.state = _Known()
        known: _Known = tx.state
        wanted = [u for u in dict.fromkeys(uetrs) if u not in known.uetrs and u not in known.asked]
        if wanted:
            self._load(work, wanted, received)

    def find_leg(self, work: Work, uetr: str) -> Found | None:
        at = self._known(work)
        if at is None:
            return super().find_leg(work, uetr)
        _tx, known = at
        hit = known.uetrs.get(uetr)
        if hit is None:
            self._load(work, [uetr])
            known.take_in()
            hit = known.uetrs.get(uetr)
            if hit is None:
                return None
        pvp_id, name = hit
        return Found(known.pvps[pvp_id], known.legs[pvp_id][name], known.decisions[pvp_id])

    def _lock_all(self, work: Work, pvp_ids: Sequence[str]) -> _Known | None:
        """The PvPs of ``pvp_ids`` the transaction does not know yet locked, in id order, and
        read with all their legs: one round trip for them all."""
        at = self._known(work)
        if at is None:
            return None
        tx, known = at
        wanted = sorted({p for p in pvp_ids if p not in known.pvps})
        if wanted:
            known.loading.append((_lock_and_read(tx, _BY_ID, wanted), False))
            known.take_in()
        return known

    def _locked_again(self, work: Work, queued: list[_Q], renew: _Renew[_Q]) -> list[_Q]:
        """Batched mode: what waits in a queue, read unlocked, with its PvPs locked and known at
        once, each item ``renew``-ed from its PvP and leg as they are now (None: it left the
        queue between the read and the lock, its PvP aborted meanwhile)."""
        known = self._lock_all(work, [q.pvp.id for q in queued]) if queued else None
        if known is None:
            return queued
        fresh: list[_Q] = []
        for q in queued:
            pvp = known.pvps.get(q.pvp.id)
            leg = known.legs.get(q.pvp.id, {}).get(q.leg.leg)
            item = None if pvp is None or leg is None else renew(q, pvp, leg)
            if item is not None:
                fresh.append(item)
        return fresh

    def queued_legs(self, work: Work, limit: int) -> list[QueuedLeg]:
        """The queued legs' PvPs locked and known at once. A simulated bank answers the
        pacs.009 made of them in this transaction; its answer then finds every leg known (no
        lock and read per message), and each leg's changes, instructed then locked, go out as
        one UPDATE with the COMMIT."""

        def renew(q: QueuedLeg, pvp: PvPRow, leg: LegRow) -> QueuedLeg | None:
            waiting = pvp.state == PvPState.PENDING and leg.status == LegStatus.QUEUED
            return QueuedLeg(leg, pvp, q.created_at) if waiting else None

        return self._locked_again(work, super().queued_legs(work, limit), renew)

    def queued_decisions(self, work: Work, limit: int) -> list[QueuedDecision]:
        """As :meth:`queued_legs`, for the decisions waiting for their message."""

        def renew(q: QueuedDecision, pvp: PvPRow, leg: LegRow) -> QueuedDecision | None:
            return QueuedDecision(leg, pvp, q.decision, q.reason) if leg.decision_queued else None

        return self._locked_again(work, super().queued_decisions(work, limit), renew)

    def read_pvp(self, work: Work, pvp_id: str, *, for_update: bool = False) -> PvPRow:
        at = self._known(work)
        if at is None:
            return super().read_pvp(work, pvp_id, for_update=for_update)
        if for_update:
            self._lock_all(work, [pvp_id])
        pvp = at[1].pvps.get(pvp_id)
        return super().read_pvp(work, pvp_id) if pvp is None else pvp

    def read_legs(self, work: Work, pvp_id: str) -> list[LegRow]:
        at = self._known(work)
        legs = None if at is None else at[1].legs.get(pvp_id)
        if legs is None:
            return super().read_legs(work, pvp_id)
        return [legs[name] for name in sorted(legs)]

    def read_leg(self, work: Work, pvp_id: str, leg: str) -> LegRow:
        at = self._known(work)
        legs = None if at is None else at[1].legs.get(pvp_id)
        return super().read_leg(work, pvp_id, leg) if legs is None else legs[leg]

    def read_decision(self, work: Work, pvp_id: str) -> Decision | None:
        at = self._known(work)
        if at is None or pvp_id not in at[1].decisions:
            return super().read_decision(work, pvp_id)
        return at[1].decisions[pvp_id]

    def inbox_sha(self, work: Work, sender_bic: str, msg_def_id: str, msg_id: str) -> str | None:
        tx = pgtx.tx_of(work.conn)
        if tx is None:
            return super().inbox_sha(work, sender_bic, msg_def_id, msg_id)
        known = tx.state if isinstance(tx.state, _Known) else None
        asked = None if known is None else known.checks.pop((sender_bic, msg_def_id, msg_id), None)
        if asked is not None:
            found = asked.rows()
            if found:  # else no leg came back, and the check with it: asked alone below
                return cast(str | None, found[0][-1])
        key = {"sender_bic": sender_bic, "msg_def_id": msg_def_id, "msg_id": msg_id}
        rows = pgtx.query(tx, store.SELECT_INBOX_SHA, key, pgwrites.INBOX_TABLES).rows()
        return rows[0][0] if rows else None

    # --- writes: held back in the transaction (``pgwrites``), and what they set, kept ---

    def insert_pvps(
        self, work: Work, pvps: Sequence[tuple[PvPRow, int]], legs: Sequence[LegRow]
    ) -> None:
        writes = pgtx.writes_of(work.conn)
        if writes is None:
            super().insert_pvps(work, pvps, legs)
        else:
            writes.insert_pvps(store.pvp_values(pvp, at) for pvp, at in pvps)
            writes.insert_legs(store.leg_values(leg) for leg in legs)
        at = self._known(work)
        if at is not None:
            for pvp, _created_at in pvps:
                at[1].add(pvp, [leg for leg in legs if leg.pvp_id == pvp.id], None)

    def _update_leg(self, work: Work, pvp_id: str, leg: str, values: dict[str, Any]) -> None:
        writes = pgtx.writes_of(work.conn)
        if writes is not None and writes.settable(values):
            writes.update_leg(pvp_id, leg, values)
        else:
            super().update_legs(work, [{"k_pvp": pvp_id, "k_leg": leg, **values}])

    def update_leg(self, work: Work, leg: LegRow, **values: Any) -> None:
        self._update_leg(work, leg.pvp_id, leg.leg, values)
        at = self._known(work)
        if at is not None:
            at[1].leg(leg.pvp_id, values, leg.leg)

    def update_legs(self, work: Work, updates: list[dict[str, Any]]) -> None:
        at = self._known(work)
        for update in updates:
            values = {k: v for k, v in update.items() if not k.startswith("k_")}
            self._update_leg(work, update["k_pvp"], update["k_leg"], values)
            if at is not None:
                at[1].leg(update["k_pvp"], values, update["k_leg"])

    def update_pvp(self, work: Work, pvp_id: str, state: PvPState) -> None:
        writes = pgtx.writes_of(work.conn)
        if writes is None:
            super().update_pvp(work, pvp_id, state)
        else:
            writes.set_pvp_state(pvp_id, state)
        at = self._known(work)
        if at is not None and pvp_id in at[1].pvps:
            at[1].pvps[pvp_id] = replace(at[1].pvps[pvp_id], state=state)

    def complete(self, work: Work, pvp_id: str) -> None:
        """Decided from the legs the transaction holds locked, as ``store.COMPLETE_PVP``
        would; the statement itself for a PvP it does not know."""
        at = self._known(work)
        if at is None or pvp_id not in at[1].pvps:
            super().complete(work, pvp_id)
            return
        known = at[1]
        pvp = known.pvps[pvp_id]
        done = all(leg.acknowledged for leg in known.legs[pvp_id].values())
        if done and pvp.state in _COMPLETED:
            self.update_pvp(work, pvp_id, _COMPLETED[pvp.state])

    def insert_decision(self, work: Work, decision: Decision) -> None:
        writes = pgtx.writes_of(work.conn)
        if writes is None:
            super().insert_decision(work, decision)
        else:
            writes.insert_decision(
                {
                    "pvp_id": decision.pvp_id,
                    "decision": decision.kind.value,
                    "reason": decision.reason,
                    "detail": decision.detail,
                    "decided_at": decision.decided_at,
                }
            )
        at = self._known(work)
        if at is not None and decision.pvp_id in at[1].pvps:
            at[1].decisions[decision.pvp_id] = decision

    def insert_outbox(self, work: Work, rows: list[dict[str, Any]]) -> None:
        writes = pgtx.writes_of(work.conn)
        if writes is None:
            super().insert_outbox(work, rows)
        else:
            writes.insert_outbox(rows)

    def insert_inbox(self, work: Work, row: dict[str, Any]) -> None:
        writes = pgtx.writes_of(work.conn)
        if writes is None:
            super().insert_inbox(work, row)
        else:
            writes.insert_inbox(row)


__all__ = ["PgRepository", "due_outbox", "existing_pvps", "record_sent", "unsent_outbox"]
