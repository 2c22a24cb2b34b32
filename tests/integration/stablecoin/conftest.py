"""Fixtures of the stablecoin tests: ``dep``, a fresh contract deployment per test on the
session's anvil (tests/conftest.py), so no test shares contract state; ``anvil_chain`` and
``tester_chain``, an anvil of ten accounts and the in-process eth-tester chain, one per session;
``sqlite_engine``, a migrated SQLite database. The contract tests' deployments are in
``contract/conftest.py``.

- ``contract/``: the contract and the chain client, on anvil and the in-process chain;
- ``flows/``: the gateway's stablecoin over HTTP: mints, redemptions, refunds, the watcher,
  reconciliation, the collateral log, crashes and chain outages;
- ``webhooks/``: webhook endpoints per exchange and their deliveries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from gateway.stablecoin.devchain import DevChain, start_anvil, start_eth_tester
from tests.support.anvil import require_anvil
from tests.support.databases import migrated_engine
from tests.support.stablecoin import Deployment, deploy


@pytest.fixture
def dep(anvil: DevChain) -> Deployment:
    return deploy(anvil)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = migrated_engine(sqlite_url)
    yield eng
    eng.dispose()


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
