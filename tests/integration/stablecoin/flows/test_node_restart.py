"""The redemption watcher on a node that keeps no state of past blocks (pruned, or restarted
from a dump without them): a burn after the node's restart is paid, and the collateral log's
entries are what they would have been on an archive node. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from gateway.collateral import entries as fmt
from gateway.stablecoin import service, watcher
from gateway.stablecoin.chain_errors import ChainUnavailable
from gateway.stablecoin.store import StablecoinUnitOfWork
from tests.integration.stablecoin.flows.node import Node
from tests.integration.stablecoin.flows.seeding import seed_holder
from tests.support.stablecoin import (
    EXCHANGE_WALLET,
    FUNDED,
    Deployment,
    balance,
    deploy,
    running_flow,
)

pytestmark = pytest.mark.chain


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path)
    node.start()
    yield node
    node.stop()


def _chain_entries(engine: Engine, wallet_id: str) -> list[fmt.Entry]:
    """The log's mint, burn and statement entries, then the pool's, in order."""
    read = StablecoinUnitOfWork(engine, readonly=True)
    with read:
        logged = read.collateral.entry_range(wallet_id, 0, read.collateral.size(wallet_id))
        pending = read.collateral.pending(wallet_id, 1000)
    bodies = [*logged, *(p.body.encode("ascii") for p in pending if p.body is not None)]
    return [e for e in map(fmt.decode, bodies) if not isinstance(e, fmt.DtMovement)]


def test_a_burn_after_a_restart_without_past_states_is_paid_and_logged(
    engine: Engine, node: Node
) -> None:
    dep: Deployment = deploy(node.devchain())
    with running_flow(engine, dep) as flow:
        seed_holder(flow, 500_00)
        watcher.poll(flow.uow, flow.sc)
        dep.chain.mine(3)  # blocks the watcher has not read when the node goes down
        seen = dep.client.block_number()
        node.kill()
        node.start()
        with pytest.raises(ChainUnavailable):  # what the node answers for an older block
            dep.client.total_supply(seen - 1)

        burn = dep.client.redeem(dep.holders[0], 120_00, EXCHANGE_WALLET)
        result = watcher.poll(flow.uow, flow.sc)
        assert [(r.amount, r.state.value) for r in result.redemptions] == [(120_00, "paid")]
        assert result.cursor.block_number == burn.block_number
        assert balance(engine, EXCHANGE_WALLET) == FUNDED + 120_00
        assert flow.segregated() == 380_00

        logged = _chain_entries(engine, flow.sc.segregated_wallet_id)
        assert [type(e).__name__ for e in logged] == [
            "ChainMint",
            "Statement",
            "ChainBurn",
            "Statement",
        ]
        mint, first, burned, last = logged
        assert isinstance(mint, fmt.ChainMint) and mint.supply == 500_00
        assert isinstance(first, fmt.Statement) and first.supply == 500_00
        assert isinstance(burned, fmt.ChainBurn) and burned.supply == 380_00
        assert isinstance(last, fmt.Statement)
        assert (last.block, last.supply, last.reserve) == (burn.block_number, 380_00, 380_00)
        reconciled = service.reconcile(flow.uow, flow.sc)
        assert reconciled is not None and reconciled.ok
