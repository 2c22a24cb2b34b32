"""The handlers' tests start from hsbk-dt and cbuae-dt open, hsbk-dt holding 1,000,000."""

from __future__ import annotations

import pytest

from tests.unit.ledger.fakes import fund, open_wallets
from tests.unit.pvp.fakes import FakePvPUnitOfWork


@pytest.fixture
def uow() -> FakePvPUnitOfWork:
    u = FakePvPUnitOfWork()
    open_wallets(u, "hsbk-dt", "cbuae-dt")
    fund(u, "hsbk-dt", 1_000_000)
    return u
