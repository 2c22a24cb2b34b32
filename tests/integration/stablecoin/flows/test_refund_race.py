"""Two workers refund the same failed mint at the same moment (the recovery job on two replicas,
or the job and the request that failed it): the DT goes back once, with one ``mint.refunded``
event and one webhook delivery queued. On SQLite and PostgreSQL, on anvil."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.stablecoin import service
from gateway.stablecoin.contract import MINTER_ROLE
from gateway.stablecoin.model import Mint, MintState
from tests.support.stablecoin import (
    EXCHANGE_WALLET,
    FUNDED,
    Deployment,
    Flow,
    balance,
    running_flow,
    webhook_receiver,
)

pytestmark = pytest.mark.chain

FIRST = 10_00
REFUSED = 75_00


def _set_status(flow: Flow, wallet_id: str, status: str) -> None:
    resp = flow.client("operator").post(f"/v1/wallets/{wallet_id}/status", json={"status": status})
    assert resp.status_code == 200, resp.text


def _failed_unrefunded_mint(flow: Flow) -> str:
    """A mint the contract refused whose refund the ledger refused too: it waits, failed, for
    a worker to refund it. The refund debits the segregated wallet, which is frozen meanwhile
    (a frozen wallet still receives, so the mint's own DT got in)."""
    dep = flow.dep
    seg = flow.sc.segregated_wallet_id
    _set_status(flow, seg, "frozen")
    dep.client.transact(dep.admin, "revokeRole", MINTER_ROLE, dep.operator.address)
    resp = flow.mint("refused", REFUSED, dep.holders[1].address)
    assert resp.status_code == 201, resp.text
    mint = resp.json()
    assert (mint["state"], mint["error_code"]) == ("failed", "MISSING_ROLE")
    assert flow.segregated() == FIRST + REFUSED
    _set_status(flow, seg, "open")
    return str(mint["id"])


def _refund_transfers(engine: Engine, flow: Flow) -> int:
    """Transfers from the segregated wallet back to the exchange's: refunds, by their legs."""
    query = sa.text(
        "SELECT count(*) FROM ledger_transfer WHERE debit_wallet_id = :seg AND credit_wallet_id"
        " = :wallet"
    )
    with engine.connect() as conn:
        return int(
            conn.execute(
                query, {"seg": flow.sc.segregated_wallet_id, "wallet": EXCHANGE_WALLET}
            ).scalar_one()
        )


def _queued_event_types(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        payloads = conn.execute(sa.text("SELECT payload FROM outbox")).scalars().all()
    return [json.loads(bytes(p))["type"] for p in payloads]


def test_two_threads_refunding_one_failed_mint_move_its_dt_back_once(
    engine: Engine, dep: Deployment
) -> None:
    with webhook_receiver() as receiver, running_flow(engine, dep) as flow:
        endpoint = flow.client().post("/v1/webhooks/endpoints", json={"url": receiver.url})
        assert endpoint.status_code == 201, endpoint.text
        first = flow.mint("first", FIRST, dep.holders[0].address)  # opens the segregated wallet
        assert first.json()["state"] == "minted", first.text
        mint_id = _failed_unrefunded_mint(flow)
        assert balance(engine, EXCHANGE_WALLET) == FUNDED - FIRST - REFUSED
        assert _refund_transfers(engine, flow) == 0

        start = threading.Barrier(2)

        def refund() -> Mint:
            start.wait(timeout=30)
            return service.refund_mint(flow.uow, flow.sc, mint_id)

        with ThreadPoolExecutor(max_workers=2) as pool:
            racers = [pool.submit(refund) for _ in range(2)]
            results = [r.result(timeout=60) for r in racers]

        assert [r.state for r in results] == [MintState.REFUNDED, MintState.REFUNDED]
        assert service.get_mint(flow.uow, mint_id).state is MintState.REFUNDED
        assert _refund_transfers(engine, flow) == 1
        assert balance(engine, EXCHANGE_WALLET) == FUNDED - FIRST
        assert flow.segregated() == FIRST
        events = flow.client().get("/v1/events?limit=500").json()["events"]
        assert [e["type"] for e in events].count("mint.refunded") == 1
        assert _queued_event_types(engine).count("mint.refunded") == 1
        assert dep.client.total_supply() == FIRST
