"""PvP's pure domain: the gateway's DT legs and its participants' instructions.

A *leg* is one pacs.009 transaction (one UETR) the connector asked the gateway to lock in the
DT ledger. Its state moves only along ``LEG_TRANSITIONS``::

    received ──> locked ──> settled     (fulfilment whose SHA-256 is the condition)
       │            └─────> released    (camt.056, the connector's ABORT, or an operator)
       ├──> rejected                     (the ledger refused: AM04, AC01, ...)
       └──> cancelled                    (camt.056 before the pacs.009 was processed)

A camt.056 for a UETR the gateway never saw creates the leg directly as ``cancelled`` (a
tombstone): a late pacs.009 for it is answered RJCT DS02 and locks nothing.

Every move to a final state records the :class:`Decision` the gateway applied, and what
caused it: COMMIT (a fulfilment, or an operator), ABORT (a camt.056, the connector's RJCT, its
RJCT answering the gateway's status request past the deadline, or an operator) or RJCT (the
pacs.009 refused: by the ledger, for its terms, or for a deadline already too close, TM01).

An *instruction* is what a DT participant bank asked the gateway to send to the connector for
matching (``INSTRUCTION_TRANSITIONS``): accepted -> sent -> matched -> settled | failed.

Invariants:

- a leg resolves at most once; settled is final (a camt.056 after it is answered RJCR);
- the gateway never releases a locked leg on its own authority: only a camt.056, the connector's
  RJCT answer to a status request, or an audited operator decision past the last-resort
  deadline release it.

Errors (all :class:`gateway.errors.GatewayError`, ``code`` = the ISO reason sent back)::

    Conflict
     └── IllegalLegTransition
    Unprocessable
     └── FulfilmentMismatch   CH16

This module imports only the standard library and ``gateway.errors``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from gateway.errors import Conflict, Forbidden, InvalidInput, NotFound, Unprocessable

# ISO 20022 reason codes the gateway sends in pacs.002 / camt.029.
DS02 = "DS02"  # order cancelled (released or cancelled leg; PvP aborted)
CH16 = "CH16"  # fulfilment does not match the condition
AM04 = "AM04"  # insufficient funds
AM05 = "AM05"  # duplication
AM03 = "AM03"  # currency not settled by the gateway
AC01 = "AC01"  # unknown wallet / account
AC04 = "AC04"  # closed wallet
AC06 = "AC06"  # frozen wallet
AM11 = "AM11"  # currency does not match the wallet
AG01 = "AG01"  # transaction forbidden on this wallet
AM12 = "AM12"  # invalid amount
RC01 = "RC01"  # the creditor agent is not the gateway
NARR = "NARR"  # reason in AddtlInf (unknown UETR)
ARDT = "ARDT"  # already settled (camt.029 RJCR)
MS03 = "MS03"  # any other refusal of the ledger
TM01 = "TM01"  # received after the cut-off: the settlement deadline has passed, or is
# closer than the safety margin, so the connector could not commit in time

_LEDGER_CODES: dict[str, str] = {
    "AM04": AM04,
    "AC01": AC01,
    "AC04": AC04,
    "AC06": AC06,
    "AM11": AM11,
    "AM12": AM12,
    "DU01": AM05,
    "NOT_ALLOWED": AG01,
    "SAME_WALLET": AC01,
    "INVALID_ID": AC01,
}


def iso_reason(code: str) -> str:
    """The ISO status reason for a ledger refusal's code (unknown codes become MS03)."""
    return _LEDGER_CODES.get(code, MS03)


class IllegalLegTransition(Conflict):
    code = "ILLEGAL_TRANSITION"
    title = "The PvP leg's state does not allow this change"


class FulfilmentMismatch(Unprocessable):
    code = CH16
    title = "Fulfilment does not match the condition"


class PvPNotFound(NotFound):
    code = "PVP_NOT_FOUND"
    title = "Unknown PvP, instruction or leg"


class NotYourWallet(Forbidden):
    code = "NOT_YOUR_WALLET"
    title = "The key does not act for this wallet or BIC"


class NotAwaitingOperator(Conflict):
    code = "NOT_AWAITING_OPERATOR"
    title = "No locked leg of this PvP is past its last-resort deadline"


def fulfilment_matches(condition_hex: str, fulfilment_hex: str) -> bool:
    try:
        preimage = bytes.fromhex(fulfilment_hex)
    except ValueError:
        return False
    digest = hashlib.sha256(preimage).hexdigest()
    return hmac.compare_digest(digest, condition_hex.lower())


