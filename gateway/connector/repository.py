"""What the handlers read and write of the connector's tables, behind one seam: the PvPs, their
legs and decisions, the outbox rows and the inbox (as cosmicpython's repository). The protocol
(:mod:`gateway.connector.handlers`) thus runs on an in-memory repository in unit tests, and on
:class:`SqlRepository` in the connector.

:class:`SqlRepository` runs the statements of :mod:`gateway.connector.store`, built once, one
per method, in the unit of work's connection: the seam adds a method call to the hot path, no
round trip and no object. Its methods are those of :class:`Repository`; each takes the unit of
work it acts in. The message log is not here: the handlers list its entries in ``work.log``,
which the transaction writes just before its commit (:func:`gateway.connector.outbox.
transaction`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from gateway.connector import store
from gateway.connector.model import Decision, PvPState
from gateway.connector.outbox import Work
from gateway.connector.rows import Found, LegRow, PvPRow, QueuedDecision, QueuedLeg
from gateway.sqlite.fastsql import run


class DeliveryState(NamedTuple):
    """Of a PvP's single-PvP outbox rows to one network: how many wait to be sent, and when
    the last one was delivered."""

    unsent: int
    last_sent_at: int | None


InboxKey = tuple[str, str, str]
"""A received message's sender BIC, MsgDefIdr and id: what its duplicate check asks for."""


class Repository(Protocol):
    """The reads and writes of the decision path. Leg updates are dicts of column values keyed
    by ``k_pvp`` and ``k_leg`` (the leg), as :data:`gateway.connector.store.UPDATE_LEG` runs
    them; outbox and inbox rows are dicts of their columns."""

    def expect(self, work: Work, uetrs: Sequence[str], received: InboxKey | None = None) -> None:
        """The legs of ``uetrs`` are about to be asked for (:meth:`find_leg`): a repository
        may read them, with their PvPs locked, along with its next read (PostgreSQL), and
        with them the duplicate check of the message ``received`` (its sender BIC, MsgDefIdr
        and id: :meth:`inbox_sha` is about to be asked)."""
        ...

    def find_leg(self, work: Work, uetr: str) -> Found | None:
        """The leg of ``uetr`` with its PvP and decision; the PvP locked until the commit."""
        ...

    def read_pvp(self, work: Work, pvp_id: str, *, for_update: bool = False) -> PvPRow: ...

    def read_legs(self, work: Work, pvp_id: str) -> list[LegRow]:
        """The PvP's legs, by name."""
        ...

    def read_leg(self, work: Work, pvp_id: str, leg: str) -> LegRow: ...

    def read_decision(self, work: Work, pvp_id: str) -> Decision | None: ...

    def delivery_state(self, work: Work, pvp_id: str, destination_bic: str) -> DeliveryState: ...

    def pvp_of_message(self, work: Work, msg_id: str) -> str | None:
        """The PvP of the outbox row that sent ``msg_id``, if it was about one PvP."""
        ...

    def inbox_sha(self, work: Work, sender_bic: str, msg_def_id: str, msg_id: str) -> str | None:
        """The SHA-256 of the message received under that id, if one was."""
        ...

    def queued_legs(self, work: Work, limit: int) -> list[QueuedLeg]:
        """Batched mode: up to ``limit`` legs waiting for their pacs.009 (status queued, PvP
        pending), by the PvP's creation, PvP and leg."""
        ...

    def queued_decisions(self, work: Work, limit: int) -> list[QueuedDecision]:
        """Batched mode: up to ``limit`` legs whose decision waits to be sent, by decision
        time, PvP and leg."""
        ...

    def insert_pvps(
        self, work: Work, pvps: Sequence[tuple[PvPRow, int]], legs: Sequence[LegRow]
    ) -> None:
        """New PvPs, each with its creation time (ms), and all their legs."""
        ...

    def update_leg(self, work: Work, leg: LegRow, **values: Any) -> None: ...

    def update_legs(self, work: Work, updates: list[dict[str, Any]]) -> None: ...

    def update_pvp(self, work: Work, pvp_id: str, state: PvPState) -> None: ...

    def complete(self, work: Work, pvp_id: str) -> None:
        """Settled or cancelled once every leg is acknowledged (``PvP.complete``); else as is."""
        ...

    def insert_decision(self, work: Work, decision: Decision) -> None:
        """THE decision: the store refuses a second one, or a change to it."""
        ...

    def insert_outbox(self, work: Work, rows: list[dict[str, Any]]) -> None: ...

    def insert_inbox(self, work: Work, row: dict[str, Any]) -> None: ...


