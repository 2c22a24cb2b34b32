"""``dt-gateway stablecoin deploy`` deploys with the configured keys and prints the settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.stablecoin.chain import StablecoinChain
from gateway.stablecoin.contract import ATTESTOR_ROLE, MINTER_ROLE
from gateway.stablecoin.devchain import DevChain

pytestmark = pytest.mark.chain


def test_deploy_command_prints_the_settings_of_a_working_contract(anvil: DevChain) -> None:
    operator, attestor = anvil.accounts[10], anvil.accounts[11]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")}
    env.update(
        {
            "DT_GATEWAY_STABLECOIN__RPC_URL": anvil.rpc_url or "",
            "DT_GATEWAY_STABLECOIN__OPERATOR_KEY": operator.key.hex(),
            "DT_GATEWAY_STABLECOIN__ATTESTOR_KEY": attestor.key.hex(),
        }
    )
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dt-gateway"), "stablecoin", "deploy"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    address = printed["DT_GATEWAY_STABLECOIN__CONTRACT_ADDRESS"]
    client = StablecoinChain(anvil.w3, address)
    assert client.has_role(MINTER_ROLE, operator.address)
    assert client.has_role(ATTESTOR_ROLE, attestor.address)
    assert int(printed["DT_GATEWAY_STABLECOIN__CHAIN_ID"]) == anvil.w3.eth.chain_id
    assert int(printed["DT_GATEWAY_STABLECOIN__START_BLOCK"]) <= client.block_number()
