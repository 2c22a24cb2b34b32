"""Reconciliation halts mints on a gap and resumes them; webhooks are signed, retried, and
carry one event id per status change. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from functools import partial

import pytest
from sqlalchemy.engine import Engine

from gateway.messaging.outbox import OutboxDispatcher, outbox_t
from gateway.stablecoin import endpoints_service, service, watcher, webhooks
from gateway.stablecoin.endpoints_store import WebhookUnitOfWork
from tests.support.stablecoin import (
    EXCHANGE,
    EXCHANGE_WALLET,
    FUNDED,
    WEBHOOK_SECRET,
    Deployment,
    Flow,
    balance,
    running_flow,
    webhook_receiver,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chain


def _operator_transfer(flow: Flow, tid: str, debit: str, credit: str, amount: int) -> None:
    resp = flow.client("operator").post(
        "/v1/transfers",
        json={"id": tid, "debit_wallet_id": debit, "credit_wallet_id": credit, "amount": amount},
    )
    assert resp.status_code == 201, resp.text


def test_gap_halts_new_mints_until_a_reconciliation_finds_none(
    engine: Engine, dep: Deployment
) -> None:
    holder = dep.holders[0].address
    with running_flow(engine, dep) as flow:
        assert flow.mint("a", 100_00, holder).json()["state"] == "minted"
        dep.client.redeem(dep.holders[0], 30_00, EXCHANGE_WALLET)
        watcher.poll(flow.uow, flow.sc)
        first = service.reconcile(flow.uow, flow.sc)
        assert first is not None and first.ok and first.total_supply == 70_00

        # DT leaves the segregated wallet without a burn: 10.00 KZT of tokens are unbacked.
        seg = flow.sc.segregated_wallet_id
        _operator_transfer(flow, "leak", seg, "bank-1", 10_00)
        watcher.poll(flow.uow, flow.sc)
        gap = service.reconcile(flow.uow, flow.sc)
        assert gap is not None and gap.gap == -10_00 and not gap.ok
        shown = flow.client().get("/v1/stablecoin/reconciliation").json()
        assert shown["minting_halted"] and shown["gap"] == -10_00

        before = (balance(engine, EXCHANGE_WALLET), dep.client.total_supply())
        refused = flow.mint("b", 5_00, holder)
        assert refused.status_code == 503 and refused.json()["code"] == "MINTS_HALTED"
        assert (balance(engine, EXCHANGE_WALLET), dep.client.total_supply()) == before

        _operator_transfer(flow, "leak-back", "bank-1", seg, 10_00)
        resolved = service.reconcile(flow.uow, flow.sc)
        assert resolved is not None and resolved.ok
        assert flow.mint("b", 5_00, holder).json()["state"] == "minted"
        assert flow.client("operator").get("/v1/stablecoin/reconciliation").json()["ok"]


def test_a_surplus_in_the_segregated_wallet_halts_new_mints_until_corrected(
    engine: Engine, dep: Deployment
) -> None:
    holder = dep.holders[0].address
    with running_flow(engine, dep) as flow:
        assert flow.mint("a", 100_00, holder).json()["state"] == "minted"
        watcher.poll(flow.uow, flow.sc)
        first = service.reconcile(flow.uow, flow.sc)
        assert first is not None and first.ok

        # DT enters the segregated wallet without a mint: more collateral than tokens is a
        # gap too (the books no longer explain the wallet), not a comfortable margin.
        seg = flow.sc.segregated_wallet_id
        _operator_transfer(flow, "stray", EXCHANGE_WALLET, seg, 10_00)
        surplus = service.reconcile(flow.uow, flow.sc)
        assert surplus is not None and surplus.gap == 10_00 and not surplus.ok
        shown = flow.client().get("/v1/stablecoin/reconciliation").json()
        assert shown["minting_halted"] and shown["gap"] == 10_00

        before = (balance(engine, EXCHANGE_WALLET), flow.segregated(), dep.client.total_supply())
        refused = flow.mint("b", 5_00, holder)
        assert refused.status_code == 503 and refused.json()["code"] == "MINTS_HALTED"
        assert (
            balance(engine, EXCHANGE_WALLET),
            flow.segregated(),
            dep.client.total_supply(),
        ) == before

        _operator_transfer(flow, "stray-back", seg, EXCHANGE_WALLET, 10_00)
        resolved = service.reconcile(flow.uow, flow.sc)
        assert resolved is not None and resolved.ok and resolved.gap == 0
        assert flow.mint("b", 5_00, holder).json()["state"] == "minted"
        assert dep.client.total_supply() == 105_00


def test_mints_in_flight_and_held_redemptions_are_not_a_gap(
    engine: Engine, dep: Deployment
) -> None:
    with running_flow(engine, dep) as flow:
        assert flow.mint("a", 100_00, dep.holders[0].address).json()["state"] == "minted"
        dep.client.redeem(dep.holders[0], 7_00, "no-such-wallet")
        result = watcher.poll(flow.uow, flow.sc)
        assert [r.state.value for r in result.redemptions] == ["held"]
        assert balance(engine, EXCHANGE_WALLET) == FUNDED - 100_00
        reconciled = service.reconcile(flow.uow, flow.sc)
        assert reconciled is not None and reconciled.ok
        assert reconciled.unpaid_redemptions == 7_00


def test_webhooks_are_signed_retried_and_deduplicable(engine: Engine, dep: Deployment) -> None:
    with (
        webhook_receiver(fail_first=3) as receiver,
        running_flow(engine, dep, webhook_url=receiver.url, webhook_exchange=EXCHANGE) as flow,
    ):
        # What `dt-gateway serve` does at start: the configured URL becomes an endpoint.
        uow = partial(WebhookUnitOfWork, engine)
        endpoints_service.adopt_legacy_url(uow, flow.settings)
        holder = dep.holders[0]
        mint = flow.mint("w", 20_00, holder.address).json()
        dep.client.redeem(holder, 5_00, EXCHANGE_WALLET)
        watcher.poll(flow.uow, flow.sc)
        sender = webhooks.WebhookSender(engine, endpoints_service.policy_of(flow.settings))
        dispatcher = OutboxDispatcher(engine, {webhooks.TOPIC: sender})

        def delivered() -> bool:
            dispatcher.run_once()
            return len(receiver.deliveries) >= 3

        wait_for(delivered, "the three events delivered", timeout=15, interval=0.05)

        events = receiver.events()
        # Retries reorder deliveries: receivers order by the data, not by arrival.
        # Confirmed at once: straight from accepted to minted (no "submitted" in between).
        assert sorted(e["type"] for e in events) == [
            "mint.accepted",
            "mint.minted",
            "redemption.paid",
        ]
        assert {e["data"]["mint_id"] for e in events if e["type"].startswith("mint.")} == {
            mint["id"]
        }
        for headers, body in receiver.deliveries:
            lower = {k.lower(): v for k, v in headers.items()}
            assert webhooks.verify(WEBHOOK_SECRET.encode(), lower["x-dt-signature"], body)
            assert not webhooks.verify(b"wrong", lower["x-dt-signature"], body)
            assert not webhooks.verify(
                WEBHOOK_SECRET.encode(), lower["x-dt-signature"], body + b" "
            )
            assert lower["x-dt-event-id"] == json.loads(body)["id"]
        assert len({e["id"] for e in events}) == 3
        with engine.connect() as conn:
            attempts = [r.attempts for r in conn.execute(outbox_t.select())]
        assert sum(attempts) == 3 + 3  # three refusals, each retried with backoff


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    header = webhooks.sign(b"k", 1_700_000_000, b'{"a":1}')
    assert header.startswith("t=1700000000,v1=")
    assert webhooks.verify(b"k", header, b'{"a":1}', now=1_700_000_100)
    assert not webhooks.verify(b"k", header, b'{"a":1}', now=1_700_000_000 + 301)
    assert not webhooks.verify(b"k", "garbage", b'{"a":1}', now=1_700_000_000)
