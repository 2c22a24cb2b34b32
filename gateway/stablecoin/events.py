"""The webhook events the stablecoin's state changes record: ``mint.<state>`` and
``redemption.<state>``, each with its deterministic event id and its payload.

Recorded in the caller's transaction, beside the change they report, so an event exists exactly
when its change does (delivery is :mod:`gateway.stablecoin.webhooks`').
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.messaging.outbox import OutboxRepository
from gateway.stablecoin import webhooks
from gateway.stablecoin.model import Mint, Redemption, event_id_of


def mint_payload(m: Mint) -> dict[str, Any]:
    return {
        "mint_id": m.id,
        "state": m.state.value,
        "amount": m.amount,
        "source_wallet_id": m.source_wallet_id,
        "evm_address": m.evm_address,
        "contract_address": m.contract_address,
        "request_id": "0x" + m.request_id,
        "tx_hash": m.tx_hash,
        "block_number": m.block_number,
        "error_code": m.error_code,
        "idempotency_key": m.idempotency_key,
    }


def redemption_payload(r: Redemption) -> dict[str, Any]:
    return {
        "tx_hash": r.tx_hash,
        "log_index": r.log_index,
        "block_number": r.block_number,
        "redeemer": r.redeemer,
        "amount": r.amount,
        "dt_wallet_ref": r.dt_wallet_ref,
        "state": r.state.value,
        "transfer_id": r.transfer_id,
        "reason": r.reason,
    }


def record_mint_event(outbox: OutboxRepository, m: Mint, now: datetime) -> None:
    """``mint.<state>`` for the mint as it now is (one event per state and transaction hash)."""
    webhooks.enqueue(
        outbox,
        exchange=m.exchange,
        event_id=event_id_of("mint", m.id, m.state.value, m.tx_hash or ""),
        event_type=f"mint.{m.state.value}",
        data=mint_payload(m),
        now=now,
    )


def record_redemption_event(outbox: OutboxRepository, r: Redemption, now: datetime) -> None:
    """``redemption.<state>`` for the redemption as it now is (one event per state)."""
    webhooks.enqueue(
        outbox,
        exchange=r.exchange,
        event_id=event_id_of("redemption", r.tx_hash, r.log_index, r.state.value),
        event_type=f"redemption.{r.state.value}",
        data=redemption_payload(r),
        now=now,
    )


__all__ = ["mint_payload", "record_mint_event", "record_redemption_event", "redemption_payload"]
