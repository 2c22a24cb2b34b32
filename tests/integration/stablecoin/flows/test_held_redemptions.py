"""A redemption whose reference names no exchange wallet is held; an operator pays it, once,
into the wallet the exchange asks for, and the decision is recorded. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from gateway.stablecoin import service, watcher
from tests.support.stablecoin import (
    EXCHANGE_WALLET,
    Deployment,
    balance,
    running_flow,
)

pytestmark = pytest.mark.chain


def test_an_operator_pays_a_held_redemption_exactly_once(engine: Engine, dep: Deployment) -> None:
    with running_flow(engine, dep) as flow:
        assert flow.mint("a", 100_00, dep.holders[0].address).json()["state"] == "minted"
        dep.client.redeem(dep.holders[0], 7_00, "typo-wallet")
        held = watcher.poll(flow.uow, flow.sc).redemptions
        assert [r.state.value for r in held] == ["held"]
        tx_hash, log_index = held[0].tx_hash, held[0].log_index
        before = balance(engine, EXCHANGE_WALLET)
        operator = flow.client("operator")
        path = f"/v1/stablecoin/redemptions/{tx_hash}/{log_index}/pay"

        exchange_key = flow.client()
        refused = exchange_key.post(path, json={"wallet_id": EXCHANGE_WALLET, "reason": "x"})
        assert refused.status_code == 403
        not_exchange = operator.post(path, json={"wallet_id": "bank-1", "reason": "typo"})
        assert not_exchange.status_code == 422
        assert not_exchange.json()["code"] == "NOT_EXCHANGE_WALLET"
        missing = operator.post(
            f"/v1/stablecoin/redemptions/{tx_hash}/{log_index + 9}/pay",
            json={"wallet_id": EXCHANGE_WALLET, "reason": "typo"},
        )
        assert missing.status_code == 404
        assert balance(engine, EXCHANGE_WALLET) == before

        paid = operator.post(
            path, json={"wallet_id": EXCHANGE_WALLET, "reason": "exchange ticket 42: typo"}
        )
        assert paid.status_code == 200, paid.text
        body = paid.json()
        assert body["state"] == "paid"
        assert body["resolved_by"]
        assert body["resolved_at"]
        assert "ticket 42" in body["reason"]
        assert balance(engine, EXCHANGE_WALLET) == before + 7_00

        again = operator.post(path, json={"wallet_id": EXCHANGE_WALLET, "reason": "again"})
        assert again.status_code == 409
        assert again.json()["code"] == "REDEMPTION_NOT_HELD"
        assert balance(engine, EXCHANGE_WALLET) == before + 7_00

        reconciled = service.reconcile(flow.uow, flow.sc)
        assert reconciled is not None
        assert reconciled.ok
        assert reconciled.unpaid_redemptions == 0
