"""The PvP model, record by record: every verb's whole result, every refusal's words, and the
boundaries of the deadline rules (the changes a mutation run found no test noticing)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from gateway.errors import InvalidInput
from gateway.pvp.model import (
    Decision,
    DecisionCause,
    DecisionKind,
    FulfilmentMismatch,
    IllegalLegTransition,
    InstructionState,
    Leg,
    LegState,
    Side,
    fulfilment_matches,
    iso_reason,
)
from tests.unit.pvp.builders import COND, SECRET, T0, instruction, received, terms

T1 = T0 + timedelta(seconds=7)


def locked(**changes: object) -> Leg:
    return replace(received().lock(T0), **changes)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- legs


def test_a_received_leg_is_exactly_its_terms_at_the_time_it_came() -> None:
    leg = received()
    assert leg == Leg(
        uetr="u-1", state=LegState.RECEIVED, created_at=T0, updated_at=T0, terms=terms()
    )
    assert leg.lock_id == "pvp-u-1"
    assert leg.deadline == T0
    assert not leg.is_tombstone


def test_a_tombstone_is_cancelled_by_the_connector_with_ds02_and_no_terms() -> None:
    tomb = Leg.tombstone("u-9", T0)
    assert tomb == Leg(
        uetr="u-9",
        state=LegState.CANCELLED,
        created_at=T0,
        updated_at=T0,
        reason="DS02",
        resolved_by="connector",
        decision=Decision(DecisionKind.ABORT, DecisionCause.CAMT056, T0),
    )
    assert tomb.deadline is None
    assert tomb.with_terms(terms(), T1) == replace(tomb, terms=terms(), updated_at=T1)


def test_each_move_changes_the_state_the_time_and_only_what_it_says() -> None:
    leg = received()
    assert leg.lock(T1) == replace(leg, state=LegState.LOCKED, updated_at=T1)
    assert leg.reject("AC06", T1) == replace(
        leg,
        state=LegState.REJECTED,
        updated_at=T1,
        reason="AC06",
        decision=Decision(DecisionKind.RJCT, DecisionCause.REFUSAL, T1),
    )
    assert leg.cancel(T1) == replace(
        leg,
        state=LegState.CANCELLED,
        updated_at=T1,
        reason="DS02",
        resolved_by="connector",
        decision=Decision(DecisionKind.ABORT, DecisionCause.CAMT056, T1),
    )


def test_a_settlement_keeps_the_fulfilment_in_lower_case_clears_the_alert_and_names_who() -> None:
    alerted = locked(alert_at=T0)
    settled = alerted.settle(SECRET.hex().upper(), T1, by="operator:k1")
    assert settled == replace(
        alerted,
        state=LegState.SETTLED,
        updated_at=T1,
        fulfilment=SECRET.hex(),
        alert_at=None,
        resolved_by="operator:k1",
        decision=Decision(DecisionKind.COMMIT, DecisionCause.OPERATOR, T1),
    )
    by_connector = alerted.settle(SECRET.hex(), T1)
    assert by_connector.resolved_by == "connector"
    assert by_connector.decision == Decision(DecisionKind.COMMIT, DecisionCause.FULFILMENT, T1)


def test_a_release_is_ds02_clears_the_alert_and_names_who() -> None:
    alerted = locked(alert_at=T0)
    assert alerted.release(T1, by="operator:k1") == replace(
        alerted,
        state=LegState.RELEASED,
        updated_at=T1,
        reason="DS02",
        alert_at=None,
        resolved_by="operator:k1",
        decision=Decision(DecisionKind.ABORT, DecisionCause.OPERATOR, T1),
    )
    assert alerted.release(T1).resolved_by == "connector"


def test_status_requests_are_counted_and_timed_and_alerts_timed() -> None:
    leg = locked()
    asked = leg.status_requested(T1).status_requested(T1 + timedelta(seconds=1))
    assert asked == replace(leg, status_requested_at=T1 + timedelta(seconds=1), status_requests=2)
    assert leg.raise_alert(T1) == replace(leg, alert_at=T1)


def test_an_illegal_move_names_the_leg_and_both_states() -> None:
    settled = locked().settle(SECRET.hex(), T1)
    with pytest.raises(IllegalLegTransition) as err:
        settled.release(T1)
    assert err.value.detail == "leg u-1 is settled, cannot become released"
    assert err.value.extra == {"uetr": "u-1"}


def test_a_wrong_fulfilment_names_the_leg() -> None:
    with pytest.raises(FulfilmentMismatch) as err:
        locked().settle("00" * 32, T1)
    assert err.value.detail == "SHA-256 of the fulfilment is not the condition of leg u-1"
    assert err.value.extra == {"uetr": "u-1"}


def test_a_leg_without_a_condition_settles_with_any_fulfilment() -> None:
    leg = Leg.receive("u-1", terms(condition=None), T0).lock(T0)
    assert leg.settle("ab", T1).state is LegState.SETTLED


def test_fulfilment_matches_only_the_preimage_of_the_condition_in_either_case() -> None:
    assert fulfilment_matches(COND.upper(), SECRET.hex())
    assert fulfilment_matches(COND, SECRET.hex().upper())
    assert not fulfilment_matches(COND, "zz")
    assert not fulfilment_matches(COND, SECRET.hex()[:-2])


def test_a_rejection_without_a_reason_reports_ms03_and_a_cancelled_leg_ds02() -> None:
    assert replace(received(), state=LegState.REJECTED).status() == ("RJCT", "MS03")
    assert received().cancel(T1).status() == ("RJCT", "DS02")


def test_status_requests_start_exactly_at_deadline_plus_grace_and_repeat_exactly_per_retry() -> (
    None
):
    leg = locked()
    assert not leg.needs_status_request(T0 + timedelta(seconds=9.999), 10, 5)
    assert leg.needs_status_request(T0 + timedelta(seconds=10), 10, 5)
    asked = leg.status_requested(T0 + timedelta(seconds=10))
    assert not asked.needs_status_request(T0 + timedelta(seconds=14.999), 10, 5)
    assert asked.needs_status_request(T0 + timedelta(seconds=15), 10, 5)


def test_only_a_locked_leg_with_a_deadline_needs_a_status_request_or_an_operator() -> None:
    late = T0 + timedelta(hours=1)
    for leg in (received(), received().reject("AM04", T0), locked().release(T0)):
        assert not leg.needs_status_request(late, 0, 0)
        assert not leg.past_last_resort(late, 0)
    no_terms = Leg(uetr="u-3", state=LegState.LOCKED, created_at=T0, updated_at=T0)
    assert not no_terms.needs_status_request(late, 0, 0)
    assert not no_terms.past_last_resort(late, 0)
    assert locked().past_last_resort(late, 3600)
    assert not locked().past_last_resort(late - timedelta(microseconds=1), 3600)


def test_every_ledger_refusal_has_its_iso_reason() -> None:
    expected = {
        "AM04": "AM04",
        "AC01": "AC01",
        "AC04": "AC04",
        "AC06": "AC06",
        "AM11": "AM11",
        "AM12": "AM12",
        "DU01": "AM05",
        "NOT_ALLOWED": "AG01",
        "SAME_WALLET": "AC01",
        "INVALID_ID": "AC01",
        "": "MS03",
    }
    assert {code: iso_reason(code) for code in expected} == expected


# ----------------------------------------------------------------------------- instructions


def test_the_fingerprint_is_the_sha256_of_the_terms_as_sorted_json() -> None:
    # Known answer: sha256 of
    # {"buy": ["AED", 8, "HSBKKZKX"], "counterparty_bic": "EBILAEAD", "party_bic": "HSBKKZKX",
    #  "sell": ["KZT", 100, "hsbk-dt"], "value_time": "2026-11-24T12:00:00+00:00"}
    assert instruction().fingerprint() == (
        "fc4992fbf663474f39fe5637e30c714e8081bfc9d30ec43bd775f99f31f64d92"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"party_bic": "KCJBKZKX", "counterparty_bic": "EBILAEAD"},
        {"counterparty_bic": "CBAUAEAA"},
        {"sell": Side("KZT", 101, "hsbk-dt")},
        {"sell": Side("KZT", 100, "other-dt")},
        {"buy": Side("AED", 9, "HSBKKZKX")},
        {"buy": Side("USD", 8, "HSBKKZKX")},
        {"value_time": T1},
    ],
)
def test_the_fingerprint_changes_with_every_term(change: dict[str, object]) -> None:
    assert instruction(**change).fingerprint() != instruction().fingerprint()


def test_the_fingerprint_ignores_bookkeeping() -> None:
    same = instruction(instruction_id="other", subject="x", state=InstructionState.SENT)
    assert same.fingerprint() == instruction().fingerprint()


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"buy": Side("KZT", 1, "y")}, "exactly one of sell and buy must be in KZT (the DT leg)"),
        ({"sell": Side("AED", 1, "y")}, "exactly one of sell and buy must be in KZT (the DT leg)"),
        ({"sell": Side("KZT", 0, "hsbk-dt")}, "amounts are positive integers of minor units"),
        ({"buy": Side("AED", -1, "x")}, "amounts are positive integers of minor units"),
        ({"buy": Side("AED", True, "x")}, "amounts are positive integers of minor units"),
        ({"sell": Side("KZT", 1.0, "x")}, "amounts are positive integers of minor units"),  # type: ignore[arg-type]
        ({"counterparty_bic": "HSBKKZKX"}, "the counterparty must be another party"),
        ({"value_time": T0.replace(tzinfo=None)}, "value_time must carry a time zone"),
    ],
)
def test_an_invalid_instruction_is_refused_saying_why(
    change: dict[str, object], detail: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        instruction(**change).validate()
    assert err.value.detail == detail


def test_the_smallest_amounts_are_valid() -> None:
    instruction(sell=Side("KZT", 1, "hsbk-dt"), buy=Side("AED", 1, "x")).validate()


def test_instruction_moves_change_the_state_the_time_and_only_what_they_say() -> None:
    inst = instruction()
    assert inst.sent(T1) == replace(inst, state=InstructionState.SENT, updated_at=T1)
    assert inst.refused("AC01", T1) == replace(
        inst, state=InstructionState.REFUSED, updated_at=T1, reason="AC01"
    )
    assert inst.matched("PVP-1", "u-1", T1) == replace(
        inst, state=InstructionState.MATCHED, updated_at=T1, pvp_id="PVP-1", uetr="u-1"
    )
    sent = inst.sent(T0)
    assert sent.sent(T1) is sent  # already there: nothing changes, not even the time


def test_an_illegal_instruction_move_names_the_instruction_and_its_state() -> None:
    refused = instruction().refused("AC01", T0)
    with pytest.raises(IllegalLegTransition) as err:
        refused.sent(T1)
    assert err.value.detail == "instruction hsbk-1 is refused"


def test_an_instruction_follows_its_leg_to_matched_settled_or_failed() -> None:
    leg = received().lock(T0)
    matched = replace(
        instruction(), state=InstructionState.MATCHED, updated_at=T1, pvp_id="PVP-1", uetr="u-1"
    )
    assert instruction().follow(leg, T1) == matched
    assert instruction().sent(T0).follow(leg, T1) == matched
    assert matched.follow(leg, T1 + timedelta(seconds=1)) == matched
    settled = matched.follow(leg.settle(SECRET.hex(), T1), T1 + timedelta(seconds=1))
    assert settled == replace(
        matched, state=InstructionState.SETTLED, updated_at=T1 + timedelta(seconds=1)
    )
    for ended in (leg.release(T1), received().cancel(T1), received().reject("AM04", T1)):
        failed = instruction().follow(ended, T1)
        assert failed == replace(matched, state=InstructionState.FAILED, reason=ended.reason)


def test_an_instruction_matched_by_a_tombstone_has_no_pvp_id() -> None:
    followed = instruction().follow(Leg.tombstone("u-5", T0), T1)
    assert followed.pvp_id is None and followed.uetr == "u-5"
    assert followed.state is InstructionState.FAILED and followed.reason == "DS02"


def test_a_refused_instruction_follows_nothing() -> None:
    refused = instruction().refused("AC01", T0)
    assert refused.follow(received().lock(T0), T1) is refused


def test_a_leg_without_terms_settles_on_its_state_alone() -> None:
    with pytest.raises(IllegalLegTransition):
        Leg.tombstone("u-4", T0).settle(SECRET.hex(), T1)
    bare = Leg(uetr="u-4", state=LegState.LOCKED, created_at=T0, updated_at=T0)
    assert bare.settle("ab", T1).fulfilment == "ab"