class SqlRepository:
    """:class:`Repository` on the connector's database. Stateless: one serves every thread."""

    def expect(self, work: Work, uetrs: Sequence[str], received: InboxKey | None = None) -> None:
        """Nothing: each leg is read when asked for (SQLite reads cost no round trip)."""

    def find_leg(self, work: Work, uetr: str) -> Found | None:
        conn = work.conn
        if conn.dialect.name != "sqlite":
            # Lock the PvP first, then read (at once, or another transaction's change could be
            # missed); SQLite's writer lock already serialises every writing transaction.
            run(conn, store.LOCK_PVP_OF_UETR, {"uetr": uetr}).all()
        return store.find_leg(conn, uetr)

    def read_pvp(self, work: Work, pvp_id: str, *, for_update: bool = False) -> PvPRow:
        """``for_update``: on PostgreSQL, the row locked until the commit (SQLite's writer
        lock serialises the writers already)."""
        conn = work.conn
        return store.read_pvp(conn, pvp_id, for_update=for_update and conn.dialect.name != "sqlite")

    def read_legs(self, work: Work, pvp_id: str) -> list[LegRow]:
        return store.read_legs(work.conn, pvp_id)

    def read_leg(self, work: Work, pvp_id: str, leg: str) -> LegRow:
        return store.read_leg(work.conn, pvp_id, leg)

    def read_decision(self, work: Work, pvp_id: str) -> Decision | None:
        return store.read_decision(work.conn, pvp_id)

    def delivery_state(self, work: Work, pvp_id: str, destination_bic: str) -> DeliveryState:
        params = {"pvp_id": pvp_id, "destination_bic": destination_bic}
        unsent, last_sent_at = run(work.conn, store.DELIVERY_STATE, params).one()
        return DeliveryState(unsent, last_sent_at)

    def pvp_of_message(self, work: Work, msg_id: str) -> str | None:
        row = run(work.conn, store.SELECT_OUTBOX_PVP_BY_MSG_ID, {"msg_id": msg_id}).first()
        return None if row is None else row.pvp_id

    def inbox_sha(self, work: Work, sender_bic: str, msg_def_id: str, msg_id: str) -> str | None:
        key = {"sender_bic": sender_bic, "msg_def_id": msg_def_id, "msg_id": msg_id}
        row = run(work.conn, store.SELECT_INBOX_SHA, key).first()
        return None if row is None else row.sha256

    def queued_legs(self, work: Work, limit: int) -> list[QueuedLeg]:
        return store.read_queued_legs(work.conn, limit)

    def queued_decisions(self, work: Work, limit: int) -> list[QueuedDecision]:
        return store.read_queued_decisions(work.conn, limit)

    def insert_pvps(
        self, work: Work, pvps: Sequence[tuple[PvPRow, int]], legs: Sequence[LegRow]
    ) -> None:
        """One statement per table for them all."""
        conn = work.conn
        run(conn, store.INSERT_PVP, [store.pvp_values(pvp, at) for pvp, at in pvps])
        run(conn, store.INSERT_LEG, [store.leg_values(leg) for leg in legs])

    def update_leg(self, work: Work, leg: LegRow, **values: Any) -> None:
        run(work.conn, store.UPDATE_LEG, {"k_pvp": leg.pvp_id, "k_leg": leg.leg, **values})

    def update_legs(self, work: Work, updates: list[dict[str, Any]]) -> None:
        run(work.conn, store.UPDATE_LEG, updates)

    def update_pvp(self, work: Work, pvp_id: str, state: PvPState) -> None:
        run(work.conn, store.UPDATE_PVP, {"k_id": pvp_id, "state": state})

    def complete(self, work: Work, pvp_id: str) -> None:
        run(work.conn, store.COMPLETE_PVP, {"k_id": pvp_id})

    def insert_decision(self, work: Work, decision: Decision) -> None:
        row = {
            "pvp_id": decision.pvp_id,
            "decision": decision.kind.value,
            "reason": decision.reason,
            "detail": decision.detail,
            "decided_at": decision.decided_at,
        }
        run(work.conn, store.INSERT_DECISION, row)

    def insert_outbox(self, work: Work, rows: list[dict[str, Any]]) -> None:
        run(work.conn, store.INSERT_OUTBOX, rows)

    def insert_inbox(self, work: Work, row: dict[str, Any]) -> None:
        run(work.conn, store.INSERT_INBOX, row)


__all__ = ["DeliveryState", "InboxKey", "Repository", "SqlRepository"]
