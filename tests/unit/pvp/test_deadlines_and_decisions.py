"""A pacs.009 that comes too late for its deadline locks nothing; every leg that ends records
the decision the gateway applied to it and what caused it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gateway.iso20022 import Pacs009
from gateway.pvp.model import Decision, DecisionCause, DecisionKind, LegState
from tests.support.ledger_fakes import NOW, balances
from tests.unit.pvp.builders import U1, cancel, credit_transfer, decision, funded_uow, statuses
from tests.unit.pvp.fakes import CTX, FakePvPUnitOfWork, apply, receive

uow = pytest.fixture(funded_uow, name="uow")

MARGIN = timedelta(seconds=CTX.safety_margin_seconds)


def pacs009(deadline: datetime, uetr: str = U1, amount: int = 250_000) -> Pacs009:
    tx = credit_transfer(uetr, amount, deadline, deadline.timetz())
    return Pacs009("P9-1", NOW - timedelta(seconds=5), (tx,))


def taken(uow: FakePvPUnitOfWork, deadline: datetime, at: datetime = NOW) -> None:
    """The pacs.009 stored, then applied at ``at``."""
    msg = pacs009(deadline)
    receive(uow, msg, at)
    apply(uow, msg, at)


def locked(uow: FakePvPUnitOfWork) -> None:
    taken(uow, NOW + timedelta(minutes=1))
    assert uow.legs[U1].state is LegState.LOCKED and uow.legs[U1].decision is None


# ------------------------------------------------------------------ deadlines


@pytest.mark.parametrize(
    "deadline",
    [NOW - timedelta(minutes=5), NOW, NOW + MARGIN / 2, NOW + MARGIN],
    ids=["passed", "now", "within-margin", "at-margin"],
)
def test_a_pacs009_too_late_for_its_deadline_is_refused_tm01_and_locks_nothing(
    uow: FakePvPUnitOfWork, deadline: datetime
) -> None:
    taken(uow, deadline)
    assert uow.legs[U1].state is LegState.REJECTED
    assert uow.legs[U1].reason == "TM01"
    assert uow.legs[U1].decision == Decision(DecisionKind.RJCT, DecisionCause.DEADLINE, NOW)
    assert uow.locks == {}
    assert balances(uow)["hsbk-dt"] == (1_000_000, 0)
    assert statuses(uow) == [(U1, "RJCT", "TM01")]


def test_a_pacs009_just_beyond_the_margin_locks(uow: FakePvPUnitOfWork) -> None:
    taken(uow, NOW + MARGIN + timedelta(milliseconds=1))
    assert uow.legs[U1].state is LegState.LOCKED
    assert statuses(uow) == [(U1, "ACSP", None)]


def test_the_deadline_counts_when_the_pacs009_is_applied_not_when_it_was_stored(
    uow: FakePvPUnitOfWork,
) -> None:
    """Stored in time, applied late (a backlog): what matters is when the lock would be made."""
    msg = pacs009(NOW + timedelta(seconds=2))
    receive(uow, msg, NOW)
    apply(uow, msg, NOW + timedelta(seconds=3))
    assert uow.legs[U1].reason == "TM01" and uow.locks == {}


# ------------------------------------------------------------------ decisions


def test_a_fulfilment_is_recorded_as_commit(uow: FakePvPUnitOfWork) -> None:
    locked(uow)
    apply(uow, decision(U1, "ACSC"), NOW + timedelta(seconds=1))
    assert uow.legs[U1].decision == Decision(
        DecisionKind.COMMIT, DecisionCause.FULFILMENT, NOW + timedelta(seconds=1)
    )


def test_a_camt056_on_a_lock_is_recorded_as_abort_by_camt056(uow: FakePvPUnitOfWork) -> None:
    locked(uow)
    apply(uow, cancel(U1))
    assert uow.legs[U1].state is LegState.RELEASED
    assert uow.legs[U1].decision == Decision(DecisionKind.ABORT, DecisionCause.CAMT056, NOW)


def test_a_camt056_before_the_lock_is_recorded_as_abort_by_camt056(
    uow: FakePvPUnitOfWork,
) -> None:
    receive(uow, pacs009(NOW + timedelta(minutes=1)))
    apply(uow, cancel(U1))  # the leg was stored, not yet applied
    assert uow.legs[U1].state is LegState.CANCELLED
    assert uow.legs[U1].decision == Decision(DecisionKind.ABORT, DecisionCause.CAMT056, NOW)


def test_a_camt056_for_an_unknown_uetr_leaves_an_aborted_tombstone(
    uow: FakePvPUnitOfWork,
) -> None:
    apply(uow, cancel(U1))
    assert uow.legs[U1].decision == Decision(DecisionKind.ABORT, DecisionCause.CAMT056, NOW)


def test_the_connectors_unasked_rjct_is_recorded_as_abort_by_pacs002(
    uow: FakePvPUnitOfWork,
) -> None:
    locked(uow)
    apply(uow, decision(U1, "RJCT", secret=None))
    assert uow.legs[U1].decision == Decision(DecisionKind.ABORT, DecisionCause.CONNECTOR_RJCT, NOW)


def test_the_rjct_answering_the_gateways_status_request_is_recorded_as_abort_by_deadline(
    uow: FakePvPUnitOfWork,
) -> None:
    locked(uow)
    later = NOW + timedelta(minutes=2)
    with uow:  # the deadline check asked the connector (pacs.028)
        uow.pvp.update_legs([uow.legs[U1].status_requested(later)])
        uow.commit()
    apply(uow, decision(U1, "RJCT", secret=None), later)
    assert uow.legs[U1].decision == Decision(DecisionKind.ABORT, DecisionCause.DEADLINE, later)


def test_a_ledger_refusal_is_recorded_as_rjct_by_refusal(uow: FakePvPUnitOfWork) -> None:
    msg = pacs009(NOW + timedelta(minutes=1), amount=2_000_000)
    receive(uow, msg)
    apply(uow, msg)
    assert uow.legs[U1].reason == "AM04"
    assert uow.legs[U1].decision == Decision(DecisionKind.RJCT, DecisionCause.REFUSAL, NOW)


def test_a_camt056_after_a_refusal_keeps_the_refusal(uow: FakePvPUnitOfWork) -> None:
    """The connector aborts a PvP one of whose legs was refused and cancels both legs: the
    refused one stays as the gateway decided it."""
    msg = pacs009(NOW + timedelta(minutes=1), amount=2_000_000)
    receive(uow, msg)
    apply(uow, msg)
    apply(uow, cancel(U1), NOW + timedelta(seconds=1))
    assert uow.legs[U1].state is LegState.REJECTED
    assert uow.legs[U1].decision == Decision(DecisionKind.RJCT, DecisionCause.REFUSAL, NOW)
