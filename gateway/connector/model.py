"""The connector's pure domain: a PvP, its two legs and its one decision.

A PvP is *pending* until the connector decides: COMMIT once both legs are locked before
``deadline - margin``, else ABORT (a leg rejected, the deadline passed). The decision is final
(the store refuses to change it). Once every network has acknowledged the decision the PvP is
complete: *settled* (committed) or *cancelled* (aborted).

A leg follows what its network reports: *queued* (batched mode: waiting for a pacs.009),
*instructed* (pacs.009 sent), *locked* (pacs.002 ACSP) or *rejected* (RJCT); then *settled*
(ACSC), *released* (camt.029 CNCL, or RJCT DS02 after an abort) or *refused* (camt.029 RJCR:
the network would not cancel). Some reports are facts the connector records even when it did
not expect them (a network settled without a COMMIT, locked again after an abort): the verbs
that record those accept every state, and the handlers log what was unexpected.

``PVP_TRANSITIONS`` and ``LEG_TRANSITIONS`` list every move a verb may make; a verb refuses any
other with :class:`IllegalTransition`. The states' values are the store's column values.

This module imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum


class IllegalTransition(Exception):
    """A verb asked for a move its state does not allow (a bug of the caller)."""


class CommitRefused(Exception):
    """COMMIT asked for while a leg is not locked or past ``deadline - margin``."""


class PvPState(StrEnum):
    PENDING = "pending"
    COMMITTED = "committed"
    ABORTED = "aborted"
    SETTLED = "settled"
    CANCELLED = "cancelled"


class LegStatus(StrEnum):
    QUEUED = "queued"
    INSTRUCTED = "instructed"
    LOCKED = "locked"
    REJECTED = "rejected"
    SETTLED = "settled"
    RELEASED = "released"
    REFUSED = "refused"


class DecisionKind(StrEnum):
    COMMIT = "COMMIT"
    ABORT = "ABORT"


PVP_TRANSITIONS: dict[PvPState, frozenset[PvPState]] = {
    PvPState.PENDING: frozenset({PvPState.COMMITTED, PvPState.ABORTED}),
    PvPState.COMMITTED: frozenset({PvPState.SETTLED}),
    # A leg locked again after the abort reopens a cancelled PvP until it is released again.
    PvPState.ABORTED: frozenset({PvPState.CANCELLED}),
    PvPState.SETTLED: frozenset(),
    PvPState.CANCELLED: frozenset({PvPState.ABORTED}),
}

COMPLETED: frozenset[PvPState] = frozenset({PvPState.SETTLED, PvPState.CANCELLED})

# Where a leg whose cancellation was answered (camt.029) stays as it was: nothing was locked
# (rejected), or it could not be cancelled any more (settled).
_CANCEL_KEEPS = frozenset({LegStatus.REJECTED, LegStatus.SETTLED})

_S = LegStatus
# The protocol's path is queued -> instructed -> locked | rejected -> settled | released |
# refused. The other moves record what a network reported when the connector expected
# otherwise: locked again after an abort (``lock_after_abort``, from anywhere), settled (ACSC,
# from anywhere), released (RJCT DS02 after an abort, from anywhere but instructed).
LEG_TRANSITIONS: dict[LegStatus, frozenset[LegStatus]] = {
    _S.QUEUED: frozenset({_S.INSTRUCTED, _S.LOCKED, _S.SETTLED, _S.RELEASED, _S.REFUSED}),
    _S.INSTRUCTED: frozenset({_S.LOCKED, _S.REJECTED, _S.SETTLED, _S.RELEASED, _S.REFUSED}),
    _S.LOCKED: frozenset({_S.SETTLED, _S.RELEASED, _S.REFUSED}),
    _S.REJECTED: frozenset({_S.LOCKED, _S.SETTLED, _S.RELEASED}),
    _S.SETTLED: frozenset({_S.LOCKED, _S.RELEASED}),
    _S.RELEASED: frozenset({_S.LOCKED, _S.SETTLED, _S.REFUSED}),
    _S.REFUSED: frozenset({_S.LOCKED, _S.SETTLED, _S.RELEASED}),
}


def _check(kind: str, source: StrEnum, target: StrEnum, allowed: frozenset[StrEnum]) -> None:
    if target not in allowed:
        raise IllegalTransition(f"{kind} {source} -> {target}")


@dataclass(frozen=True, slots=True)
class Decision:
    """THE decision of a PvP: final once recorded."""

    pvp_id: str
    kind: DecisionKind
    reason: str | None
    detail: str
    decided_at: int

    @property
    def is_commit(self) -> bool:
        return self.kind is DecisionKind.COMMIT


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg's state as the connector knows it (the settlement terms live in the store)."""

    pvp_id: str
    leg: str
    status: LegStatus
    acknowledged: bool = False
    reason: str | None = None
    locked_at: int | None = None

    def _to(self, target: LegStatus, **changes: object) -> Leg:
        if target is not self.status:
            _check("leg", self.status, target, LEG_TRANSITIONS[self.status])
        return replace(self, status=target, **changes)  # type: ignore[arg-type]

    def instruct(self) -> Leg:
        """Batched mode: its pacs.009 is written."""
        if self.status is not LegStatus.QUEUED:
            raise IllegalTransition(f"leg instruct from {self.status}")
        return self._to(LegStatus.INSTRUCTED)

    def lock(self, now: int) -> Leg:
        """pacs.002 ACSP for an instructed leg: its funds are held under the condition."""
        if self.status is not LegStatus.INSTRUCTED:
            raise IllegalTransition(f"leg lock from {self.status}")
        return self._to(LegStatus.LOCKED, locked_at=now)

    def lock_after_abort(self) -> Leg:
        """ACSP once the PvP was aborted (a late or re-sent pacs.009): the funds are held
        again, whatever the leg said before, and their cancellation is awaited again."""
        return self._to(LegStatus.LOCKED, acknowledged=False)

    def reject(self, reason: str | None) -> Leg:
        """RJCT of an instructed leg: nothing was locked."""
        if self.status is not LegStatus.INSTRUCTED:
            raise IllegalTransition(f"leg reject from {self.status}")
        return self._to(LegStatus.REJECTED, reason=reason)

    def settle(self) -> Leg:
        """ACSC: the network settled the leg, which acknowledges a COMMIT (a settlement
        without one is a fact recorded all the same)."""
        return self._to(LegStatus.SETTLED, acknowledged=True)

    def cancellation_answered(self, *, refused: bool) -> Leg:
        """camt.029: released (CNCL) or refused (RJCR); a rejected or settled leg stays so."""
        if self.status in _CANCEL_KEEPS:
            return replace(self, acknowledged=True)
        return self._to(LegStatus.REFUSED if refused else LegStatus.RELEASED, acknowledged=True)

    def release_after_abort(self) -> Leg:
        """RJCT DS02 after an abort: the network had nothing (left) to release."""
        if self.status is LegStatus.INSTRUCTED:
            raise IllegalTransition("leg release_after_abort from instructed (that is a reject)")
        return self._to(LegStatus.RELEASED, acknowledged=True)