# --------------------------------------------------------------------------- legs


class LegState(StrEnum):
    RECEIVED = "received"
    LOCKED = "locked"
    REJECTED = "rejected"
    SETTLED = "settled"
    RELEASED = "released"
    CANCELLED = "cancelled"


LEG_TRANSITIONS: dict[LegState, frozenset[LegState]] = {
    LegState.RECEIVED: frozenset({LegState.LOCKED, LegState.REJECTED, LegState.CANCELLED}),
    LegState.LOCKED: frozenset({LegState.SETTLED, LegState.RELEASED}),
    LegState.REJECTED: frozenset(),
    LegState.SETTLED: frozenset(),
    LegState.RELEASED: frozenset(),
    LegState.CANCELLED: frozenset(),
}

FINAL_STATES = frozenset(s for s, to in LEG_TRANSITIONS.items() if not to)

StatusCode = Literal["PDNG", "ACSP", "ACSC", "RJCT"]


class DecisionKind(StrEnum):
    COMMIT = "COMMIT"
    """The lock committed to the beneficiary."""
    ABORT = "ABORT"
    """The lock released, or the leg cancelled before it was locked."""
    RJCT = "RJCT"
    """The pacs.009 refused: nothing was locked."""


class DecisionCause(StrEnum):
    FULFILMENT = "fulfilment"
    """The connector's pacs.002 carrying the secret."""
    CAMT056 = "camt.056"
    """The connector's cancellation request."""
    CONNECTOR_RJCT = "pacs.002"
    """The connector's pacs.002 RJCT (its ABORT), unasked."""
    DEADLINE = "deadline"
    """The deadline: the connector's RJCT answering the gateway's status request (pacs.028)
    past it, or a pacs.009 refused because it was too close (TM01)."""
    OPERATOR = "operator"
    """An audited operator decision past the last-resort deadline."""
    REFUSAL = "refusal"
    """The pacs.009 refused by the ledger (AM04, AC01, ...) or for its terms (AM03, CH21)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What the gateway applied to a leg, why, and when: recorded with the final state."""

    kind: DecisionKind
    cause: DecisionCause | None
    """None only for a leg released before causes were recorded (migration 0012)."""
    at: datetime


@dataclass(frozen=True, slots=True)
class LegTerms:
    """What the pacs.009 transaction said (absent on a tombstone)."""

    msg_id: str
    end_to_end_id: str
    pvp_id: str | None
    leg: str | None
    amount: int
    currency: str
    debtor_bic: str
    debtor_account: str
    creditor_bic: str
    creditor_account: str
    condition: str | None
    deadline: datetime
    instr_id: str | None = None
    tx_id: str | None = None


