"""Deployments for the contract tests.

``chain`` runs a test on each of the session's chains (the stablecoin conftest's anvil and
in-process eth-tester chain). Tests load the committed artifacts (only the artifact check
compiles). Every ``token`` is a fresh deployment with a fresh client, so tests never share
contract state or nonce caches.
"""

from __future__ import annotations

import pytest

from gateway.stablecoin.devchain import DevChain
from tests.integration.stablecoin.contract.support import Token, deploy_token


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
