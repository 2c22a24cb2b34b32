"""The main flows over real HTTP on anvil, on SQLite and on PostgreSQL: an exchange mints
against DT, burns with a redemption reference, and the watcher pays the DT back."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from gateway.ledger import service as ledger
from gateway.ledger.store import LedgerUnitOfWork
from gateway.stablecoin import service, watcher
from gateway.stablecoin.contract import MINTER_ROLE
from tests.support.stablecoin import (
    EXCHANGE_WALLET,
    FUNDED,
    OTHER_EXCHANGE,
    Deployment,
    balance,
    running_flow,
)

pytestmark = pytest.mark.chain


def test_mint_then_redeem_moves_dt_and_tokens_exactly_once(engine: Engine, dep: Deployment) -> None:
    holder = dep.holders[0]
    with running_flow(engine, dep) as flow:
        created = flow.mint("order-1", 250_00, holder.address)
        assert created.status_code == 201, created.text
        mint = created.json()
        assert mint["state"] == "minted"
        assert mint["tx_hash"] and mint["block_number"]
        assert dep.client.balance_of(holder.address) == 250_00
        assert balance(engine, EXCHANGE_WALLET) == FUNDED - 250_00
        assert flow.segregated() == 250_00

        replay = flow.mint("order-1", 250_00, holder.address)
        assert replay.status_code == 200 and replay.json()["id"] == mint["id"]
        assert dep.client.total_supply() == 250_00

        got = flow.client().get(f"/v1/stablecoin/mints/{mint['id']}")
        assert got.status_code == 200 and got.json()["state"] == "minted"
        other = flow.client(OTHER_EXCHANGE).get(f"/v1/stablecoin/mints/{mint['id']}")
        assert other.status_code == 404

        dep.client.redeem(holder, 100_00, EXCHANGE_WALLET)
        first = watcher.poll(flow.uow, flow.sc)
        again = watcher.poll(flow.uow, flow.sc)
        assert len(first.redemptions) == 1 and not again.redemptions
        assert balance(engine, EXCHANGE_WALLET) == FUNDED - 150_00
        assert flow.segregated() == 150_00
        assert dep.client.total_supply() == 150_00

        page = flow.client().get("/v1/stablecoin/redemptions").json()
        assert [(r["amount"], r["state"]) for r in page["redemptions"]] == [(100_00, "paid")]
        assert (
            flow.client(OTHER_EXCHANGE).get("/v1/stablecoin/redemptions").json()["redemptions"]
            == []
        )

        result = service.reconcile(flow.uow, flow.sc)
        assert result is not None and result.ok
        recon = flow.client().get("/v1/stablecoin/reconciliation").json()
        assert recon["ok"] and recon["total_supply"] == 150_00
        assert ledger.check_invariants(LedgerUnitOfWork(engine, readonly=True)).ok


def test_mint_the_contract_refuses_is_refunded_exactly_once(
    engine: Engine, dep: Deployment
) -> None:
    dep.client.transact(dep.admin, "revokeRole", MINTER_ROLE, dep.operator.address)
    with running_flow(engine, dep) as flow:
        resp = flow.mint("order-r", 75_00, dep.holders[0].address)
        assert resp.status_code == 201, resp.text
        mint = resp.json()
        assert mint["state"] == "refunded" and mint["error_code"] == "MISSING_ROLE"
        # Driving it again (the recovery job does) changes nothing.
        service.drive_mint(flow.uow, flow.sc, mint["id"])
        service.refund_mint(flow.uow, flow.sc, mint["id"])
        service.resume_mints(flow.uow, flow.sc)
        assert balance(engine, EXCHANGE_WALLET) == FUNDED
        assert flow.segregated() == 0
        refund = ledger.get_transfer(LedgerUnitOfWork(engine), f"refund-{mint['id']}")
        assert refund.amount == 75_00
        assert dep.client.total_supply() == 0
