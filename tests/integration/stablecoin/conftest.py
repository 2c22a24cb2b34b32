"""Chains and deployments for the stablecoin tests.

One anvil and one in-process eth-tester chain per session; ``chain`` runs a test on each.
Tests load the committed artifacts (only the artifact check compiles). Every ``token`` is a
fresh deployment with a fresh client, so tests never share contract state or nonce caches.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.stablecoin.devchain import DevChain, start_anvil, start_eth_tester
from tests.conftest import require_anvil
from tests.integration.stablecoin.support import Token, deploy_token


@pytest.fixture(scope="session")
def anvil_chain() -> Iterator[DevChain]:
    require_anvil()
    chain = start_anvil(accounts=10)
    yield chain
    chain.stop()


@pytest.fixture(scope="session")
def tester_chain() -> Iterator[DevChain]:
    chain = start_eth_tester(accounts=10)
    yield chain
    chain.stop()


@pytest.fixture(params=["anvil", "eth-tester"])
def chain(request: pytest.FixtureRequest) -> DevChain:
    name = "anvil_chain" if request.param == "anvil" else "tester_chain"
    devchain: DevChain = request.getfixturevalue(name)
    return devchain


@pytest.fixture
def token(chain: DevChain) -> Token:
    return deploy_token(chain)


@pytest.fixture
def anvil_token(anvil_chain: DevChain) -> Token:
    return deploy_token(anvil_chain)
