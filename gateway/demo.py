"""``dt-gateway demo``: the gateway end to end on embedded defaults, over real HTTP.

Each step prints what it does and what it observed; the demo fails loudly (exit 1) if any
observation differs from what the product promises.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from gateway import auth
from gateway.api.app import create_app
from gateway.config import Settings, load_settings
from gateway.connector.app import create_app as create_connector_app
from gateway.connector.runtime import Connector
from gateway.db import make_engine, upgrade
from gateway.demo_collateral import collateral_demo
from gateway.demo_witness import demo_witness, witness_serving
from gateway.messaging.serving import free_port, serve_in_thread
from gateway.stablecoin import service as stablecoin_service
from gateway.stablecoin import watcher
from gateway.stablecoin.chain import StablecoinChain
from gateway.stablecoin.devchain import DevChain, start_devchain
from gateway.stablecoin.runtime import Stablecoin
from gateway.stablecoin.store import StablecoinUnitOfWork


class DemoFailed(Exception):
    pass


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise DemoFailed(what)


def _say(step: str, detail: str = "") -> None:
    print(f"  {step:<44} {detail}")


def _call(client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    resp = client.request(method, path, **kw)
    if resp.status_code >= 400:
        raise DemoFailed(f"{method} {path} -> {resp.status_code} {resp.text}")
    return resp.json()


def ledger_demo(client: httpx.Client) -> None:
    print("DT ledger")
    _call(
        client,
        "POST",
        "/v1/wallets",
        json={"id": "demo-bank-a", "kind": "participant", "owner": "Demo Bank A"},
    )
    _call(
        client,
        "POST",
        "/v1/wallets",
        json={"id": "demo-bank-b", "kind": "participant", "owner": "Demo Bank B"},
    )
    _say("opened wallets", "demo-bank-a, demo-bank-b")
    _call(
        client,
        "POST",
        "/v1/issuances",
        json={"id": "demo-issue-1", "wallet_id": "demo-bank-a", "amount": 1_000_000_00},
    )
    _say("central bank issued", "1,000,000.00 KZT to demo-bank-a")
    secret = secrets.token_bytes(32)
    condition = hashlib.sha256(secret).hexdigest()
    lock = _call(
        client,
        "POST",
        "/v1/locks",
        json={
            "id": "demo-lock-1",
            "debit_wallet_id": "demo-bank-a",
            "credit_wallet_id": "demo-bank-b",
            "amount": 250_000_00,
            "condition": condition,
        },
    )
    a = _call(client, "GET", "/v1/wallets/demo-bank-a")
    _expect(lock["state"] == "pending" and a["reserved"] == 250_000_00, "lock did not reserve")
    _say(
        "locked 250,000.00 KZT behind a SHA-256 condition", f"available {a['available'] / 100:,.2f}"
    )
    wrong = client.post("/v1/locks/demo-lock-1/commit", json={"fulfilment": "00" * 32})
    _expect(
        wrong.status_code == 422 and wrong.json()["code"] == "CONDITION_MISMATCH",
        "wrong preimage accepted",
    )
    _say("commit with a wrong preimage", f"refused: {wrong.json()['code']}")
    done = _call(client, "POST", "/v1/locks/demo-lock-1/commit", json={"fulfilment": secret.hex()})
    again = _call(client, "POST", "/v1/locks/demo-lock-1/commit", json={"fulfilment": secret.hex()})
    _expect(done == again and done["state"] == "posted", "commit not idempotent")
    b = _call(client, "GET", "/v1/wallets/demo-bank-b")
    _expect(b["posted"] == 250_000_00, "beneficiary not credited")
    _say(
        "commit with the preimage (and its replay)",
        f"demo-bank-b holds {b['posted'] / 100:,.2f} KZT",
    )
    inv = _call(client, "GET", "/v1/ledger/invariants")
    _expect(inv["ok"], f"invariants violated: {inv['violations']}")
    _say(
        "conservation",
        f"circulating = issued - redeemed = {inv['issued_minus_redeemed'] / 100:,.2f} KZT",
    )


def start_stablecoin(settings: Settings) -> tuple[DevChain, Stablecoin]:
    """The embedded chain (anvil if installed, else in-process) with a fresh deployment."""
    dev = start_devchain()
    admin, operator, attestor = dev.accounts[:3]
    chain = StablecoinChain(dev.w3, poll_latency=0.005)
    start_block = chain.block_number()
    chain.deploy(admin, minter=operator.address, attestor=attestor.address)
    configured = settings.model_copy(
        update={
            "stablecoin": settings.stablecoin.model_copy(
                update={
                    "rpc_url": dev.rpc_url or "",
                    "contract_address": chain.address,
                    "operator_key": SecretStr(operator.key.hex()),
                    "attestor_key": SecretStr(attestor.key.hex()),
                    "start_block": start_block,
                }
            )
        }
    )
    return dev, Stablecoin.from_settings(configured, w3=dev.w3)


def stablecoin_demo(
    operator: httpx.Client, exchange: httpx.Client, engine: Engine, dev: DevChain, sc: Stablecoin
) -> None:
    print(f"Stablecoin ({dev.kind})")
    _say("deployed DTStablecoin", sc.contract)
    _call(
        operator,
        "POST",
        "/v1/wallets",
        json={"id": "demo-exchange-dt", "kind": "exchange", "owner": "demo-exchange"},
    )
    _call(
        operator,
        "POST",
        "/v1/issuances",
        json={"id": "demo-issue-exch", "wallet_id": "demo-exchange-dt", "amount": 5_000_00},
    )
    _say("exchange wallet funded", "5,000.00 KZT in demo-exchange-dt")
    holder = dev.accounts[5]
    body = {
        "amount": 1_000_00,
        "source_wallet_id": "demo-exchange-dt",
        "evm_address": holder.address,
    }
    mint = _call(
        exchange, "POST", "/v1/stablecoin/mints", json=body, headers={"Idempotency-Key": "demo-1"}
    )
    _expect(mint["state"] == "minted", f"mint not confirmed: {mint}")
    _expect(sc.chain.balance_of(holder.address) == 1_000_00, "tokens not minted")
    _say("minted through the exchange API", f"1,000.00 KZTD, tx {mint['tx_hash'][:18]}...")
    replay = _call(
        exchange, "POST", "/v1/stablecoin/mints", json=body, headers={"Idempotency-Key": "demo-1"}
    )
    _expect(replay["id"] == mint["id"], "idempotent replay minted again")
    _say("replayed with the same Idempotency-Key", "same mint, nothing moved")
    sc.chain.redeem(holder, 400_00, "demo-exchange-dt")
    _say("holder redeemed on-chain", "400.00 KZTD burnt, reference demo-exchange-dt")
    uow = partial(StablecoinUnitOfWork, engine)
    paid = watcher.poll(uow, sc).redemptions
    _expect([r.amount for r in paid] == [400_00], f"watcher paid {paid}")
    wallet = _call(operator, "GET", "/v1/wallets/demo-exchange-dt")
    _expect(wallet["posted"] == 4_400_00, f"exchange wallet holds {wallet['posted']}")
    _say("watcher paid the DT back", f"demo-exchange-dt holds {wallet['posted'] / 100:,.2f} KZT")
    result = stablecoin_service.reconcile(uow, sc)
    _expect(result is not None and result.ok, f"reconciliation gap: {result}")
    assert result is not None
    _say(
        "reconciliation",
        f"segregated {result.segregated_balance / 100:,.2f} KZT = "
        f"totalSupply {result.total_supply / 100:,.2f} KZTD, gap 0",
    )


DEMO_GATEWAY_BIC = "NBKZKZKAXXX"


def start_connector(root: Path) -> Connector:
    """The SWIFT CBDC-connector mock with its simulated UAE central bank (AED)."""
    settings = load_settings(
        environ={},
        data_dir=str(root),
        connector={
            "database_url": f"sqlite:///{root / 'connector.db'}",
            "sim_accounts": {"AED": {"EBIL-AED": 1_000_000_00}},
        },
    )
    return Connector(settings)


def _wait_pvp(connector: httpx.Client, pvp_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        view: dict[str, Any] = _call(connector, "GET", f"/v1/pvp/{pvp_id}")
        if view["state"] in ("settled", "cancelled"):
            return view
        if time.monotonic() > deadline:
            raise DemoFailed(f"PvP {pvp_id} did not finish: {view}")
        time.sleep(0.05)


def pvp_demo(client: httpx.Client, connector: httpx.Client, gateway_url: str) -> None:
    print("PvP DT/AED through the SWIFT CBDC-connector mock (simulated UAE central bank)")
    cert = httpx.get(gateway_url + "/iso20022/certificate", timeout=10).text
    _call(
        connector,
        "POST",
        "/v1/participants",
        json={
            "bic": DEMO_GATEWAY_BIC,
            "currency": "KZT",
            "endpoint": gateway_url,
            "certificate_pem": cert,
        },
    )
    _say("certificates pinned both ways", f"gateway registered as the KZT network ({gateway_url})")
    _call(
        client,
        "POST",
        "/v1/wallets",
        json={"id": "demo-hsbk", "kind": "participant", "owner": "Halyk Bank"},
    )
    _call(
        client,
        "POST",
        "/v1/wallets",
        json={"id": "demo-cbuae", "kind": "foreign_central_bank", "owner": "CB of the UAE"},
    )
    _call(
        client,
        "POST",
        "/v1/issuances",
        json={"id": "demo-issue-pvp", "wallet_id": "demo-hsbk", "amount": 500_000_00},
    )
    _say(
        "opened DT wallets, issued", "500,000.00 KZT to demo-hsbk; EBIL-AED holds 1,000,000.00 AED"
    )

    def balances() -> tuple[int, int, int, int]:
        hsbk = _call(client, "GET", "/v1/wallets/demo-hsbk")
        cbuae = _call(client, "GET", "/v1/wallets/demo-cbuae")
        ebil = _call(connector, "GET", "/v1/sim/AED/accounts/EBIL-AED")
        _call(connector, "POST", "/v1/sim/AED/accounts", json={"account": "HSBK-AED", "amount": 0})
        hsbk_aed = _call(connector, "GET", "/v1/sim/AED/accounts/HSBK-AED")
        _expect(hsbk["reserved"] == 0 and ebil["held"] == 0, "funds left locked")
        return hsbk["posted"], cbuae["posted"], ebil["total"], hsbk_aed["total"]

    def trade(kzt: int, aed: int) -> str:
        value_time = datetime.now(UTC) + timedelta(seconds=10)
        body = {
            "value_time": value_time.isoformat(),
            "a": {
                "bic": "HSBKKZKX",
                "currency": "KZT",
                "amount": kzt,
                "account": "demo-hsbk",
                "receive_account": "HSBK-AED",
            },
            "b": {
                "bic": "EBILAEAD",
                "currency": "AED",
                "amount": aed,
                "account": "EBIL-AED",
                "receive_account": "demo-cbuae",
            },
        }
        return str(_call(connector, "POST", "/v1/trades", json=body)["pvp_id"])

    def show(label: str, b: tuple[int, int, int, int]) -> None:
        _say(
            label,
            f"demo-hsbk {b[0] / 100:,.2f} KZT, demo-cbuae {b[1] / 100:,.2f} KZT, "
            f"EBIL-AED {b[2] / 100:,.2f} AED, HSBK-AED {b[3] / 100:,.2f} AED",
        )

    before = balances()
    show("balances", before)
    pvp_id = trade(100_000_00, 730_00)
    view = _wait_pvp(connector, pvp_id)
    legs = {leg["leg"]: leg["status"] for leg in view["legs"]}
    gw = _call(client, "GET", f"/v1/pvp/{pvp_id}")
    _expect(
        view["state"] == "settled" and legs == {"DT": "settled", "FX": "settled"},
        f"PvP not settled: {view}",
    )
    _expect(gw["decision"] == "commit" and gw["legs"][0]["state"] == "settled", f"gateway: {gw}")
    _say(
        "100,000.00 KZT against 730.00 AED",
        f"COMMIT; DT leg {legs['DT']}, AED leg {legs['FX']} ({len(gw['messages'])} messages)",
    )
    after = balances()
    _expect(
        after
        == (before[0] - 100_000_00, before[1] + 100_000_00, before[2] - 730_00, before[3] + 730_00),
        f"balances did not move as traded: {after}",
    )
    show("balances", after)
    pvp_id = trade(1_000_000_00, 7_300_00)
    view = _wait_pvp(connector, pvp_id)
    legs = {leg["leg"]: leg["status"] for leg in view["legs"]}
    decision = view["decision"] or {}
    _expect(
        view["state"] == "cancelled" and decision.get("reason") == "AM04",
        f"PvP not aborted for insufficient funds: {view}",
    )
    _expect(legs["DT"] == "rejected" and legs["FX"] in ("released", "rejected"), f"legs: {legs}")
    _say(
        "1,000,000.00 KZT (more than demo-hsbk holds)",
        f"ABORT {decision.get('reason')}: DT leg {legs['DT']}, AED leg {legs['FX']}",
    )
    _expect(balances() == after, "an aborted PvP moved money")
    show("balances unchanged", after)
    inv = _call(client, "GET", "/v1/ledger/invariants")
    sim = _call(connector, "GET", "/v1/sim/AED/check")
    _expect(inv["ok"] and sim["ok"], f"conservation violated: {inv} {sim}")
    _say("conservation", "DT ledger and simulated AED ledger both conserve money")


def run_demo(workdir: str = "var/demo", keep: bool = False) -> int:
    root = Path(workdir)
    if root.exists() and not keep:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    connector = start_connector(root)
    connector_port = free_port()
    witness = demo_witness(root)
    settings = load_settings(
        environ={},
        data_dir=str(root),
        database={"url": f"sqlite:///{root / 'gateway.db'}"},
        connector={"url": f"http://127.0.0.1:{connector_port}"},
        iso20022={"connector_cert_pem": connector.cert_pem},
        collateral={"witnesses": [witness.setting()]},
    )
    engine = make_engine(settings.database)
    upgrade(engine)
    token = auth.create_key(engine, "operator", label="demo").token
    exchange_token = auth.create_key(engine, "exchange", subject="demo-exchange").token
    dev, sc = start_stablecoin(settings)
    app = create_app(settings, engine, stablecoin=sc)
    assert sc.collateral is not None
    print(f"DT Gateway demo (data in {root})")
    try:
        with (
            serve_in_thread(create_connector_app(connector), port=connector_port) as curl,
            serve_in_thread(app) as url,
            witness_serving(witness, sc.collateral.signer.verifier()) as wurl,
        ):
            print(f"gateway listening on {url}, connector mock on {curl}")
            print(f"witness of the collateral log on {wurl}, key {witness.vkey}")
            headers = {"Authorization": f"Bearer {token}"}
            exchange_headers = {"Authorization": f"Bearer {exchange_token}"}
            with (
                httpx.Client(base_url=url, headers=headers, timeout=10) as client,
                httpx.Client(base_url=url, headers=exchange_headers, timeout=30) as exchange,
                httpx.Client(base_url=curl, timeout=10) as connector_client,
            ):
                ledger_demo(client)
                stablecoin_demo(client, exchange, engine, dev, sc)
                pvp_demo(client, connector_client, url)
                collateral_demo(url, dev.rpc_url, engine, sc, root, _say, _expect)
    except DemoFailed as exc:
        print(f"DEMO FAILED: {exc}")
        return 1
    finally:
        dev.stop()
    print("demo complete: every step behaved as promised")
    return 0


__all__ = ["run_demo"]
