"""The ISO 20022 messages the connector sends, built from a PvP's rows: a leg's pacs.009, the
decision to a network (pacs.002 ACSP with the fulfilment for COMMIT, camt.056 for ABORT) and
the references they carry. Pure functions of their arguments: what they read of a PvP and a
leg is stated by :class:`Terms`, :class:`SecretTerms` and :class:`LegTerms`, which the
store's rows (:mod:`gateway.connector.rows`) and :class:`PvPRef` have."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from gateway.connector.model import DecisionKind
from gateway.ids import sortable_id
from gateway.iso20022 import (
    Camt056,
    CancellationRequest,
    CreditTransfer,
    Message,
    Money,
    OriginalRef,
    Pacs002,
    PvPTerms,
    TransactionStatus,
)

PACS009 = "pacs.009.001.08"
PACS002 = "pacs.002.001.10"
CAMT056 = "camt.056.001.08"


def new_id(prefix: str = "C") -> str:
    return sortable_id(prefix)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_dt(ms: int) -> datetime:
    """The instant ``ms`` milliseconds after the epoch, exactly (no float on the way)."""
    return _EPOCH + timedelta(milliseconds=ms)


def iso(ms: int | None) -> str | None:
    return None if ms is None else ms_to_dt(ms).isoformat().replace("+00:00", "Z")


class Terms(Protocol):
    """What a message states of a PvP: its id, deadline (ms) and condition."""

    @property
    def id(self) -> str: ...
    @property
    def deadline(self) -> int: ...
    @property
    def condition(self) -> str: ...


class SecretTerms(Terms, Protocol):
    """A PvP with its secret: the fulfilment a COMMIT reveals."""

    @property
    def secret(self) -> str: ...


class LegTerms(Protocol):
    """What a message states of a leg."""

    @property
    def leg(self) -> str: ...
    @property
    def uetr(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def debtor_bic(self) -> str: ...
    @property
    def debtor_account(self) -> str: ...
    @property
    def creditor_bic(self) -> str: ...
    @property
    def creditor_account(self) -> str: ...
    @property
    def end_to_end_id(self) -> str: ...
    @property
    def pacs009_msg_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PvPRef:
    id: str
    deadline: int
    condition: str


def credit_transfer(pvp: Terms, leg: LegTerms) -> CreditTransfer:
    """A leg's transaction of a pacs.009.

    Its TillTm is the deadline to the millisecond: a receiver that refuses a pacs.009 too close
    to TillTm must not see an earlier deadline than the one the connector decides by."""
    deadline_dt = ms_to_dt(pvp.deadline)
    return CreditTransfer(
        end_to_end_id=leg.end_to_end_id,
        uetr=leg.uetr,
        amount=Money(leg.amount, leg.currency),
        settlement_date=deadline_dt.date(),
        deadline=deadline_dt.timetz(),
        debtor_bic=leg.debtor_bic,
        debtor_account=leg.debtor_account,
        debtor_agent_bic=leg.debtor_bic,
        creditor_agent_bic=leg.creditor_bic,
        creditor_bic=leg.creditor_bic,
        creditor_account=leg.creditor_account,
        pvp=PvPTerms(pvp_id=pvp.id, leg=leg.leg, condition=pvp.condition),
    )


def original(leg: LegTerms) -> OriginalRef:
    """The reference to a leg's pacs.009 that answers about it carry."""
    return OriginalRef(
        msg_id=leg.pacs009_msg_id,
        msg_name_id=PACS009,
        end_to_end_id=leg.end_to_end_id,
        uetr=leg.uetr,
    )


def decision_status(
    pvp: SecretTerms, leg: LegTerms, decision: DecisionKind, reason: str | None
) -> TransactionStatus:
    """COMMIT: ACSP with the fulfilment (``pvp.secret``); ABORT: RJCT with its reason."""
    if decision is DecisionKind.COMMIT:
        return TransactionStatus(
            original=original(leg),
            status="ACSP",
            pvp=PvPTerms(
                pvp_id=pvp.id, leg=leg.leg, condition=pvp.condition, fulfilment=pvp.secret
            ),
        )
    return TransactionStatus(original=original(leg), status="RJCT", reason=reason or "NARR")


def cancellation(pvp: Terms, leg: LegTerms, reason: str | None) -> CancellationRequest:
    return CancellationRequest(
        cancellation_id=new_id("X"),
        original=original(leg),
        amount=Money(leg.amount, leg.currency),
        settlement_date=ms_to_dt(pvp.deadline).date(),
        reason=reason if reason and re.fullmatch(r"[A-Z0-9]{4}", reason) else None,
    )


def decision_message(
    connector_bic: str,
    dest: str,
    decision: DecisionKind,
    items: Sequence[tuple[SecretTerms, LegTerms, str | None]],
) -> Message:
    """One pacs.002 (COMMIT: ACSP + fulfilment) or camt.056 (ABORT) for (pvp, leg, reason)
    items, all to the network ``dest``."""
    if decision is DecisionKind.COMMIT:
        return Pacs002(
            msg_id=new_id(),
            created=datetime.now(UTC),
            transactions=tuple(decision_status(p, leg, decision, r) for p, leg, r in items),
        )
    return Camt056(
        assignment_id=new_id(),
        assigner_bic=connector_bic,
        assignee_bic=dest,
        created=datetime.now(UTC),
        transactions=tuple(cancellation(p, leg, r) for p, leg, r in items),
    )


__all__ = [
    "CAMT056",
    "PACS002",
    "PACS009",
    "LegTerms",
    "PvPRef",
    "SecretTerms",
    "Terms",
    "cancellation",
    "credit_transfer",
    "decision_message",
    "decision_status",
    "iso",
    "ms_to_dt",
    "new_id",
    "original",
]
