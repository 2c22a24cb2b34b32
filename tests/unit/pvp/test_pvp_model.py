"""The PvP leg and instruction state machines: legal moves, refused moves, reported statuses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.pvp.model import (
    FINAL_STATES,
    LEG_TRANSITIONS,
    FulfilmentMismatch,
    IllegalLegTransition,
    InstructionState,
    Leg,
    LegState,
    Side,
    iso_reason,
)
from tests.unit.pvp.builders import SECRET, T0, instruction, received, terms


def test_a_leg_locks_then_settles_with_the_right_fulfilment() -> None:
    leg = received().lock(T0).settle(SECRET.hex(), T0)
    assert leg.state is LegState.SETTLED and leg.status() == ("ACSC", None)
    assert leg.resolved_by == "connector"


def test_a_wrong_fulfilment_is_refused_ch16_and_changes_nothing() -> None:
    locked = received().lock(T0)
    with pytest.raises(FulfilmentMismatch) as err:
        locked.settle("00" * 32, T0)
    assert err.value.code == "CH16"
    assert locked.state is LegState.LOCKED


def test_settled_is_final_so_a_release_after_it_is_refused() -> None:
    settled = received().lock(T0).settle(SECRET.hex(), T0)
    with pytest.raises(IllegalLegTransition):
        settled.release(T0)


def test_statuses_reported_to_a_pacs028() -> None:
    assert received().status() == ("PDNG", None)
    assert received().lock(T0).status() == ("ACSP", None)
    assert received().reject("AM04", T0).status() == ("RJCT", "AM04")
    assert received().lock(T0).release(T0).status() == ("RJCT", "DS02")
    assert Leg.tombstone("u-2", T0).status() == ("RJCT", "DS02")


def test_a_tombstone_stays_cancelled_when_the_late_pacs009_arrives() -> None:
    tomb = Leg.tombstone("u-2", T0)
    late = tomb.with_terms(terms(), T0)
    assert late.state is LegState.CANCELLED and not late.is_tombstone
    with pytest.raises(IllegalLegTransition):
        late.lock(T0)


def test_deadline_rules_ask_after_grace_and_alert_after_last_resort() -> None:
    leg = Leg.receive("u-1", terms(deadline=T0), T0).lock(T0)
    assert not leg.needs_status_request(T0 + timedelta(seconds=1), 2, 5)
    assert leg.needs_status_request(T0 + timedelta(seconds=2), 2, 5)
    asked = leg.status_requested(T0 + timedelta(seconds=2))
    assert not asked.needs_status_request(T0 + timedelta(seconds=3), 2, 5)
    assert asked.needs_status_request(T0 + timedelta(seconds=7), 2, 5)
    assert not leg.past_last_resort(T0 + timedelta(seconds=299), 300)
    assert leg.past_last_resort(T0 + timedelta(seconds=300), 300)


@given(st.lists(st.sampled_from(["lock", "reject", "cancel", "settle", "release"]), max_size=8))
def test_every_move_follows_the_transition_table(verbs: list[str]) -> None:
    leg = received()
    for verb in verbs:
        before = leg.state
        try:
            if verb == "lock":
                leg = leg.lock(T0)
            elif verb == "reject":
                leg = leg.reject("AM04", T0)
            elif verb == "cancel":
                leg = leg.cancel(T0)
            elif verb == "settle":
                leg = leg.settle(SECRET.hex(), T0)
            else:
                leg = leg.release(T0)
        except IllegalLegTransition:
            assert leg.state is before
            continue
        assert leg.state in LEG_TRANSITIONS[before]
    if leg.state in FINAL_STATES:
        assert not LEG_TRANSITIONS[leg.state]


def test_ledger_refusals_map_to_iso_reasons() -> None:
    assert iso_reason("AM04") == "AM04"
    assert iso_reason("AC06") == "AC06"
    assert iso_reason("NOT_ALLOWED") == "AG01"
    assert iso_reason("SOMETHING_NEW") == "MS03"


def test_an_instruction_needs_exactly_one_dt_side() -> None:
    instruction().validate()
    assert instruction().dt_wallet == "hsbk-dt"
    assert instruction(sell=Side("AED", 8, "x"), buy=Side("KZT", 100, "hsbk-dt")).dt_side == "buy"
    with pytest.raises(Exception, match="exactly one"):
        instruction(buy=Side("KZT", 1, "y")).validate()


def test_an_instruction_follows_its_dt_leg() -> None:
    inst = instruction().sent(T0)
    leg = received().lock(T0)
    matched = inst.follow(leg, T0)
    assert matched.state is InstructionState.MATCHED and matched.pvp_id == "PVP-1"
    assert matched.follow(leg.settle(SECRET.hex(), T0), T0).state is InstructionState.SETTLED
    failed = inst.follow(received().reject("AM04", T0), T0)
    assert failed.state is InstructionState.FAILED and failed.reason == "AM04"
