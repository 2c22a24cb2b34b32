"""The chain client: nonces across threads, restarts and other senders; confirmations; errors."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.errors import GatewayError, Unavailable
from gateway.stablecoin import devchain as devchain_module
from gateway.stablecoin.chain import StablecoinChain
from gateway.stablecoin.chain_errors import (
    ChainUnavailable,
    InvalidChainInput,
    TransactionNotConfirmed,
)
from gateway.stablecoin.devchain import DevChain, start_devchain
from tests.integration.stablecoin.contract.support import Token

pytestmark = pytest.mark.chain


def rid() -> bytes:
    return os.urandom(32)


def test_concurrent_mints_from_one_key_get_distinct_nonces(anvil_token: Token) -> None:
    t = anvil_token
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(
            pool.map(lambda i: t.client.mint(t.minter, t.alice.address, i + 1, rid()), range(30))
        )
    assert len({r.tx_hash for r in results}) == 30
    assert t.client.total_supply() == sum(range(1, 31))


def test_a_restarted_client_continues_from_the_chain_nonce(token: Token) -> None:
    token.client.mint(token.minter, token.alice.address, 1, rid())
    restarted = StablecoinChain(token.chain.w3, token.client.address, poll_latency=0.005)
    restarted.mint(token.minter, token.alice.address, 1, rid())
    assert restarted.total_supply() == 2


def test_another_sender_with_the_same_key_forces_a_resync(token: Token) -> None:
    c = token.client
    c.mint(token.minter, token.alice.address, 1, rid())  # c now caches the next nonce
    other = StablecoinChain(token.chain.w3, c.address, poll_latency=0.005)
    other.mint(token.minter, token.alice.address, 1, rid())  # ... which this one uses
    c.mint(token.minter, token.alice.address, 1, rid())  # nonce too low -> resync -> retry
    assert c.total_supply() == 3


def test_reads_at_a_past_block(token: Token) -> None:
    before = token.client.mint(token.minter, token.alice.address, 5, rid()).block_number
    token.client.mint(token.minter, token.alice.address, 7, rid())
    assert token.client.total_supply(before) == 5
    assert token.client.balance_of(token.alice.address, before) == 5
    assert token.client.total_supply() == 12


def test_estimate_gas_names_the_revert(token: Token) -> None:
    assert token.client.estimate_gas(token.minter.address, "mint", token.bob.address, 1, rid()) > 0
    with pytest.raises(GatewayError) as err:
        token.client.estimate_gas(token.minter.address, "mint", token.bob.address, 10**15, rid())
    assert getattr(err.value, "error_name", None) == "ReserveExceeded"


def test_confirmations_wait_for_blocks_on_top(anvil_chain: DevChain) -> None:
    from tests.integration.stablecoin.contract.support import deploy_token

    t = deploy_token(anvil_chain)
    client = StablecoinChain(
        anvil_chain.w3, t.client.address, confirmations=3, poll_latency=0.005, receipt_timeout=10
    )
    stop = threading.Event()

    def mine() -> None:
        while not stop.wait(0.02):
            anvil_chain.mine()

    miner = threading.Thread(target=mine, daemon=True)
    miner.start()
    try:
        result = client.mint(t.minter, t.alice.address, 1, rid())
    finally:
        stop.set()
        miner.join()
    assert client.block_number() >= result.block_number + 2


def test_missing_confirmations_time_out(anvil_token: Token) -> None:
    client = StablecoinChain(
        anvil_token.chain.w3,
        anvil_token.client.address,
        confirmations=2,
        poll_latency=0.005,
        receipt_timeout=0.3,
    )
    with pytest.raises(TransactionNotConfirmed):
        client.mint(anvil_token.minter, anvil_token.alice.address, 1, rid())


def test_an_unreachable_node_is_unavailable() -> None:
    client = StablecoinChain.connect("http://127.0.0.1:9", "0x" + "11" * 20)
    with pytest.raises(ChainUnavailable) as err:
        client.total_supply()
    assert isinstance(err.value, Unavailable)


def test_bad_inputs_are_refused_before_the_chain(token: Token) -> None:
    with pytest.raises(InvalidChainInput):
        token.client.mint(token.minter, token.alice.address, 1, b"short")
    with pytest.raises(InvalidChainInput):
        token.client.mint(token.minter, token.alice.address, 0, rid())
    with pytest.raises(InvalidChainInput):
        token.client.mint(token.minter, "not-an-address", 1, rid())


def test_devchain_falls_back_to_the_in_process_chain(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A machine without anvil: no toolchain installed, none on PATH.
    monkeypatch.setattr(devchain_module, "TOOLCHAIN_MODULES", tmp_path / "node_modules")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert devchain_module.find_anvil() is None
    with start_devchain(accounts=2) as chain:
        assert chain.kind == "eth-tester"
        assert chain.rpc_url is None
        assert chain.w3.eth.get_balance(chain.accounts[1].address) > 10**18


def test_devchain_prefers_anvil_when_installed() -> None:
    if devchain_module.find_anvil() is None:
        pytest.skip("anvil is missing: run ops/setup-toolchain")
    with start_devchain(accounts=1) as chain:
        assert chain.kind == "anvil"
        assert chain.rpc_url is not None and chain.rpc_url.startswith("http://127.0.0.1:")
        assert chain.w3.eth.chain_id == devchain_module.ANVIL_CHAIN_ID
    assert chain._process is not None and chain._process.poll() is not None


def test_client_from_settings_reaches_the_configured_node(anvil_token: Token) -> None:
    from gateway.config import StablecoinSettings

    settings = StablecoinSettings(
        rpc_url=anvil_token.chain.rpc_url or "", contract_address=anvil_token.client.address
    )
    client = StablecoinChain.from_settings(settings)
    anvil_token.client.mint(anvil_token.minter, anvil_token.alice.address, 9, rid())
    assert client.total_supply() == 9
    assert client.confirmations == settings.confirmations
