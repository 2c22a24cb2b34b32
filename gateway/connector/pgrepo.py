"""The handlers' repository on PostgreSQL (:class:`PgRepository`): the legs a message names
cost one round trip, shared with its duplicate check, and what a transaction has read of a
PvP it locked is not read again.

:class:`~gateway.connector.repository.SqlRepository` is the oracle: the same rows are read and
written, every write is the same statement, and a PvP is locked before its rows are read; what
differs is when the driver waits and how often it reads.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from gateway.connector import pgtx, store
from gateway.connector.model import Decision, PvPState
from gateway.connector.outbox import Work
from gateway.connector.repository import SqlRepository
from gateway.connector.rows import Found, LegRow, PvPRow
from gateway.connector.schema import decisions, legs, pvps
from gateway.connector.store import DECISION_COLUMNS, PVP_COLUMNS
from gateway.pgpipeline import Pending

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


_COMPLETED = {PvPState.COMMITTED: PvPState.SETTLED, PvPState.ABORTED: PvPState.CANCELLED}
"""What ``store.COMPLETE_PVP`` makes of a PvP once every leg is acknowledged."""


class _Known:
    """What one transaction knows of the PvPs it locked or inserted, as it last wrote them."""

    __slots__ = ("asked", "decisions", "legs", "loading", "pvps", "uetrs")

    def __init__(self) -> None:
        self.pvps: dict[str, PvPRow] = {}
        self.legs: dict[str, dict[str, LegRow]] = {}
        """Each PvP's legs by name."""
        self.decisions: dict[str, Decision | None] = {}
        self.uetrs: dict[str, tuple[str, str]] = {}
        """UETR -> (PvP, leg)."""
        self.loading: list[Pending] = []
        """Reads queued (``_SELECT_PVPS_...``), not taken in yet."""
        self.asked: set[str] = set()
        """UETRs asked for by ``loading``."""

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
        for pending in loading:
            read: dict[str, list[Found]] = {}
            for row in pending.rows():
                found = store.found(row)
                read.setdefault(found.pvp.id, []).append(found)
            for pvp_id, rows in read.items():
                if pvp_id not in self.pvps:
                    self.add(rows[0].pvp, [f.leg for f in rows], rows[0].decision)

    def leg(self, pvp_id: str, values: dict[str, Any], name: str) -> None:
        """A leg's columns as an UPDATE just set them (if the PvP is known)."""
        legs = self.legs.get(pvp_id)
        if legs is not None:
            legs[name] = replace(legs[name], **values)


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

    def _load(self, work: Work, uetrs: list[str]) -> None:
        """Queue the read of the PvPs of ``uetrs``, locked, with all their legs."""
        tx = pgtx.tx_of(work.conn)
        assert tx is not None and isinstance(tx.state, _Known)
        pgtx.send(tx, _LOCK_PVPS_OF_UETRS, {"uetrs": uetrs})
        tx.state.loading.append(pgtx.query(tx, _SELECT_PVPS_OF_UETRS, {"uetrs": uetrs}))
        tx.state.asked.update(uetrs)

    # --- reads ---

    def expect(self, work: Work, uetrs: Sequence[str]) -> None:
        tx = pgtx.tx_of(work.conn)
        if tx is None:
            return
        if tx.state is None:
            tx.state = _Known()
        known: _Known = tx.state
        wanted = [u for u in dict.fromkeys(uetrs) if u not in known.uetrs and u not in known.asked]
        if wanted:
            self._load(work, wanted)

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

    def read_pvp(self, work: Work, pvp_id: str, *, for_update: bool = False) -> PvPRow:
        at = self._known(work)
        if at is None:
            return super().read_pvp(work, pvp_id, for_update=for_update)
        tx, known = at
        if pvp_id not in known.pvps and for_update:
            pgtx.send(tx, _LOCK_PVPS_BY_ID, {"pvp_ids": [pvp_id]})
            known.loading.append(pgtx.query(tx, _SELECT_PVPS_BY_ID, {"pvp_ids": [pvp_id]}))
            known.take_in()
        pvp = known.pvps.get(pvp_id)
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

    # --- writes: the statements of SqlRepository, and what they set, kept ---

    def insert_pvps(
        self, work: Work, pvps: Sequence[tuple[PvPRow, int]], legs: Sequence[LegRow]
    ) -> None:
        super().insert_pvps(work, pvps, legs)
        at = self._known(work)
        if at is not None:
            for pvp, _created_at in pvps:
                at[1].add(pvp, [leg for leg in legs if leg.pvp_id == pvp.id], None)

    def update_leg(self, work: Work, leg: LegRow, **values: Any) -> None:
        super().update_leg(work, leg, **values)
        at = self._known(work)
        if at is not None:
            at[1].leg(leg.pvp_id, values, leg.leg)

    def update_legs(self, work: Work, updates: list[dict[str, Any]]) -> None:
        super().update_legs(work, updates)
        at = self._known(work)
        if at is not None:
            for update in updates:
                values = {k: v for k, v in update.items() if not k.startswith("k_")}
                at[1].leg(update["k_pvp"], values, update["k_leg"])

    def update_pvp(self, work: Work, pvp_id: str, state: PvPState) -> None:
        super().update_pvp(work, pvp_id, state)
        at = self._known(work)
        if at is not None and pvp_id in at[1].pvps:
            at[1].pvps[pvp_id] = replace(at[1].pvps[pvp_id], state=state)

    def complete(self, work: Work, pvp_id: str) -> None:
        super().complete(work, pvp_id)
        at = self._known(work)
        if at is None or pvp_id not in at[1].pvps:
            return
        known = at[1]
        pvp = known.pvps[pvp_id]
        done = all(leg.acknowledged for leg in known.legs[pvp_id].values())
        if done and pvp.state in _COMPLETED:
            known.pvps[pvp_id] = replace(pvp, state=_COMPLETED[pvp.state])

    def insert_decision(self, work: Work, decision: Decision) -> None:
        super().insert_decision(work, decision)
        at = self._known(work)
        if at is not None and decision.pvp_id in at[1].pvps:
            at[1].decisions[decision.pvp_id] = decision


__all__ = ["PgRepository"]
