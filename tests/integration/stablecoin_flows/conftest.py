"""A fresh contract deployment per test on the session's anvil (tests/conftest.py): no shared
contract state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from gateway.stablecoin.devchain import DevChain
from tests.conftest import migrated_engine
from tests.integration.stablecoin_flows.support import Deployment, deploy


@pytest.fixture
def dep(anvil: DevChain) -> Deployment:
    return deploy(anvil)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = migrated_engine(sqlite_url)
    yield eng
    eng.dispose()
