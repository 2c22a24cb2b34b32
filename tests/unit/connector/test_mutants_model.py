"""What the connector records in a decision, and the words of each refusal of its model.

A decision is compared whole: the PvP it decides and its detail are stored with it, and an
auditor reads them back. A refusal names the verb and the state it was asked from (the
handlers log it), and a refused COMMIT names the PvP. These pin the changes a mutation run
(ops/mutate) found no other test noticing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.connector.model import (
    CommitRefused,
    Decision,
    DecisionKind,
    IllegalTransition,
    Leg,
    LegStatus,
    PvP,
    PvPState,
)

DEADLINE = 1_000_000
MARGIN = 5_000
LAST_MOMENT = DEADLINE - MARGIN - 1


def _pvp(state: PvPState = PvPState.PENDING) -> PvP:
    return PvP("PVP-7", DEADLINE, "c" * 64, state)


def _locked(leg: str) -> Leg:
    return Leg("PVP-7", leg, LegStatus.LOCKED)


def test_a_commit_decision_records_the_pvp_and_its_detail() -> None:
    legs = [_locked("DT"), _locked("FX")]
    _, decision = _pvp().commit(legs, LAST_MOMENT, MARGIN, "both legs locked in time")
    assert decision == Decision(
        "PVP-7", DecisionKind.COMMIT, None, "both legs locked in time", LAST_MOMENT
    )


def test_an_abort_decision_records_the_pvp_its_reason_and_its_detail() -> None:
    _, decision = _pvp().abort("TMOT", "deadline - margin passed", 7)
    assert decision == Decision("PVP-7", DecisionKind.ABORT, "TMOT", "deadline - margin passed", 7)


def test_a_refused_commit_names_the_pvp() -> None:
    legs = [_locked("DT"), Leg("PVP-7", "FX", LegStatus.INSTRUCTED)]
    expected = r"^PvP PVP-7: legs not all locked, or past deadline - margin$"
    with pytest.raises(CommitRefused, match=expected):
        _pvp().commit(legs, LAST_MOMENT, MARGIN, "not yet")


@pytest.mark.parametrize(
    ("verb", "message"),
    [
        (lambda p: p.commit([_locked("DT")], 0, MARGIN, ""), r"^pvp commit from settled$"),
        (lambda p: p.abort("TMOT", "", 0), r"^pvp abort from settled$"),
        (lambda p: p.reopen(), r"^pvp reopen from settled$"),
    ],
    ids=["commit", "abort", "reopen"],
)
def test_a_pvp_verb_refused_names_itself_and_the_state(
    verb: Callable[[PvP], object], message: str
) -> None:
    with pytest.raises(IllegalTransition, match=message):
        verb(_pvp(PvPState.SETTLED))


@pytest.mark.parametrize(
    ("verb", "status", "message"),
    [
        (lambda leg: leg.instruct(), LegStatus.LOCKED, r"^leg instruct from locked$"),
        (lambda leg: leg.lock(42), LegStatus.QUEUED, r"^leg lock from queued$"),
        (lambda leg: leg.reject("AM04"), LegStatus.SETTLED, r"^leg reject from settled$"),
        (
            lambda leg: leg.release_after_abort(),
            LegStatus.INSTRUCTED,
            r"^leg release_after_abort from instructed \(that is a reject\)$",
        ),
    ],
    ids=["instruct", "lock", "reject", "release_after_abort"],
)
def test_a_leg_verb_refused_names_itself_and_the_status(
    verb: Callable[[Leg], Leg], status: LegStatus, message: str
) -> None:
    with pytest.raises(IllegalTransition, match=message):
        verb(Leg("PVP-7", "DT", status))
