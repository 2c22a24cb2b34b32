"""The stablecoin model, value by value: the checks at the door and what they say, the ids and
fingerprints that make retries harmless (known answers, since stored ones must keep matching),
every mint and redemption move's whole result, and the reconciliation's gap.

These pin the changes a mutation run (ops/mutate) found no other test noticing."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import timedelta

import pytest

from gateway.errors import GatewayError, InvalidInput
from gateway.ledger.errors import InvalidAmount
from gateway.ledger.model import MAX_AMOUNT, MakeTransfer
from gateway.stablecoin.model import (
    IdempotencyKeyMissing,
    IllegalMintTransition,
    InvalidEvmAddress,
    MintRequest,
    MintState,
    Reconciliation,
    Redemption,
    RedemptionNotHeld,
    RedemptionState,
    check_address_format,
    check_amount,
    check_idempotency_key,
    event_id_of,
    fingerprint_of,
    redemption_payout,
    redemption_transfer_id,
)
from tests.unit.stablecoin.builders import T0, mint

T1 = T0 + timedelta(seconds=12)
ADDRESS = "0x" + "Ab" * 20
KEY_RULE = "send an Idempotency-Key header of 1 to 128 visible ASCII"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- the door


@pytest.mark.parametrize("address", ["0x" + "a" * 39, "0x" + "g" * 40, "ab" * 21, "", 12])
def test_an_address_of_the_wrong_shape_is_refused_quoting_it(address: object) -> None:
    with pytest.raises(InvalidEvmAddress) as err:
        check_address_format(address)  # type: ignore[arg-type]
    assert err.value.detail == f"{address!r} is not a 0x-prefixed 20-byte hex address"


def test_an_address_of_the_right_shape_passes_in_either_case() -> None:
    check_address_format(ADDRESS)
    check_address_format(ADDRESS.lower())


@pytest.mark.parametrize("key", [None, "", "a" * 129, "with space", "tab\t", "é"])
def test_a_missing_or_malformed_idempotency_key_is_refused(key: str | None) -> None:
    with pytest.raises(IdempotencyKeyMissing) as err:
        check_idempotency_key(key)
    assert err.value.detail == KEY_RULE


@pytest.mark.parametrize("key", ["a", "~" * 128, "!x-1"])
def test_a_well_formed_idempotency_key_is_returned(key: str) -> None:
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize(
    ("amount", "detail"),
    [
        (True, "amount must be an integer number of tiyn"),
        (1.0, "amount must be an integer number of tiyn"),
        (0, f"amount must be between 1 and {MAX_AMOUNT} tiyn"),
        (-1, f"amount must be between 1 and {MAX_AMOUNT} tiyn"),
        (MAX_AMOUNT + 1, f"amount must be between 1 and {MAX_AMOUNT} tiyn"),
    ],
)
def test_an_amount_outside_1_to_max_is_refused(amount: object, detail: str) -> None:
    with pytest.raises(InvalidAmount) as err:
        check_amount(amount)  # type: ignore[arg-type]
    assert err.value.detail == detail


def test_the_smallest_and_largest_amounts_pass() -> None:
    check_amount(1)
    check_amount(MAX_AMOUNT)


def request(**changes: object) -> MintRequest:
    base = MintRequest("x", "k-1", 150_000, "wallet-1", ADDRESS)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "error", "detail"),
    [
        ({"idempotency_key": ""}, IdempotencyKeyMissing, KEY_RULE),
        ({"amount": 0}, InvalidAmount, f"amount must be between 1 and {MAX_AMOUNT} tiyn"),
        (
            {"evm_address": "0x1"},
            InvalidEvmAddress,
            "'0x1' is not a 0x-prefixed 20-byte hex address",
        ),
        ({"source_wallet_id": ""}, InvalidInput, "source_wallet_id must be 1 to 128 characters"),
        (
            {"source_wallet_id": "w" * 129},
            InvalidInput,
            "source_wallet_id must be 1 to 128 characters",
        ),
        ({"source_wallet_id": 7}, InvalidInput, "source_wallet_id must be 1 to 128 characters"),
    ],
)
def test_a_mint_request_is_checked_field_by_field(
    changes: dict[str, object], error: type[GatewayError], detail: str
) -> None:
    with pytest.raises(error) as err:
        request(**changes).validate()
    assert type(err.value) is error
    assert err.value.detail == detail


def test_a_mint_request_with_a_wallet_id_of_1_or_128_characters_passes() -> None:
    request(source_wallet_id="w").validate()
    request(source_wallet_id="w" * 128).validate()


# ----------------------------------------------------------------------------- known answers


def test_a_mint_request_fingerprint_is_compact_sorted_json_with_the_address_in_lower_case() -> None:
    canonical = '{"amount":150000,"evm":"' + ADDRESS.lower() + '","source_wallet_id":"wallet-1"}'
    assert fingerprint_of(150_000, "wallet-1", ADDRESS) == sha256_hex(canonical)
    assert request().fingerprint() == sha256_hex(canonical)
    assert request(amount=150_001).fingerprint() != request().fingerprint()
    assert request(source_wallet_id="wallet-2").fingerprint() != request().fingerprint()
    assert request(evm_address="0x" + "cd" * 20).fingerprint() != request().fingerprint()


def test_an_event_id_is_the_first_40_hex_of_the_sha256_of_its_parts_joined_by_colons() -> None:
    assert event_id_of("mint", "m-1", "minted") == sha256_hex("mint:m-1:minted")[:40]
    assert event_id_of("redemption", "0xab", 3) == sha256_hex("redemption:0xab:3")[:40]


def test_a_redemption_is_paid_by_one_transfer_whose_id_is_its_log_position() -> None:
    assert redemption_transfer_id("0xABcd", 7) == "redeem-abcd-7"
    payout = redemption_payout(
        tx_hash="0xABcd",
        log_index=7,
        amount=500,
        currency="KZX",
        segregated="seg",
        wallet_id="ex-1",
    )
    assert payout == MakeTransfer(
        id="redeem-abcd-7",
        debit_wallet_id="seg",
        credit_wallet_id="ex-1",
        amount=500,
        currency="KZX",
        reference="stablecoin redemption 0xABcd:7",
    )


# ----------------------------------------------------------------------------- mints


def test_each_mint_move_changes_the_state_the_time_and_only_what_it_says() -> None:
    submitted = mint().submit("0xt1", T1)
    assert submitted == replace(mint(), state=MintState.SUBMITTED, updated_at=T1, tx_hash="0xt1")
    assert submitted.confirm("0xt2", 42, T1 + timedelta(1)) == replace(
        mint(),
        state=MintState.MINTED,
        updated_at=T1 + timedelta(1),
        tx_hash="0xt2",
        block_number=42,
    )
    failed = mint().fail("AM04", "no funds", T1)
    assert failed == replace(
        mint(), state=MintState.FAILED, updated_at=T1, error_code="AM04", error_detail="no funds"
    )
    assert failed.refund(T1 + timedelta(1)) == replace(
        failed, state=MintState.REFUNDED, updated_at=T1 + timedelta(1)
    )


def test_a_failure_keeps_at_most_500_characters_of_its_detail() -> None:
    assert mint().fail("X", "d" * 501, T1).error_detail == "d" * 500
    assert mint().fail("X", "d" * 500, T1).error_detail == "d" * 500


def test_an_illegal_mint_move_names_the_mint_and_both_states() -> None:
    with pytest.raises(IllegalMintTransition) as err:
        mint().refund(T1)
    assert err.value.detail == "mint m1 cannot go from accepted to refunded"


# ----------------------------------------------------------------------------- redemptions


def held() -> Redemption:
    return Redemption(
        tx_hash="0xabc",
        log_index=2,
        contract_address="0x" + "11" * 20,
        block_number=9,
        block_hash="0xb",
        redeemer="0x" + "22" * 20,
        amount=700,
        dt_wallet_ref="nobody",
        exchange="",
        state=RedemptionState.HELD,
        created_at=T0,
        reason="no such wallet",
    )


def test_an_operator_pays_a_held_redemption_recording_who_when_where_and_why() -> None:
    paid = held().pay_to("ex-1", "x", "redeem-abc-2", "operator:k1", "confirmed by phone", T1)
    assert paid == replace(
        held(),
        state=RedemptionState.PAID,
        exchange="x",
        transfer_id="redeem-abc-2",
        reason="paid by an operator into ex-1: confirmed by phone",
        resolved_by="operator:k1",
        resolved_at=T1,
    )


def test_the_recorded_reason_keeps_at_most_200_characters() -> None:
    paid = held().pay_to("ex-1", "x", "t", "op", "r" * 300, T1)
    assert paid.reason == ("paid by an operator into ex-1: " + "r" * 300)[:200]
    assert len(paid.reason or "") == 200


def test_a_paid_redemption_cannot_be_paid_again() -> None:
    paid = held().pay_to("ex-1", "x", "t", "op", "r", T1)
    with pytest.raises(RedemptionNotHeld) as err:
        paid.pay_to("ex-2", "y", "t2", "op", "again", T1)
    assert err.value.detail == "redemption 0xabc:2 is paid"


# ----------------------------------------------------------------------------- reconciliation


def test_the_gap_is_the_segregated_balance_less_what_is_owed_and_what_is_on_chain() -> None:
    rec = Reconciliation.compute(
        contract_address="0xc",
        checked_at=T0,
        block_number=77,
        segregated_balance=1_000,
        pending_mints=30,
        unpaid_redemptions=20,
        total_supply=900,
    )
    assert rec == Reconciliation("0xc", T0, 77, 1_000, 30, 20, 900, gap=50)
    assert not rec.ok
    assert rec.with_seq(5) == replace(rec, seq=5)
    balanced = replace(rec, total_supply=950, gap=0)
    assert balanced.ok
