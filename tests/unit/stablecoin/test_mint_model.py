"""The mint state machine and the ids that make retries harmless (pure domain, no I/O)."""

from __future__ import annotations

import pytest

from gateway.stablecoin.model import (
    MINT_TRANSITIONS,
    IllegalMintTransition,
    MintState,
    Reconciliation,
    event_id_of,
    redemption_transfer_id,
    request_id_of,
)
from tests.unit.stablecoin.builders import T0, mint


def test_minted_and_refunded_are_final() -> None:
    assert MINT_TRANSITIONS[MintState.MINTED] == frozenset()
    assert MINT_TRANSITIONS[MintState.REFUNDED] == frozenset()
    with pytest.raises(IllegalMintTransition):
        mint(MintState.MINTED).fail("X", "late", T0)
    with pytest.raises(IllegalMintTransition):
        mint(MintState.REFUNDED).refund(T0)


def test_refund_only_after_failure() -> None:
    with pytest.raises(IllegalMintTransition):
        mint().refund(T0)
    failed = mint().submit("0xabc", T0).fail("CONTRACT_PAUSED", "paused", T0)
    assert failed.refund(T0).state is MintState.REFUNDED
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
        checked_at=T0,
        block_number=1,
        segregated_balance=1_000,
        pending_mints=100,
        unpaid_redemptions=50,
        total_supply=850,
    )
    assert r.ok and r.gap == 0
