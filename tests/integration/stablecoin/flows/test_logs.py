"""The log of a real ``dt-gateway serve`` at DEBUG, on SQLite and PostgreSQL, with every secret
configured and used: JSON lines (its default when the log is not a terminal) whose records
carry their request id and mint id, and not one secret in the whole file: API key tokens,
webhook secrets, the chain keys, the collateral log key, the ISO 20022 signing key, the
connector tokens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway.collateral.note import Signer
from gateway.collateral.runtime import origin_of
from gateway.messaging.serving import free_port
from gateway.pvp.keys import generate
from tests.integration.stablecoin.flows.processes import answering
from tests.support.stablecoin import (
    EXCHANGE,
    EXCHANGE_WALLET,
    WEBHOOK_SECRET,
    Deployment,
    setup_exchanges,
    webhook_receiver,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chain

BIN = Path(sys.executable).parent / "dt-gateway"


def test_json_logs_with_request_and_mint_ids_and_no_secret(
    engine: Engine, dep: Deployment, tmp_path: Path
) -> None:
    tokens = setup_exchanges(engine)
    identity = generate("NBKZKZKAXXX")
    origin = origin_of("dt-gateway", dep.chain.w3.eth.chain_id, dep.client.address)
    log_key = Signer.generate(origin).skey()
    secrets = {
        "operator key": dep.operator.key.hex(),
        "attestor key": dep.attestor.key.hex(),
        "collateral log key": log_key,
        "signing key": identity.key_pem.decode(),
        "connector token": "connector-token-7f1e2d3c4b5a",
        "connector admin token": "admin-token-0a9b8c7d6e5f",
        "legacy webhook secret": WEBHOOK_SECRET,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_GATEWAY_")}
    env.update(dep.env())
    env.update(
        {
            "DT_GATEWAY_DATABASE__URL": engine.url.render_as_string(hide_password=False),
            "DT_GATEWAY_DATA_DIR": str(tmp_path),
            "DT_GATEWAY_COLLATERAL__LOG_KEY": log_key,
            "DT_GATEWAY_ISO20022__SIGNING_KEY_PEM": identity.key_pem.decode(),
            "DT_GATEWAY_ISO20022__SIGNING_CERT_PEM": identity.cert_pem.decode(),
            "DT_GATEWAY_PVP__CONNECTOR_TOKEN": secrets["connector token"],
            "DT_GATEWAY_CONNECTOR__ADMIN_TOKEN": secrets["connector admin token"],
            "DT_GATEWAY_WEBHOOKS__ALLOW_LOOPBACK": "true",
        }
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log, webhook_receiver() as receiver:
        proc = subprocess.Popen(
            [str(BIN), "--log-level", "DEBUG", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            answering(url, proc)
            exchange = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {tokens[EXCHANGE]}"}, timeout=60
            )
            assert exchange.get("/v1/stablecoin/wallets").status_code == 200
            wrong = tokens[EXCHANGE][:-6] + "xxxxxx"
            secrets["a wrong key"] = wrong
            bad = httpx.get(url + "/v1/stablecoin/wallets", headers={"Authorization": wrong})
            assert bad.status_code == 401
            created = exchange.post("/v1/webhooks/endpoints", json={"url": receiver.url})
            assert created.status_code == 201, created.text
            secrets["endpoint secret"] = created.json()["secret"]
            rotated = exchange.post(f"/v1/webhooks/endpoints/{created.json()['id']}/rotate-secret")
            assert rotated.status_code == 200, rotated.text
            secrets["rotated endpoint secret"] = rotated.json()["secret"]
            mint = exchange.post(
                "/v1/stablecoin/mints",
                json={
                    "amount": 5_000_00,
                    "source_wallet_id": EXCHANGE_WALLET,
                    "evm_address": dep.holders[0].address,
                },
                headers={"Idempotency-Key": "logs-1", "X-Request-Id": "req-logs-1"},
            )
            assert mint.status_code in (200, 201), mint.text
            mint_id = mint.json()["id"]
            wait_for(
                lambda: exchange.get(f"/v1/stablecoin/mints/{mint_id}").json()["state"] == "minted",
                "the mint did not complete",
                proc=proc,
                timeout=60,
                tolerate=(httpx.HTTPError,),
                interval=0.05,
            )
            wait_for(
                lambda: len(receiver.deliveries) >= 1,
                "no webhook was delivered",
                proc=proc,
                timeout=60,
                interval=0.05,
            )
            exchange.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    for name in list(secrets):  # the secret part of each key token, not its public id
        if secrets[name].startswith("dtg_"):
            secrets[name] = secrets[name].split("_", 2)[2]
    for name, token in tokens.items():
        secrets[f"{name}'s key"] = token.split("_", 2)[2]
    text = log_path.read_text()
    leaked = [name for name, value in secrets.items() if _appears(value, text)]
    assert leaked == [], f"secrets in the log: {leaked}"
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(records) > 20 and len(records) >= 0.95 * len(text.splitlines())
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    minting = [r for r in records if r.get("mint_id") == mint_id]
    assert minting, "no record names the mint"
    assert any(r.get("request_id") == "req-logs-1" for r in minting)
    assert any(r["logger"].startswith("uvicorn") for r in records)  # its lines are JSON too


def _appears(secret: str, text: str) -> bool:
    """The secret, or for a key in PEM or hex form any substantial piece of it."""
    if "PRIVATE KEY" in secret:
        body = [line for line in secret.splitlines() if line and not line.startswith("-----")]
        return any(line in text for line in body)
    bare = secret.removeprefix("0x")
    return secret in text or bare.lower() in text.lower()
