"""The pinned log key's name is the log's origin, which names its chain and contract."""

from __future__ import annotations

import pytest

from gateway.collateral.verifier import LogIdentity

CONTRACT = "0x" + "5f" * 20


@pytest.mark.parametrize(
    "origin",
    [f"dt-gateway/collateral/31337/{CONTRACT}", f"dt.example.com/a/b/collateral/1/{CONTRACT}"],
)
def test_the_origin_names_the_chain_and_the_contract(origin: str) -> None:
    log = LogIdentity.parse(origin)
    assert (log.origin, log.contract) == (origin, CONTRACT)
    assert log.chain_id in (1, 31337)


@pytest.mark.parametrize(
    "origin",
    [
        f"collateral/31337/{CONTRACT}",
        f"dt-gateway/collateral/031337/{CONTRACT}",
        f"dt-gateway/collateral/0/{CONTRACT}",
        f"dt-gateway/collateral/31337/{CONTRACT.upper()}",
        f"dt-gateway/collateral/31337/{CONTRACT[:-2]}",
        f"dt-gateway/colateral/31337/{CONTRACT}",
        f"dt-gateway/collateral/31337/{CONTRACT}/",
    ],
)
def test_an_origin_that_names_no_collateral_log_is_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="is not <prefix>/collateral/<chain id>/<contract"):
        LogIdentity.parse(origin)
