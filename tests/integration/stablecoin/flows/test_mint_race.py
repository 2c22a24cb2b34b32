"""Two gateway replicas mint at once against one reserve attestation: the mint mined second in
the block reverts on the reserve guard. Only a refusal found before sending refunds; a mint mined
but reverted is attested for again and sent again, and ends minted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from hexbytes import HexBytes
from sqlalchemy.engine import Engine
from web3 import Web3

from gateway.ledger import service as ledger
from gateway.ledger.errors import TransferNotFound
from gateway.ledger.store import LedgerUnitOfWork
from gateway.stablecoin import service
from gateway.stablecoin.devchain import DevChain
from gateway.stablecoin.model import Mint, MintRequest, MintState
from gateway.stablecoin.runtime import Stablecoin
from tests.support.stablecoin import (
    EXCHANGE,
    EXCHANGE_WALLET,
    FUNDED,
    Deployment,
    Flow,
    balance,
    running_flow,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chain


@contextmanager
def automine_off(chain: DevChain) -> Iterator[Callable[[], int]]:
    """Anvil mines nothing until the yielded function is called: it mines one block with every
    pending transaction, turns automine back on and returns the block's number. Automine is on
    again afterwards in any case (the chain is shared by the session)."""
    rpc = chain.w3.provider.make_request

    def mine_one_then_automine() -> int:
        rpc("evm_mine", [])  # type: ignore[arg-type]
        number = int(chain.w3.eth.block_number)
        rpc("evm_setAutomine", [True])  # type: ignore[arg-type]
        return number

    rpc("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        yield mine_one_then_automine
    finally:
        rpc("evm_setAutomine", [True])  # type: ignore[arg-type]


def _request(flow: Flow, replica: Stablecoin, key: str, amount: int, to: str) -> Mint:
    req = MintRequest(
        exchange=EXCHANGE,
        idempotency_key=key,
        amount=amount,
        source_wallet_id=EXCHANGE_WALLET,
        evm_address=to,
    )
    mint, created = service.request_mint(flow.uow, replica, req)
    assert created
    return mint


def _reverted_in(w3: Web3, number: int, request_id: str) -> list[str]:
    """The transactions of block ``number`` that carry ``request_id`` and reverted."""
    found = []
    for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
        assert not isinstance(tx, bytes)
        receipt = w3.eth.get_transaction_receipt(tx["hash"])
        if request_id in bytes(tx["input"]).hex() and receipt["status"] == 0:
            found.append(HexBytes(tx["hash"]).to_0x_hex())
    return found


def test_a_mint_reverted_in_a_block_shared_with_a_rival_is_attested_for_again_and_minted(
    engine: Engine, dep: Deployment
) -> None:
    w3 = dep.chain.w3
    first_to, second_to = dep.holders[0].address, dep.holders[1].address

    def sent() -> int:
        return int(w3.eth.get_transaction_count(dep.operator.address, "pending"))

    with (
        running_flow(engine, dep) as flow,
        ThreadPoolExecutor(max_workers=2) as pool,
        automine_off(dep.chain) as mine,
    ):
        # A second replica of the gateway: same settings, database, contract and operator.
        rival = Stablecoin.from_settings(flow.settings)
        base = sent()
        # Replica 1 attests the segregated 60.00 and sends its mint of 60.00 ...
        first: Future[Mint] = pool.submit(_request, flow, flow.sc, "first", 60_00, first_to)
        wait_for(
            lambda: sent() >= base + 2,
            "replica 1 did not send its attestation and mint",
            timeout=30,
        )
        # ... replica 2, after its 50.00 moved in too, attests 110.00 under the same sequence
        # (the chain's latest is still the one before) and sends its mint.
        second: Future[Mint] = pool.submit(_request, flow, rival, "second", 50_00, second_to)
        wait_for(
            lambda: sent() >= base + 4,
            "replica 2 did not send its attestation and mint",
            timeout=30,
        )

        # One block for the four; the loser's retries are mined as they come.
        contested = mine()
        won, lost = first.result(timeout=60), second.result(timeout=60)

    # The premise: both mints were in one block, and the second one reverted there.
    assert won.block_number == contested
    reverted = _reverted_in(w3, contested, lost.request_id)
    assert len(reverted) == 1, "the second mint was not mined and reverted with the first"

    # The loser was attested for again, sent again and minted, never failed nor refunded.
    assert (won.state, lost.state) == (MintState.MINTED, MintState.MINTED)
    assert lost.error_code is None
    assert lost.tx_hash != reverted[0]
    assert lost.block_number is not None and lost.block_number > contested
    with pytest.raises(TransferNotFound):
        ledger.get_transfer(LedgerUnitOfWork(engine, readonly=True), f"refund-{lost.id}")
    assert dep.client.reserve() == 110_00  # replica 1 attested 60.00 only
    assert dep.client.balance_of(first_to) == 60_00
    assert dep.client.balance_of(second_to) == 50_00
    assert dep.client.total_supply() == 110_00
    assert balance(engine, EXCHANGE_WALLET) == FUNDED - 110_00
    assert flow.segregated() == 110_00
