"""The redemption watcher against reorganisations (anvil snapshot/revert) and restarts, on
SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine
from web3 import Web3
from web3.providers.rpc import HTTPProvider
from web3.types import RPCEndpoint, RPCResponse

from gateway.stablecoin import service, watcher
from gateway.stablecoin.runtime import Stablecoin
from tests.integration.stablecoin.flows.seeding import seed_holder
from tests.support.stablecoin import (
    EXCHANGE_WALLET,
    FUNDED,
    Deployment,
    balance,
    running_flow,
)

pytestmark = pytest.mark.chain

CONFIRMATIONS = 3


def _flow(engine: Engine, dep: Deployment) -> Any:
    return running_flow(engine, dep, confirmations=CONFIRMATIONS)


class _RecordedNode(HTTPProvider):
    """The chain node's JSON-RPC over HTTP, each request's method and parameters recorded."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.requests: list[tuple[str, Any]] = []

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        self.requests.append((method, params))
        return super().make_request(method, params)

    def from_blocks(self) -> set[int]:
        """The first block of every ``eth_getLogs`` range asked for."""
        starts = [p[0]["fromBlock"] for m, p in self.requests if m == "eth_getLogs"]
        return {int(b, 16) if isinstance(b, str) else int(b) for b in starts}


def test_redemption_reorganised_away_before_confirmations_moves_no_dt(
    engine: Engine, dep: Deployment
) -> None:
    chain = dep.chain
    with _flow(engine, dep) as flow:
        seed_holder(flow, 500_00)
        watcher.poll(flow.uow, flow.sc)
        snap = chain.snapshot()
        dep.client.redeem(dep.holders[0], 100_00, EXCHANGE_WALLET)
        chain.mine(1)  # 2 confirmations of 3
        assert watcher.poll(flow.uow, flow.sc).redemptions == ()
        chain.revert(snap)
        chain.mine(CONFIRMATIONS + 2)
        assert watcher.poll(flow.uow, flow.sc).redemptions == ()
        assert balance(engine, EXCHANGE_WALLET) == FUNDED
        assert flow.segregated() == 500_00
        reconciled = service.reconcile(flow.uow, flow.sc)
        assert reconciled is not None and reconciled.ok
        assert flow.client().get("/v1/stablecoin/redemptions").json()["redemptions"] == []


def test_paid_redemption_reorganised_away_deeper_than_the_confirmations_halts_mints(
    engine: Engine, dep: Deployment
) -> None:
    """Confirmations bound the reorganisations the gateway survives unaided: a burn paid after N
    confirmations and then undone by a deeper one leaves tokens that the DT no longer backs.
    Reconciliation must show that gap and halt mints."""
    chain = dep.chain
    with _flow(engine, dep) as flow:
        seed_holder(flow, 500_00)
        watcher.poll(flow.uow, flow.sc)
        fork = dep.client.block_number()
        snap = chain.snapshot()
        dep.client.redeem(dep.holders[0], 100_00, EXCHANGE_WALLET)
        chain.mine(CONFIRMATIONS)
        [paid] = watcher.poll(flow.uow, flow.sc).redemptions
        assert paid.state.value == "paid"
        assert balance(engine, EXCHANGE_WALLET) == FUNDED + 100_00
        assert flow.segregated() == 400_00
        before = service.reconcile(flow.uow, flow.sc)
        assert before is not None and before.ok and before.total_supply == 400_00

        # A longer branch without the burn replaces every block since the fork: deeper than
        # the confirmations the payout waited for.
        reorganised_from = watcher.load_cursor(flow.uow, flow.sc)
        assert reorganised_from is not None
        assert dep.client.block_number() - fork > CONFIRMATIONS
        chain.revert(snap)
        chain.mine(CONFIRMATIONS + 4)
        assert dep.client.block_hash(paid.block_number) != paid.block_hash
        assert dep.client.total_supply() == 500_00

        rescanned = watcher.poll(flow.uow, flow.sc)
        assert rescanned.rewound_from == reorganised_from.block_number
        assert rescanned.redemptions == ()  # the burn is gone: nothing new to pay
        gap = service.reconcile(flow.uow, flow.sc)
        assert gap is not None and not gap.ok
        assert gap.gap == -100_00  # 400.00 of DT behind 500.00 of tokens
        shown = flow.client().get("/v1/stablecoin/reconciliation").json()
        assert shown["minting_halted"] and shown["gap"] == -100_00

        supply = dep.client.total_supply()
        refused = flow.mint("after-the-reorganisation", 5_00, dep.holders[1].address)
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "MINTS_HALTED"
        assert balance(engine, EXCHANGE_WALLET) == FUNDED + 100_00
        assert dep.client.total_supply() == supply


def test_cursor_rewinds_when_its_block_hash_changed_and_pays_the_new_branch_once(
    engine: Engine, dep: Deployment
) -> None:
    chain = dep.chain
    with _flow(engine, dep) as flow:
        seed_holder(flow, 500_00)
        snap = chain.snapshot()
        chain.mine(6)
        before = watcher.poll(flow.uow, flow.sc).cursor
        assert before.block_hash == dep.client.block_hash(before.block_number)

        chain.revert(snap)
        dep.client.redeem(dep.holders[0], 40_00, EXCHANGE_WALLET)  # the new branch differs
        chain.mine(8)
        assert dep.client.block_hash(before.block_number) != before.block_hash
        result = watcher.poll(flow.uow, flow.sc)
        assert result.rewound_from == before.block_number
        assert [r.amount for r in result.redemptions] == [40_00]
        assert result.cursor.block_hash == dep.client.block_hash(result.cursor.block_number)
        assert watcher.poll(flow.uow, flow.sc).redemptions == ()
        assert balance(engine, EXCHANGE_WALLET) == FUNDED + 40_00
        reconciled = service.reconcile(flow.uow, flow.sc)
        assert reconciled is not None and reconciled.ok


def test_restarted_watcher_resumes_from_its_stored_cursor(engine: Engine, dep: Deployment) -> None:
    chain = dep.chain
    with _flow(engine, dep) as flow:
        seed_holder(flow, 500_00)
        dep.client.redeem(dep.holders[0], 10_00, EXCHANGE_WALLET)
        chain.mine(CONFIRMATIONS)
        first = watcher.poll(flow.uow, flow.sc)
        assert len(first.redemptions) == 1

        # A new process (nothing in memory), whose requests to the node are seen.
        assert chain.rpc_url is not None
        node = _RecordedNode(chain.rpc_url)
        restarted = Stablecoin.from_settings(flow.settings, Web3(node))
        assert watcher.load_cursor(flow.uow, restarted) == first.cursor
        dep.client.redeem(dep.holders[0], 20_00, EXCHANGE_WALLET)
        chain.mine(CONFIRMATIONS)
        second = watcher.poll(flow.uow, restarted)
        # Every range of logs it asked for starts after the stored cursor.
        assert node.from_blocks() == {first.cursor.block_number + 1}
        assert [r.amount for r in second.redemptions] == [20_00]
        assert balance(engine, EXCHANGE_WALLET) == FUNDED + 30_00
        assert flow.segregated() == 470_00