@dataclass(frozen=True, slots=True)
class Leg:
    uetr: str
    state: LegState
    created_at: datetime
    updated_at: datetime
    terms: LegTerms | None = None
    reason: str | None = None
    fulfilment: str | None = None
    status_requested_at: datetime | None = None
    status_requests: int = 0
    alert_at: datetime | None = None
    resolved_by: str | None = None
    """``connector`` or ``operator:<key id>``: who took the decision that resolved the leg."""
    decision: Decision | None = None
    """The decision the gateway applied (None until the leg is final)."""

    @property
    def lock_id(self) -> str:
        return f"pvp-{self.uetr}"

    @property
    def is_tombstone(self) -> bool:
        return self.terms is None

    @property
    def deadline(self) -> datetime | None:
        return self.terms.deadline if self.terms else None

    def _move(self, to: LegState, now: datetime, **changes: object) -> Leg:
        if to not in LEG_TRANSITIONS[self.state]:
            raise IllegalLegTransition(
                f"leg {self.uetr} is {self.state}, cannot become {to}", uetr=self.uetr
            )
        return replace(self, state=to, updated_at=now, **changes)  # type: ignore[arg-type]

    @classmethod
    def receive(cls, uetr: str, terms: LegTerms, now: datetime) -> Leg:
        return cls(uetr=uetr, state=LegState.RECEIVED, created_at=now, updated_at=now, terms=terms)

    @classmethod
    def tombstone(cls, uetr: str, now: datetime) -> Leg:
        """camt.056 before any pacs.009: the UETR is cancelled before it exists."""
        return cls(
            uetr=uetr,
            state=LegState.CANCELLED,
            created_at=now,
            updated_at=now,
            reason=DS02,
            resolved_by="connector",
            decision=Decision(DecisionKind.ABORT, DecisionCause.CAMT056, now),
        )

    def with_terms(self, terms: LegTerms, now: datetime) -> Leg:
        """A late pacs.009 for a tombstone: remember what it asked, stay cancelled."""
        return replace(self, terms=terms, updated_at=now)

    def lock(self, now: datetime) -> Leg:
        return self._move(LegState.LOCKED, now)

    def reject(self, reason: str, now: datetime) -> Leg:
        cause = DecisionCause.DEADLINE if reason == TM01 else DecisionCause.REFUSAL
        return self._move(
            LegState.REJECTED, now, reason=reason, decision=Decision(DecisionKind.RJCT, cause, now)
        )

    def cancel(self, now: datetime) -> Leg:
        """A camt.056 before the pacs.009 was applied."""
        decision = Decision(DecisionKind.ABORT, DecisionCause.CAMT056, now)
        return self._move(
            LegState.CANCELLED, now, reason=DS02, resolved_by="connector", decision=decision
        )

    def settle(self, fulfilment: str, now: datetime, *, by: str = "connector") -> Leg:
        condition = self.terms.condition if self.terms else None
        if condition is not None and not fulfilment_matches(condition, fulfilment):
            raise FulfilmentMismatch(
                f"SHA-256 of the fulfilment is not the condition of leg {self.uetr}",
                uetr=self.uetr,
            )
        cause = DecisionCause.OPERATOR if by != "connector" else DecisionCause.FULFILMENT
        return self._move(
            LegState.SETTLED,
            now,
            fulfilment=fulfilment.lower(),
            alert_at=None,
            resolved_by=by,
            decision=Decision(DecisionKind.COMMIT, cause, now),
        )

    def release(
        self, now: datetime, *, by: str = "connector", cause: DecisionCause | None = None
    ) -> Leg:
        """ABORT: by ``cause``; by default an operator's, or the connector's RJCT (answering
        the gateway's status request, if it had asked, so past the deadline)."""
        if cause is None:
            if by != "connector":
                cause = DecisionCause.OPERATOR
            elif self.status_requests:
                cause = DecisionCause.DEADLINE
            else:
                cause = DecisionCause.CONNECTOR_RJCT
        return self._move(
            LegState.RELEASED,
            now,
            reason=DS02,
            alert_at=None,
            resolved_by=by,
            decision=Decision(DecisionKind.ABORT, cause, now),
        )

    def too_late(self, now: datetime, margin_s: float) -> bool:
        """Its deadline has passed or is within ``margin_s``: the connector commits only
        before deadline - margin, so a lock taken now could only wait to be released."""
        deadline = self.deadline
        return deadline is not None and (deadline - now).total_seconds() <= margin_s

    def status_requested(self, now: datetime) -> Leg:
        return replace(self, status_requested_at=now, status_requests=self.status_requests + 1)

    def raise_alert(self, now: datetime) -> Leg:
        return replace(self, alert_at=now)

    def status(self) -> tuple[StatusCode, str | None]:
        """The pacs.002 status that answers a pacs.028 for this leg."""
        if self.state is LegState.RECEIVED:
            return "PDNG", None
        if self.state is LegState.LOCKED:
            return "ACSP", None
        if self.state is LegState.SETTLED:
            return "ACSC", None
        if self.state is LegState.REJECTED:
            return "RJCT", self.reason or MS03
        return "RJCT", DS02

    def needs_status_request(self, now: datetime, grace_s: float, retry_s: float) -> bool:
        """Locked past deadline + grace, and not asked within the retry interval."""
        if self.state is not LegState.LOCKED or self.deadline is None:
            return False
        if (now - self.deadline).total_seconds() < grace_s:
            return False
        last = self.status_requested_at
        return last is None or (now - last).total_seconds() >= retry_s

    def past_last_resort(self, now: datetime, last_resort_s: float) -> bool:
        return (
            self.state is LegState.LOCKED
            and self.deadline is not None
            and (now - self.deadline).total_seconds() >= last_resort_s
        )


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One stored message of the trail: inbound, outbound, or an inbound one refused."""

    id: int
    direction: Literal["in", "out", "rejected"]
    msg_def_id: str | None
    msg_id: str | None
    sha256: str
    created_at: datetime
    reason: str | None = None


# --------------------------------------------------------------------------- instructions


class InstructionState(StrEnum):
    ACCEPTED = "accepted"
    """Stored; the outbox will send it to the connector."""
    SENT = "sent"
    REFUSED = "refused"
    """The connector refused it (4xx); nothing will happen."""
    MATCHED = "matched"
    """A pacs.009 for it arrived (its EndToEndId is this instruction's id)."""
    SETTLED = "settled"
    FAILED = "failed"


INSTRUCTION_TRANSITIONS: dict[InstructionState, frozenset[InstructionState]] = {
    InstructionState.ACCEPTED: frozenset(
        {
            InstructionState.SENT,
            InstructionState.REFUSED,
            InstructionState.MATCHED,
            InstructionState.FAILED,
        }
    ),
    InstructionState.SENT: frozenset({InstructionState.MATCHED, InstructionState.FAILED}),
    InstructionState.MATCHED: frozenset({InstructionState.SETTLED, InstructionState.FAILED}),
    InstructionState.REFUSED: frozenset(),
    InstructionState.SETTLED: frozenset(),
    InstructionState.FAILED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Side:
    currency: str
    amount: int
    account: str


@dataclass(frozen=True, slots=True)
class Instruction:
    """A participant's PvP order, in the connector's JSON terms (docs/pvp-protocol.md)."""

    DT_CURRENCY: ClassVar[str] = "KZT"

    instruction_id: str
    subject: str
    """The API key subject that gave it (a wallet id or BIC)."""
    party_bic: str
    counterparty_bic: str
    sell: Side
    buy: Side
    value_time: datetime
    state: InstructionState
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    pvp_id: str | None = None
    uetr: str | None = None

    @property
    def dt_side(self) -> Literal["sell", "buy"]:
        return "sell" if self.sell.currency == self.DT_CURRENCY else "buy"

    @property
    def dt_wallet(self) -> str:
        return self.sell.account if self.dt_side == "sell" else self.buy.account

    def fingerprint(self) -> str:
        body = {
            "party_bic": self.party_bic,
            "counterparty_bic": self.counterparty_bic,
            "sell": [self.sell.currency, self.sell.amount, self.sell.account],
            "buy": [self.buy.currency, self.buy.amount, self.buy.account],
            "value_time": self.value_time.isoformat(),
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def validate(self) -> None:
        if (self.sell.currency == self.DT_CURRENCY) == (self.buy.currency == self.DT_CURRENCY):
            raise InvalidInput("exactly one of sell and buy must be in KZT (the DT leg)")
        for side in (self.sell, self.buy):
            if type(side.amount) is not int or side.amount <= 0:
                raise InvalidInput("amounts are positive integers of minor units")
        if self.party_bic == self.counterparty_bic:
            raise InvalidInput("the counterparty must be another party")
        if self.value_time.tzinfo is None:
            raise InvalidInput("value_time must carry a time zone")

    def _move(self, to: InstructionState, now: datetime, **changes: object) -> Instruction:
        if to is self.state:
            return self
        if to not in INSTRUCTION_TRANSITIONS[self.state]:
            raise IllegalLegTransition(f"instruction {self.instruction_id} is {self.state}")
        return replace(self, state=to, updated_at=now, **changes)  # type: ignore[arg-type]

    def sent(self, now: datetime) -> Instruction:
        return self._move(InstructionState.SENT, now)

    def refused(self, reason: str, now: datetime) -> Instruction:
        return self._move(InstructionState.REFUSED, now, reason=reason)

    def matched(self, pvp_id: str | None, uetr: str, now: datetime) -> Instruction:
        return self._move(InstructionState.MATCHED, now, pvp_id=pvp_id, uetr=uetr)

    def follow(self, leg: Leg, now: datetime) -> Instruction:
        """Follow the state of the DT leg that settles this instruction."""
        inst = self
        if inst.state in (InstructionState.ACCEPTED, InstructionState.SENT):
            inst = inst.matched(leg.terms.pvp_id if leg.terms else None, leg.uetr, now)
        if inst.state is not InstructionState.MATCHED:
            return inst
        if leg.state is LegState.SETTLED:
            return inst._move(InstructionState.SETTLED, now)
        if leg.state in (LegState.REJECTED, LegState.RELEASED, LegState.CANCELLED):
            return inst._move(InstructionState.FAILED, now, reason=leg.reason)
        return inst


__all__ = [
    "FINAL_STATES",
    "INSTRUCTION_TRANSITIONS",
    "LEG_TRANSITIONS",
    "TM01",
    "Decision",
    "DecisionCause",
    "DecisionKind",
    "FulfilmentMismatch",
    "IllegalLegTransition",
    "Instruction",
    "InstructionState",
    "Leg",
    "LegState",
    "LegTerms",
    "MessageRecord",
    "NotAwaitingOperator",
    "NotYourWallet",
    "PvPNotFound",
    "Side",
    "StatusCode",
    "fulfilment_matches",
    "iso_reason",
]