@dataclass(frozen=True, slots=True)
class PvP:
    """A PvP's state and terms: ``deadline`` in ms since the epoch, ``condition`` the SHA-256
    of the secret revealed to the networks with a COMMIT."""

    id: str
    deadline: int
    condition: str
    state: PvPState

    def _to(self, target: PvPState) -> PvP:
        _check("pvp", self.state, target, PVP_TRANSITIONS[self.state])
        return replace(self, state=target)

    def past_margin(self, now: int, margin: int) -> bool:
        """Whether it is too late to commit: ``now >= deadline - margin``."""
        return now >= self.deadline - margin

    def may_commit(self, legs: Sequence[Leg], now: int, margin: int) -> bool:
        """Every leg locked, and still before ``deadline - margin``."""
        return (
            self.state is PvPState.PENDING
            and all(leg.status is LegStatus.LOCKED for leg in legs)
            and not self.past_margin(now, margin)
        )

    def commit(
        self, legs: Sequence[Leg], now: int, margin: int, detail: str
    ) -> tuple[PvP, Decision]:
        if self.state is not PvPState.PENDING:
            raise IllegalTransition(f"pvp commit from {self.state}")
        if not self.may_commit(legs, now, margin):
            raise CommitRefused(f"PvP {self.id}: legs not all locked, or past deadline - margin")
        decision = Decision(self.id, DecisionKind.COMMIT, None, detail, now)
        return self._to(PvPState.COMMITTED), decision

    def abort(self, reason: str, detail: str, now: int) -> tuple[PvP, Decision]:
        if self.state is not PvPState.PENDING:
            raise IllegalTransition(f"pvp abort from {self.state}")
        return self._to(PvPState.ABORTED), Decision(
            self.id, DecisionKind.ABORT, reason, detail, now
        )

    def reopen(self) -> PvP:
        """A leg locked again after the abort: aborted until it is released again."""
        if self.state is PvPState.ABORTED:
            return self
        if self.state is not PvPState.CANCELLED:
            raise IllegalTransition(f"pvp reopen from {self.state}")
        return self._to(PvPState.ABORTED)

    def complete(self, legs: Sequence[Leg]) -> PvP:
        """Settled or cancelled once every network acknowledged the decision; else as is."""
        if not all(leg.acknowledged for leg in legs):
            return self
        if self.state is PvPState.COMMITTED:
            return self._to(PvPState.SETTLED)
        if self.state is PvPState.ABORTED:
            return self._to(PvPState.CANCELLED)
        return self

    @property
    def completed(self) -> bool:
        return self.state in COMPLETED


__all__ = [
    "COMPLETED",
    "LEG_TRANSITIONS",
    "PVP_TRANSITIONS",
    "CommitRefused",
    "Decision",
    "DecisionKind",
    "IllegalTransition",
    "Leg",
    "LegStatus",
    "PvP",
    "PvPState",
]
