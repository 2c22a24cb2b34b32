"""One anvil per session; a fresh contract deployment per test (no shared contract state)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from gateway.stablecoin.devchain import DevChain, find_anvil, start_anvil
from tests.conftest import migrated_engine
from tests.integration.stablecoin_flows.support import Deployment, deploy


@pytest.fixture(scope="session")
def anvil() -> Iterator[DevChain]:
    if find_anvil() is None:
        if os.environ.get("CI"):
            pytest.fail("anvil is missing: run ops/setup-toolchain")
        pytest.skip("anvil is missing: run ops/setup-toolchain")
    chain = start_anvil(accounts=12)
    yield chain
    chain.stop()


@pytest.fixture
def dep(anvil: DevChain) -> Deployment:
    return deploy(anvil)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = migrated_engine(sqlite_url)
    yield eng
    eng.dispose()
