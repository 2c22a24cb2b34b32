"""The PvP handlers on an in-memory unit of work: what each inbound message does to the legs
and the DT ledger, and what it answers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.iso20022 import Camt029, Pacs009, Pacs028, StatusRequest
from gateway.ledger.model import LockState
from gateway.pvp import handlers
from gateway.pvp.model import LegState
from tests.support.ledger_fakes import NOW, balances
from tests.unit.pvp.builders import (
    U1,
    U2,
    U3,
    U9,
    cancel,
    credit_transfer,
    decision,
    funded_uow,
    original,
    statuses,
)
from tests.unit.pvp.fakes import CTX, FakePvPUnitOfWork, apply, receive

uow = pytest.fixture(funded_uow, name="uow")


def pacs009(*legs: tuple[str, int], msg_id: str = "P9-1") -> Pacs009:
    deadline = (NOW + timedelta(minutes=1)).timetz()
    return Pacs009(msg_id, NOW, tuple(credit_transfer(u, a, NOW, deadline) for u, a in legs))


def locked(uow: FakePvPUnitOfWork, uetr: str, amount: int = 250_000) -> None:
    receive(uow, pacs009((uetr, amount)))
    apply(uow, pacs009((uetr, amount)))


def test_a_pacs009_locks_the_dt_amount_and_answers_acsp(uow: FakePvPUnitOfWork) -> None:
    receive(uow, pacs009((U1, 250_000)))
    claimed = apply(uow, pacs009((U1, 250_000)))
    assert uow.legs[U1].state is LegState.LOCKED
    assert uow.locks[f"pvp-{U1}"].state is LockState.PENDING
    assert balances(uow)["hsbk-dt"] == (1_000_000, 250_000)
    assert statuses(uow) == [(U1, "ACSP", None)]
    assert len(claimed) == 1  # the reply, claimed for the caller to send


def test_a_pacs009_the_ledger_refuses_is_rejected_and_locks_nothing(
    uow: FakePvPUnitOfWork,
) -> None:
    receive(uow, pacs009((U1, 2_000_000)))
    apply(uow, pacs009((U1, 2_000_000)))
    assert uow.legs[U1].state is LegState.REJECTED
    assert uow.locks == {}
    assert statuses(uow) == [(U1, "RJCT", "AM04")]


def test_one_leg_refused_spares_the_others_of_its_pacs009(uow: FakePvPUnitOfWork) -> None:
    msg = pacs009((U1, 300_000), (U2, 900_000), (U3, 300_000))
    receive(uow, msg)
    apply(uow, msg)
    assert [uow.legs[u].state for u in (U1, U2, U3)] == [
        LegState.LOCKED,
        LegState.REJECTED,
        LegState.LOCKED,
    ]
    assert balances(uow)["hsbk-dt"] == (1_000_000, 600_000)
    assert statuses(uow) == [(U1, "ACSP", None), (U2, "RJCT", "AM04"), (U3, "ACSP", None)]


def test_a_pacs002_acsc_with_the_fulfilment_settles(uow: FakePvPUnitOfWork) -> None:
    locked(uow, U1)
    apply(uow, decision(U1, "ACSC"))
    assert uow.legs[U1].state is LegState.SETTLED
    assert balances(uow)["hsbk-dt"] == (750_000, 0)
    assert balances(uow)["cbuae-dt"] == (250_000, 0)
    assert statuses(uow)[-1] == (U1, "ACSC", None)


def test_a_fulfilment_that_is_not_the_secret_settles_nothing(uow: FakePvPUnitOfWork) -> None:
    locked(uow, U1)
    apply(uow, decision(U1, "ACSC", secret=bytes(32)))
    assert uow.legs[U1].state is LegState.LOCKED
    assert statuses(uow)[-1] == (U1, "RJCT", "CH16")


def test_a_pacs002_rjct_releases_the_lock(uow: FakePvPUnitOfWork) -> None:
    locked(uow, U1)
    apply(uow, decision(U1, "RJCT", secret=None))
    assert uow.legs[U1].state is LegState.RELEASED
    assert uow.locks[f"pvp-{U1}"].state is LockState.VOIDED
    assert balances(uow)["hsbk-dt"] == (1_000_000, 0)


def test_a_camt056_aborts_a_lock_and_confirms_the_cancellation(uow: FakePvPUnitOfWork) -> None:
    locked(uow, U1)
    apply(uow, cancel(U1))
    assert uow.legs[U1].state is LegState.RELEASED
    assert balances(uow)["hsbk-dt"] == (1_000_000, 0)
    [answer] = [m for m in uow.sent() if isinstance(m, Camt029)]
    assert answer.confirmation == "CNCL"
    assert [(t.original.uetr, t.status) for t in answer.transactions] == [(U1, "ACCR")]


def test_a_camt056_after_settlement_is_refused(uow: FakePvPUnitOfWork) -> None:
    locked(uow, U1)
    apply(uow, decision(U1, "ACSC"))
    apply(uow, cancel(U1))
    assert uow.legs[U1].state is LegState.SETTLED
    [answer] = [m for m in uow.sent() if isinstance(m, Camt029)]
    assert answer.confirmation == "RJCR"


def test_a_pacs009_after_its_cancellation_locks_nothing(uow: FakePvPUnitOfWork) -> None:
    """The camt.056 came first: a tombstone, and the late pacs.009 is answered RJCT DS02."""
    apply(uow, cancel(U1))
    assert uow.legs[U1].state is LegState.CANCELLED
    apply(uow, pacs009((U1, 250_000)))
    assert uow.locks == {}
    assert statuses(uow) == [(U1, "RJCT", "DS02")]


def test_a_pacs009_applied_again_locks_once(uow: FakePvPUnitOfWork) -> None:
    locked(uow, U1)
    apply(uow, pacs009((U1, 250_000)))
    assert len(uow.locks) == 1
    assert balances(uow)["hsbk-dt"] == (1_000_000, 250_000)
    assert statuses(uow) == [(U1, "ACSP", None), (U1, "ACSP", None)]


def test_a_repeated_decision_settles_once_and_gets_the_same_answer(
    uow: FakePvPUnitOfWork,
) -> None:
    locked(uow, U1)
    apply(uow, decision(U1, "ACSC", mid="D2-1"))
    before = balances(uow)
    # While the first answer still waits in the outbox, it answers the copy too.
    apply(uow, decision(U1, "ACSC", mid="D2-2"))
    assert statuses(uow)[-1] == (U1, "ACSC", None) and len(statuses(uow)) == 2
    uow.mark_sent()
    apply(uow, decision(U1, "ACSC", mid="D2-3"))
    assert statuses(uow)[-1] == (U1, "ACSC", None) and len(statuses(uow)) == 3
    assert balances(uow) == before


def test_a_pacs028_is_answered_with_each_legs_status(uow: FakePvPUnitOfWork) -> None:
    locked(uow, U1)
    apply(uow, Pacs028("S28", NOW, (StatusRequest(original(U1)), StatusRequest(original(U9)))))
    assert statuses(uow)[-2:] == [(U1, "ACSP", None), (U9, "RJCT", "NARR")]


def test_a_handler_that_fails_leaves_nothing_and_claims_nothing(uow: FakePvPUnitOfWork) -> None:
    """All or nothing in the caller's transaction: a failure after the lock takes back the
    lock, the leg's move and the reply it had claimed."""
    receive(uow, pacs009((U1, 250_000)))

    def fail_after_the_lock() -> None:
        with uow, uow.savepoint():
            handlers.apply(uow, pacs009((U1, 250_000)), CTX, NOW)  # type: ignore[arg-type]
            assert uow.claimed
            raise RuntimeError("after the lock")

    with pytest.raises(RuntimeError):
        fail_after_the_lock()
    assert uow.claimed == []
    assert uow.legs[U1].state is LegState.RECEIVED
    assert uow.locks == {}
    assert statuses(uow) == []
