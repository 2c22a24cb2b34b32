"""The connector's domain: every move of a PvP and a leg, legal or not, and the commit rule at
the deadline's margin."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.connector.model import (
    LEG_TRANSITIONS,
    PVP_TRANSITIONS,
    CommitRefused,
    DecisionKind,
    IllegalTransition,
    Leg,
    LegStatus,
    PvP,
    PvPState,
)

DEADLINE = 1_000_000
MARGIN = 5_000
LAST_MOMENT = DEADLINE - MARGIN - 1  # the last millisecond a COMMIT is taken


def _leg(status: LegStatus, *, acknowledged: bool = False) -> Leg:
    return Leg("PVP1", "DT", status, acknowledged=acknowledged)


def _pvp(state: PvPState = PvPState.PENDING) -> PvP:
    return PvP("PVP1", DEADLINE, "c" * 64, state)


LEG_VERBS: dict[str, Callable[[Leg], Leg]] = {
    "instruct": lambda leg: leg.instruct(),
    "lock": lambda leg: leg.lock(42),
    "lock_after_abort": lambda leg: leg.lock_after_abort(),
    "reject": lambda leg: leg.reject("AM04"),
    "settle": lambda leg: leg.settle(),
    "cancelled": lambda leg: leg.cancellation_answered(refused=False),
    "cancel_refused": lambda leg: leg.cancellation_answered(refused=True),
    "release_after_abort": lambda leg: leg.release_after_abort(),
}

_ALL = set(LegStatus)
_S = LegStatus
# verb -> {from: to}; a status missing from a verb's map is refused by it.
LEG_MOVES: dict[str, dict[LegStatus, LegStatus]] = {
    "instruct": {_S.QUEUED: _S.INSTRUCTED},
    "lock": {_S.INSTRUCTED: _S.LOCKED},
    "lock_after_abort": {s: _S.LOCKED for s in _ALL},
    "reject": {_S.INSTRUCTED: _S.REJECTED},
    "settle": {s: _S.SETTLED for s in _ALL},
    "cancelled": {
        **{s: _S.RELEASED for s in _ALL},
        _S.REJECTED: _S.REJECTED,
        _S.SETTLED: _S.SETTLED,
    },
    "cancel_refused": {
        **{s: _S.REFUSED for s in _ALL},
        _S.REJECTED: _S.REJECTED,
        _S.SETTLED: _S.SETTLED,
    },
    "release_after_abort": {s: _S.RELEASED for s in _ALL - {_S.INSTRUCTED}},
}


@pytest.mark.parametrize("verb", sorted(LEG_VERBS))
@pytest.mark.parametrize("status", list(LegStatus))
def test_a_leg_moves_as_its_verb_allows_and_no_other_way(verb: str, status: LegStatus) -> None:
    expected = LEG_MOVES[verb].get(status)
    if expected is None:
        with pytest.raises(IllegalTransition):
            LEG_VERBS[verb](_leg(status))
        return
    moved = LEG_VERBS[verb](_leg(status))
    assert moved.status is expected
    assert moved.status is status or moved.status in LEG_TRANSITIONS[status]


def test_the_leg_table_lists_exactly_the_moves_the_verbs_make() -> None:
    made = {
        (source, target)
        for moves in LEG_MOVES.values()
        for source, target in moves.items()
        if source is not target
    }
    listed = {(s, t) for s, targets in LEG_TRANSITIONS.items() for t in targets}
    assert made == listed


def test_what_each_leg_verb_records() -> None:
    assert _leg(_S.INSTRUCTED).lock(42).locked_at == 42
    assert _leg(_S.INSTRUCTED).reject("AM04").reason == "AM04"
    assert _leg(_S.RELEASED, acknowledged=True).lock_after_abort().acknowledged is False
    assert _leg(_S.LOCKED).settle().acknowledged is True
    assert _leg(_S.LOCKED).cancellation_answered(refused=False).acknowledged is True
    assert _leg(_S.REJECTED).cancellation_answered(refused=True).acknowledged is True
    assert _leg(_S.LOCKED).release_after_abort().acknowledged is True


def test_commit_when_both_legs_locked_before_the_margin() -> None:
    legs = [_leg(_S.LOCKED), Leg("PVP1", "FX", _S.LOCKED)]
    pvp, decision = _pvp().commit(legs, LAST_MOMENT, MARGIN, "both legs locked in time")
    assert pvp.state is PvPState.COMMITTED
    assert decision.kind is DecisionKind.COMMIT and decision.is_commit
    assert decision.reason is None and decision.decided_at == LAST_MOMENT


def test_commit_refused_at_deadline_minus_margin() -> None:
    legs = [_leg(_S.LOCKED), Leg("PVP1", "FX", _S.LOCKED)]
    assert _pvp().may_commit(legs, LAST_MOMENT, MARGIN)
    assert not _pvp().may_commit(legs, LAST_MOMENT + 1, MARGIN)
    assert _pvp().past_margin(LAST_MOMENT + 1, MARGIN)
    assert not _pvp().past_margin(LAST_MOMENT, MARGIN)
    with pytest.raises(CommitRefused):
        _pvp().commit(legs, LAST_MOMENT + 1, MARGIN, "too late")


@pytest.mark.parametrize("other", [s for s in LegStatus if s is not _S.LOCKED])
def test_commit_refused_while_a_leg_is_not_locked(other: LegStatus) -> None:
    legs = [_leg(_S.LOCKED), Leg("PVP1", "FX", other)]
    assert not _pvp().may_commit(legs, 0, MARGIN)
    with pytest.raises(CommitRefused):
        _pvp().commit(legs, 0, MARGIN, "not yet")


@pytest.mark.parametrize("state", [s for s in PvPState if s is not PvPState.PENDING])
def test_a_decided_pvp_is_decided_once(state: PvPState) -> None:
    legs = [_leg(_S.LOCKED)]
    assert not _pvp(state).may_commit(legs, 0, MARGIN)
    with pytest.raises(IllegalTransition):
        _pvp(state).commit(legs, 0, MARGIN, "again")
    with pytest.raises(IllegalTransition):
        _pvp(state).abort("TMOT", "again", 0)


def test_abort_records_its_reason() -> None:
    pvp, decision = _pvp().abort("TMOT", "deadline - margin passed", 7)
    assert pvp.state is PvPState.ABORTED
    assert (decision.kind, decision.reason, decision.decided_at) == (DecisionKind.ABORT, "TMOT", 7)


PVP_VERBS: dict[str, Callable[[PvP], PvP]] = {
    "commit": lambda p: p.commit([_leg(_S.LOCKED)], 0, MARGIN, "")[0],
    "abort": lambda p: p.abort("NARR", "", 0)[0],
    "reopen": lambda p: p.reopen(),
    "complete": lambda p: p.complete([_leg(_S.SETTLED, acknowledged=True)]),
}
_P = PvPState
PVP_MOVES: dict[str, dict[PvPState, PvPState]] = {
    "commit": {_P.PENDING: _P.COMMITTED},
    "abort": {_P.PENDING: _P.ABORTED},
    "reopen": {_P.ABORTED: _P.ABORTED, _P.CANCELLED: _P.ABORTED},
    "complete": {
        _P.PENDING: _P.PENDING,
        _P.COMMITTED: _P.SETTLED,
        _P.ABORTED: _P.CANCELLED,
        _P.SETTLED: _P.SETTLED,
        _P.CANCELLED: _P.CANCELLED,
    },
}


@pytest.mark.parametrize("verb", sorted(PVP_VERBS))
@pytest.mark.parametrize("state", list(PvPState))
def test_a_pvp_moves_as_its_verb_allows_and_no_other_way(verb: str, state: PvPState) -> None:
    expected = PVP_MOVES[verb].get(state)
    if expected is None:
        with pytest.raises(IllegalTransition):
            PVP_VERBS[verb](_pvp(state))
        return
    assert PVP_VERBS[verb](_pvp(state)).state is expected


def test_the_pvp_table_lists_exactly_the_moves_the_verbs_make() -> None:
    made = {(s, t) for moves in PVP_MOVES.values() for s, t in moves.items() if s is not t}
    listed = {(s, t) for s, targets in PVP_TRANSITIONS.items() for t in targets}
    assert made == listed


def test_a_pvp_completes_only_once_every_network_acknowledged() -> None:
    waiting = [_leg(_S.SETTLED, acknowledged=True), Leg("PVP1", "FX", _S.LOCKED)]
    assert _pvp(_P.COMMITTED).complete(waiting).state is _P.COMMITTED
    assert not _pvp(_P.COMMITTED).completed
    assert _pvp(_P.SETTLED).completed and _pvp(_P.CANCELLED).completed
