"""Builders shared by the stablecoin model tests."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.stablecoin.model import Mint, MintState, request_id_of

T0 = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)


def mint(state: MintState = MintState.ACCEPTED) -> Mint:
    """Mint ``m1`` of 100 from wallet ``w`` to its segregated wallet ``s``, made at ``T0``."""
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
        created_at=T0,
        updated_at=T0,
    )
