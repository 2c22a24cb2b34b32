"""The connector's rows as typed values: what :mod:`gateway.connector.store` reads comes back as
these frozen dataclasses, states as the enums of :mod:`gateway.connector.model`.

The store builds them from a row's values by position (no per-column lookups), so a row
type's fields are the columns its statement selects, in their order; where they are a table's
columns, a check at import holds them to the table (:func:`_whole_rows_of`). The model's verbs
take ``PvPRow.as_pvp()`` and ``LegRow.as_leg()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from operator import attrgetter
from typing import Any, NamedTuple

import sqlalchemy as sa

from gateway.connector.model import Decision, DecisionKind, Leg, LegStatus, PvP, PvPState
from gateway.connector.schema import (
    inbox,
    instructions,
    legs,
    participants,
    sim_accounts,
    sim_locks,
)

# --- a PvP, its legs and its decision -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PvPRow:
    """A PvP's terms and state: what a decision and its messages need (``created_at``, its
    one other column, is read where it is needed: :class:`QueuedLeg`)."""

    id: str
    deadline: int
    condition: str
    secret: str
    state: PvPState

    def as_pvp(self) -> PvP:
        return PvP(self.id, self.deadline, self.condition, self.state)


@dataclass(frozen=True, slots=True)
class LegRow:
    """A leg, every column of ``legs`` in the table's order."""

    pvp_id: str
    leg: str
    uetr: str
    network_bic: str
    currency: str
    amount: int
    debtor_bic: str
    debtor_account: str
    creditor_bic: str
    creditor_account: str
    end_to_end_id: str
    pacs009_msg_id: str
    status: LegStatus
    reason: str | None
    locked_at: int | None
    acknowledged: bool
    decision_sent_at: int | None
    decision_queued: bool
    redeliver_at: int | None
    redeliveries: int

    def as_leg(self) -> Leg:
        return Leg(
            self.pvp_id, self.leg, self.status, self.acknowledged, self.reason, self.locked_at
        )


_LEG_FIELDS = tuple(f.name for f in fields(LegRow))
_LEG_VALUES = attrgetter(*_LEG_FIELDS)
_LEG_POSITION = {name: i for i, name in enumerate(_LEG_FIELDS)}


def changed_leg(leg: LegRow, values: Mapping[str, Any]) -> LegRow:
    """``dataclasses.replace(leg, **values)``, by position: ``replace`` looks up the class's
    fields at every call, and a repository's copy of every leg it updates (``pgrepo``) was
    an eighth of the connector's Python time in a batched run."""
    row = list(_LEG_VALUES(leg))
    for name, value in values.items():
        row[_LEG_POSITION[name]] = value
    return LegRow(*row)


class Found(NamedTuple):
    """A leg found by UETR, with its PvP and, once decided, the decision."""

    pvp: PvPRow
    leg: LegRow
    decision: Decision | None


class PvPRecord(NamedTuple):
    """A PvP with its decision (None while pending) and its legs, by name: what the API
    shows of it."""

    pvp: PvPRow
    decision: Decision | None
    legs: list[LegRow]


@dataclass(frozen=True, slots=True)
class QueuedLeg:
    """Batched mode: a leg waiting for its pacs.009, with its PvP and when that was made."""

    leg: LegRow
    pvp: PvPRow
    created_at: int


@dataclass(frozen=True, slots=True)
class QueuedDecision:
    """Batched mode: a leg whose PvP's decision waits to be sent to its network."""

    leg: LegRow
    pvp: PvPRow
    decision: DecisionKind
    reason: str | None


class LegKey(NamedTuple):
    pvp_id: str
    leg: str


# --- the sweeper's work, the inbox and the message log ---------------------------------------


class SweepProbe(NamedTuple):
    """Whether any undecided PvP is overdue, any decision due for redelivery, any inbound
    message stored unprocessed."""

    overdue: bool
    stale: bool
    inbox: bool


@dataclass(frozen=True, slots=True)
class InboxRow:
    """An inbound message as stored, every column of ``inbox``."""

    id: int
    sender_bic: str
    msg_def_id: str
    msg_id: str
    sha256: str
    raw: bytes
    received_at: int
    processed: bool


@dataclass(frozen=True, slots=True)
class MessageRow:
    """An entry of a PvP's message log: the columns of ``pvp_messages`` with ``raw`` last,
    always the bytes (those of ``message_bodies`` for a message about several PvPs)."""

    id: int
    pvp_id: str
    direction: str
    peer_bic: str
    msg_def_id: str
    msg_id: str
    sha256: str
    body_id: int | None
    at: int
    raw: bytes


# --- participants and instructions ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParticipantRow:
    """A registered participant, every column of ``participants``."""

    bic: str
    currency: str
    endpoint: str | None
    cert_pem: str | None
    token_sha256: str
    registered_at: int


@dataclass(frozen=True, slots=True)
class NewInstruction:
    """A checked instruction before it is filed: the columns of ``instructions`` a party's
    request sets."""

    instruction_id: str
    party_bic: str
    counterparty_bic: str
    sell_currency: str
    sell_amount: int
    sell_account: str
    buy_currency: str
    buy_amount: int
    buy_account: str
    value_time: int
    body_sha256: str
    submitted_by: str


@dataclass(frozen=True, slots=True)
class InstructionRow:
    """A filed instruction, every column of ``instructions``; ``pvp_id`` once matched."""

    id: int
    instruction_id: str
    party_bic: str
    counterparty_bic: str
    sell_currency: str
    sell_amount: int
    sell_account: str
    buy_currency: str
    buy_amount: int
    buy_account: str
    value_time: int
    body_sha256: str
    submitted_by: str
    pvp_id: str | None
    created_at: int


# --- the simulated banks ----------------------------------------------------------------------


class SimLockState(StrEnum):
    """A simulated bank's hold on a leg's funds: locked (ACSP) or rejected; then committed
    (ACSC) or released (cancelled); cancelled: a tombstone for a camt.056 before any
    pacs.009 (a later one is rejected)."""

    LOCKED = "locked"
    REJECTED = "rejected"
    COMMITTED = "committed"
    RELEASED = "released"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class SimAccountRow:
    currency: str
    account: str
    available: int
    held: int


@dataclass(frozen=True, slots=True)
class SimLockRow:
    """A simulated bank's lock of a leg, every column of ``sim_locks``."""

    uetr: str
    currency: str
    pvp_id: str | None
    msg_id: str
    end_to_end_id: str | None
    debtor_account: str
    creditor_account: str
    amount: int
    condition: str | None
    state: SimLockState
    reason: str | None


def _whole_rows_of(table: sa.Table, *row_types: type) -> None:
    names = tuple(table.c.keys())
    for row_type in row_types:
        if tuple(f.name for f in fields(row_type)) != names:
            raise RuntimeError(f"{row_type.__name__}'s fields must be {table.name}'s columns")


_whole_rows_of(legs, LegRow)
_whole_rows_of(inbox, InboxRow)
_whole_rows_of(participants, ParticipantRow)
_whole_rows_of(instructions, InstructionRow)
_whole_rows_of(sim_accounts, SimAccountRow)
_whole_rows_of(sim_locks, SimLockRow)


__all__ = [
    "Found",
    "InboxRow",
    "InstructionRow",
    "LegKey",
    "LegRow",
    "MessageRow",
    "NewInstruction",
    "ParticipantRow",
    "PvPRecord",
    "PvPRow",
    "QueuedDecision",
    "QueuedLeg",
    "SimAccountRow",
    "SimLockRow",
    "SimLockState",
    "SweepProbe",
]
