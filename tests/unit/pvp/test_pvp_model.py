"""The PvP leg and instruction state machines: legal moves, refused moves, reported statuses."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.pvp.model import (
    FINAL_STATES,
    LEG_TRANSITIONS,
    FulfilmentMismatch,
    IllegalLegTransition,
    Instruction,
    InstructionState,
    Leg,
    LegState,
    LegTerms,
    Side,
    iso_reason,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SECRET = bytes(range(32))
COND = hashlib.sha256(SECRET).hexdigest()


def terms(deadline: datetime = NOW) -> LegTerms:
    return LegTerms(
        msg_id="P9-1",
        end_to_end_id="hsbk-1",
        pvp_id="PVP-1",
        leg="DT",
        amount=100,
        currency="KZT",
        debtor_bic="HSBKKZKX",
        debtor_account="hsbk-dt",
        creditor_bic="CBAUAEAA",
        creditor_account="cbuae-dt",
        condition=COND,
        deadline=deadline,
    )


def received() -> Leg:
    return Leg.receive("u-1", terms(), NOW)


def test_a_leg_locks_then_settles_with_the_right_fulfilment() -> None:
    leg = received().lock(NOW).settle(SECRET.hex(), NOW)
    assert leg.state is LegState.SETTLED and leg.status() == ("ACSC", None)
    assert leg.resolved_by == "connector"


def test_a_wrong_fulfilment_is_refused_ch16_and_changes_nothing() -> None:
    locked = received().lock(NOW)
    with pytest.raises(FulfilmentMismatch) as err:
        locked.settle("00" * 32, NOW)
    assert err.value.code == "CH16"
    assert locked.state is LegState.LOCKED


def test_settled_is_final_so_a_release_after_it_is_refused() -> None:
    settled = received().lock(NOW).settle(SECRET.hex(), NOW)
    with pytest.raises(IllegalLegTransition):
        settled.release(NOW)


def test_statuses_reported_to_a_pacs028() -> None:
    assert received().status() == ("PDNG", None)
    assert received().lock(NOW).status() == ("ACSP", None)
    assert received().reject("AM04", NOW).status() == ("RJCT", "AM04")
    assert received().lock(NOW).release(NOW).status() == ("RJCT", "DS02")
    assert Leg.tombstone("u-2", NOW).status() == ("RJCT", "DS02")


def test_a_tombstone_stays_cancelled_when_the_late_pacs009_arrives() -> None:
    tomb = Leg.tombstone("u-2", NOW)
    late = tomb.with_terms(terms(), NOW)
    assert late.state is LegState.CANCELLED and not late.is_tombstone
    with pytest.raises(IllegalLegTransition):
        late.lock(NOW)


def test_deadline_rules_ask_after_grace_and_alert_after_last_resort() -> None:
    leg = Leg.receive("u-1", terms(deadline=NOW), NOW).lock(NOW)
    assert not leg.needs_status_request(NOW + timedelta(seconds=1), 2, 5)
    assert leg.needs_status_request(NOW + timedelta(seconds=2), 2, 5)
    asked = leg.status_requested(NOW + timedelta(seconds=2))
    assert not asked.needs_status_request(NOW + timedelta(seconds=3), 2, 5)
    assert asked.needs_status_request(NOW + timedelta(seconds=7), 2, 5)
    assert not leg.past_last_resort(NOW + timedelta(seconds=299), 300)
    assert leg.past_last_resort(NOW + timedelta(seconds=300), 300)


@given(st.lists(st.sampled_from(["lock", "reject", "cancel", "settle", "release"]), max_size=8))
def test_every_move_follows_the_transition_table(verbs: list[str]) -> None:
    leg = received()
    for verb in verbs:
        before = leg.state
        try:
            if verb == "lock":
                leg = leg.lock(NOW)
            elif verb == "reject":
                leg = leg.reject("AM04", NOW)
            elif verb == "cancel":
                leg = leg.cancel(NOW)
            elif verb == "settle":
                leg = leg.settle(SECRET.hex(), NOW)
            else:
                leg = leg.release(NOW)
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


def instruction(**kw: object) -> Instruction:
    base: dict[str, object] = {
        "instruction_id": "hsbk-1",
        "subject": "hsbk-dt",
        "party_bic": "HSBKKZKX",
        "counterparty_bic": "EBILAEAD",
        "sell": Side("KZT", 100, "hsbk-dt"),
        "buy": Side("AED", 8, "HSBKKZKX"),
        "value_time": NOW,
        "state": InstructionState.ACCEPTED,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Instruction(**{**base, **kw})  # type: ignore[arg-type]


def test_an_instruction_needs_exactly_one_dt_side() -> None:
    instruction().validate()
    assert instruction().dt_wallet == "hsbk-dt"
    assert instruction(sell=Side("AED", 8, "x"), buy=Side("KZT", 100, "hsbk-dt")).dt_side == "buy"
    with pytest.raises(Exception, match="exactly one"):
        instruction(buy=Side("KZT", 1, "y")).validate()


def test_an_instruction_follows_its_dt_leg() -> None:
    inst = instruction().sent(NOW)
    leg = received().lock(NOW)
    matched = inst.follow(leg, NOW)
    assert matched.state is InstructionState.MATCHED and matched.pvp_id == "PVP-1"
    assert matched.follow(leg.settle(SECRET.hex(), NOW), NOW).state is InstructionState.SETTLED
    failed = inst.follow(received().reject("AM04", NOW), NOW)
    assert failed.state is InstructionState.FAILED and failed.reason == "AM04"
