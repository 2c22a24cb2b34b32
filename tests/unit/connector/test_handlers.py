"""The connector's protocol (``gateway.connector.handlers``) on an in-memory repository: what
it decides from what the networks report, and what it sends them.

The safety promise first: the connector commits only when both legs are locked before
``deadline - margin``, and never once that moment has passed; its decision is final.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.connector.messages import CAMT056, PACS002
from gateway.connector.model import DecisionKind, LegStatus, PvPState
from gateway.connector.store import PvPRow, now_ms
from gateway.iso20022 import Camt056, MessageRejected, Pacs002
from tests.unit.connector.fakes import (
    DT_NETWORK,
    FX_NETWORK,
    MARGIN_MS,
    ConstraintViolation,
    World,
)

FAR = 10 * MARGIN_MS
"""A deadline this far off leaves the margin well ahead, however slowly a test runs."""


@pytest.fixture
def world() -> World:
    return World.make()


def _lock_both(world: World, pvp: PvPRow) -> None:
    assert world.receive(world.status(world.leg(pvp, "DT"), "ACSP"), DT_NETWORK)
    assert world.receive(world.status(world.leg(pvp, "FX"), "ACSP"), FX_NETWORK)


def _decisions_sent(world: World) -> list[tuple[str, str]]:
    """(network, message type) of every decision sent, oldest first."""
    return [
        (r["destination_bic"], r["msg_def_id"])
        for r in world.sent()
        if r["msg_def_id"] in (PACS002, CAMT056) and r["pvp_id"] is not None
    ]


def _overdue(world: World, pvp: PvPRow) -> None:
    """The PvP's deadline - margin has passed since it was made (its deadline moved back)."""
    world.repo.pvps[pvp.id] = replace(world.repo.pvps[pvp.id], deadline=now_ms() - 1)


def _abort_if_overdue(world: World, pvp: PvPRow) -> bool:
    work = world.work()
    aborted = world.handlers.abort_if_overdue(work, pvp.id)
    world.commit(work)
    return aborted


def test_both_legs_locked_before_the_margin_commit_with_the_fulfilment_to_both(
    world: World,
) -> None:
    pvp = world.pvp(deadline_in_ms=FAR)
    assert world.receive(world.status(world.leg(pvp, "DT"), "ACSP"), DT_NETWORK)
    assert world.repo.decisions == {} and world.sent() == []  # one leg locked: nothing yet

    assert world.receive(world.status(world.leg(pvp, "FX"), "ACSP"), FX_NETWORK)
    decision = world.repo.decisions[pvp.id]
    assert (decision.kind, decision.reason, decision.detail) == (
        DecisionKind.COMMIT,
        None,
        "both legs locked in time",
    )
    assert world.repo.pvps[pvp.id].state is PvPState.COMMITTED
    assert _decisions_sent(world) == [(DT_NETWORK, PACS002), (FX_NETWORK, PACS002)]
    for row in world.sent():
        leg = world.leg(pvp, "DT" if row["destination_bic"] == DT_NETWORK else "FX")
        assert leg.status is LegStatus.LOCKED and leg.decision_sent_at is not None
        msg = world.message(row)
        assert isinstance(msg, Pacs002)
        [status] = msg.transactions
        assert status.status == "ACSP" and status.original.uetr == leg.uetr
        assert status.pvp is not None and status.pvp.fulfilment == pvp.secret
    # The log: each ACSP, then the decision it caused.
    assert [(e.direction, e.peer) for e in world.log] == [
        ("in", DT_NETWORK),
        ("in", FX_NETWORK),
        ("out", DT_NETWORK),
        ("out", FX_NETWORK),
    ]

    # Both networks settle: the PvP is settled.
    for name, network in (("DT", DT_NETWORK), ("FX", FX_NETWORK)):
        assert world.receive(world.status(world.leg(pvp, name), "ACSC"), network)
    assert world.repo.pvps[pvp.id].state is PvPState.SETTLED


