"""The log key: made by ``dt-gateway collateral keygen`` for production, or kept in the data
directory for development; its name must be the log's origin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.cli import main
from gateway.collateral.note import Signer, Verifier
from gateway.collateral.runtime import CollateralLog, origin_of
from gateway.config import load_settings
from gateway.errors import InvalidInput

CONTRACT = "0x00000000000000000000000000000000000000Cc"


def test_keygen_prints_a_key_the_gateway_accepts_for_that_log(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["collateral", "keygen", "--chain-id", "7", "--contract", CONTRACT]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["origin"] == "dt-gateway/collateral/7/" + CONTRACT.lower()
    settings = load_settings(environ={}, data_dir=str(tmp_path))
    configured = settings.model_copy(
        update={
            "collateral": settings.collateral.model_copy(
                update={"log_key": SecretStr(made["log_key"])}
            )
        }
    )
    clog = CollateralLog.from_settings(configured, chain_id=7, contract=CONTRACT, wallet_id="w")
    assert clog.vkey == made["vkey"] and Verifier.from_vkey(made["vkey"]).name == clog.origin
    assert list(tmp_path.iterdir()) == []  # a configured key writes nothing
    with pytest.raises(InvalidInput):  # the same key for another contract's log
        CollateralLog.from_settings(configured, chain_id=8, contract=CONTRACT, wallet_id="w")


def test_keygen_needs_the_log_it_is_for(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collateral", "keygen", "--chain-id", "7"]) == 2
    assert "--contract" in capsys.readouterr().err


def test_without_a_key_a_development_key_is_made_once_and_kept(tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir=str(tmp_path))
    first = CollateralLog.from_settings(settings, chain_id=7, contract=CONTRACT, wallet_id="w")
    again = CollateralLog.from_settings(settings, chain_id=7, contract=CONTRACT, wallet_id="w")
    assert first.vkey == again.vkey
    (kept,) = tmp_path.iterdir()
    assert kept.stat().st_mode & 0o777 == 0o600
    assert Signer.from_skey(kept.read_text().strip()).name == origin_of("dt-gateway", 7, CONTRACT)
