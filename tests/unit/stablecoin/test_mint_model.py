"""The mint state machine and the ids that make retries harmless (pure domain, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.stablecoin.model import (
    MINT_TRANSITIONS,
    IllegalMintTransition,
    Mint,
    MintState,
    Reconciliation,
    event_id_of,
    redemption_transfer_id,
    request_id_of,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _mint(state: MintState = MintState.ACCEPTED) -> Mint:
    return Mint(
        id="m1",
        exchange="x",
        idempotency_key="k",
        fingerprint="f",
        source_wallet_id="w",
        segregated_wallet_id="s",
        contract_address="0x" + "11" * 20,
        evm_address="0x" + "22" * 20,
        amount=100,
        request_id=request_id_of("m1").hex(),
        state=state,
        created_at=NOW,
        updated_at=NOW,
    )


def test_minted_and_refunded_are_final() -> None:
    assert MINT_TRANSITIONS[MintState.MINTED] == frozenset()
    assert MINT_TRANSITIONS[MintState.REFUNDED] == frozenset()
    with pytest.raises(IllegalMintTransition):
        _mint(MintState.MINTED).fail("X", "late", NOW)
    with pytest.raises(IllegalMintTransition):
        _mint(MintState.REFUNDED).refund(NOW)


def test_refund_only_after_failure() -> None:
    with pytest.raises(IllegalMintTransition):
        _mint().refund(NOW)
    failed = _mint().submit("0xabc", NOW).fail("CONTRACT_PAUSED", "paused", NOW)
    assert failed.refund(NOW).state is MintState.REFUNDED
    assert failed.refund_transfer_id == "refund-m1"


def test_ids_are_deterministic() -> None:
    assert request_id_of("m1") == request_id_of("m1") != request_id_of("m2")
    assert len(request_id_of("m1")) == 32
    assert event_id_of("mint", "m1", "minted") == event_id_of("mint", "m1", "minted")
    assert event_id_of("mint", "m1", "minted") != event_id_of("mint", "m1", "accepted")
    assert redemption_transfer_id("0xAB", 3) == "redeem-ab-3"


def test_gap_counts_what_is_not_yet_on_chain() -> None:
    r = Reconciliation.compute(
        contract_address="c",
        checked_at=NOW,
        block_number=1,
        segregated_balance=1_000,
        pending_mints=100,
        unpaid_redemptions=50,
        total_supply=850,
    )
    assert r.ok and r.gap == 0