def test_legs_locked_past_deadline_minus_margin_are_never_committed_and_abort_tmot(
    world: World,
) -> None:
    """Both networks answer ACSP before the deadline but after ``deadline - margin``: no
    COMMIT, ever; the sweeper's turn aborts the PvP (TMOT) and cancels both legs."""
    pvp = world.pvp(deadline_in_ms=MARGIN_MS // 2)
    _lock_both(world, pvp)
    assert world.repo.decisions == {}
    assert world.repo.pvps[pvp.id].state is PvPState.PENDING
    assert world.sent() == []

    assert _abort_if_overdue(world, pvp)
    decision = world.repo.decisions[pvp.id]
    assert (decision.kind, decision.reason) == (DecisionKind.ABORT, "TMOT")
    assert world.repo.pvps[pvp.id].state is PvPState.ABORTED
    assert _decisions_sent(world) == [(DT_NETWORK, CAMT056), (FX_NETWORK, CAMT056)]
    for row in world.sent():
        msg = world.message(row)
        assert isinstance(msg, Camt056) and msg.assignee_bic == row["destination_bic"]

    # Late statuses change nothing: still no COMMIT.
    _lock_both(world, pvp)
    assert all(kind == CAMT056 for _, kind in _decisions_sent(world))


def test_a_pvp_still_before_deadline_minus_margin_is_not_aborted_by_the_sweeper(
    world: World,
) -> None:
    pvp = world.pvp(deadline_in_ms=FAR)
    assert not _abort_if_overdue(world, pvp)
    assert world.repo.decisions == {} and world.sent() == []


def test_a_rejected_leg_aborts_both(world: World) -> None:
    pvp = world.pvp(deadline_in_ms=FAR)
    assert world.receive(world.status(world.leg(pvp, "DT"), "ACSP"), DT_NETWORK)
    assert world.receive(world.status(world.leg(pvp, "FX"), "RJCT", "AM04"), FX_NETWORK)

    decision = world.repo.decisions[pvp.id]
    assert (decision.kind, decision.reason) == (DecisionKind.ABORT, "AM04")
    assert decision.detail == f"leg FX rejected by {FX_NETWORK}"
    fx = world.leg(pvp, "FX")
    assert (fx.status, fx.reason) == (LegStatus.REJECTED, "AM04")
    assert _decisions_sent(world) == [(DT_NETWORK, CAMT056), (FX_NETWORK, CAMT056)]


def test_a_rejection_first_means_no_commit_when_the_other_leg_locks(world: World) -> None:
    pvp = world.pvp(deadline_in_ms=FAR)
    assert world.receive(world.status(world.leg(pvp, "FX"), "RJCT", "AC01"), FX_NETWORK)
    assert world.receive(world.status(world.leg(pvp, "DT"), "ACSP"), DT_NETWORK)
    assert world.repo.decisions[pvp.id].kind is DecisionKind.ABORT
    # The DT leg, locked after the abort, is asked to cancel again; nothing commits.
    assert _decisions_sent(world) == [
        (DT_NETWORK, CAMT056),
        (FX_NETWORK, CAMT056),
        (DT_NETWORK, CAMT056),
    ]


def test_a_duplicate_acsp_is_idempotent(world: World) -> None:
    pvp = world.pvp(deadline_in_ms=FAR)
    dt_acsp = world.status(world.leg(pvp, "DT"), "ACSP")
    assert world.receive(dt_acsp, DT_NETWORK)
    locked = world.leg(pvp, "DT")

    # The same message again: recognised, nothing done.
    assert not world.receive(dt_acsp, DT_NETWORK)
    # The same status in a new message: the leg stays as it was locked.
    assert world.receive(world.status(locked, "ACSP"), DT_NETWORK)
    assert world.leg(pvp, "DT") == locked
    assert world.repo.decisions == {} and world.sent() == []

    assert world.receive(world.status(world.leg(pvp, "FX"), "ACSP"), FX_NETWORK)
    committed = world.repo.decisions[pvp.id]
    sent = list(world.sent())
    # After the COMMIT, either ACSP again: no second decision, nothing sent again.
    assert world.receive(world.status(world.leg(pvp, "FX"), "ACSP"), FX_NETWORK)
    assert not world.receive(dt_acsp, DT_NETWORK)
    assert world.repo.decisions == {pvp.id: committed}
    assert world.sent() == sent


def test_a_message_id_received_again_with_other_content_is_refused_du01(world: World) -> None:
    pvp = world.pvp(deadline_in_ms=FAR)
    acsp = world.status(world.leg(pvp, "DT"), "ACSP")
    assert world.receive(acsp, DT_NETWORK)
    work = world.work()
    with pytest.raises(MessageRejected) as refused:
        world.handlers.take(work, acsp, DT_NETWORK, "0" * 64, b"other bytes")
    assert refused.value.code == "DU01"


def _status_answer(world: World, sender: str) -> Pacs002:
    [answer] = [r for r in world.sent() if r["destination_bic"] == sender][-1:]
    assert answer["msg_def_id"] == PACS002
    msg = world.message(answer)
    assert isinstance(msg, Pacs002)
    return msg


def test_a_status_request_is_answered_with_the_leg_s_status(world: World) -> None:
    pvp = world.pvp(deadline_in_ms=FAR)
    dt = world.leg(pvp, "DT")

    assert world.receive(world.status_request(dt), DT_NETWORK)
    [pending] = _status_answer(world, DT_NETWORK).transactions
    assert (pending.status, pending.original.uetr) == ("PDNG", dt.uetr)

    _lock_both(world, pvp)
    assert world.receive(world.status_request(dt), DT_NETWORK)
    [committed] = _status_answer(world, DT_NETWORK).transactions
    assert committed.status == "ACSP" and committed.original.uetr == dt.uetr
    assert committed.pvp is not None and committed.pvp.fulfilment == pvp.secret

    unknown = replace(dt, uetr="00000000-0000-4000-8000-000000000000")
    assert world.receive(world.status_request(unknown), DT_NETWORK)
    [refused] = _status_answer(world, DT_NETWORK).transactions
    assert (refused.status, refused.reason, refused.additional_info) == (
        "RJCT",
        "NARR",
        "unknown UETR",
    )


def test_a_status_request_past_deadline_minus_margin_aborts_first(world: World) -> None:
    pvp = world.pvp(deadline_in_ms=MARGIN_MS // 2)
    dt = world.leg(pvp, "DT")
    assert world.receive(world.status(dt, "ACSP"), DT_NETWORK)

    assert world.receive(world.status_request(dt), DT_NETWORK)
    decision = world.repo.decisions[pvp.id]
    assert (decision.kind, decision.reason) == (DecisionKind.ABORT, "TMOT")
    [answer] = _status_answer(world, DT_NETWORK).transactions
    assert (answer.status, answer.reason) == ("RJCT", "TMOT")
    assert _decisions_sent(world)[:2] == [(DT_NETWORK, CAMT056), (FX_NETWORK, CAMT056)]


def test_a_decision_is_final(world: World) -> None:
    pvp = world.pvp(deadline_in_ms=FAR)
    _lock_both(world, pvp)
    committed = world.repo.decisions[pvp.id]
    sent = list(world.sent())

    # A late rejection of a locked leg, the deadline passing, a status request past it and a
    # direct ABORT: none of them changes the COMMIT or sends a cancellation.
    assert world.receive(world.status(world.leg(pvp, "FX"), "RJCT", "AM04"), FX_NETWORK)
    _overdue(world, pvp)
    assert not _abort_if_overdue(world, pvp)
    assert world.receive(world.status_request(world.leg(pvp, "DT")), DT_NETWORK)
    work = world.work()
    world.handlers.decide(work, world.repo.pvps[pvp.id], DecisionKind.ABORT, "TMOT", "late")
    world.commit(work)

    assert world.repo.decisions == {pvp.id: committed}
    assert world.repo.pvps[pvp.id].state is PvPState.COMMITTED
    assert world.leg(pvp, "FX").status is LegStatus.LOCKED
    new = [(r["destination_bic"], r["msg_def_id"]) for r in world.sent() if r not in sent]
    assert new == [(DT_NETWORK, PACS002)]  # the answer to the status request, and nothing else
    [answer] = _status_answer(world, DT_NETWORK).transactions
    assert answer.status == "ACSP"
    # And the store itself refuses a second decision.
    with pytest.raises(ConstraintViolation):
        world.repo.insert_decision(work, replace(committed, kind=DecisionKind.ABORT))
