"""``dt-gateway demo``: the gateway end to end on embedded defaults, over real HTTP.

Each step prints what it does and what it observed; the demo fails loudly (exit 1) if any
observation differs from what the product promises.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
from pathlib import Path
from typing import Any

import httpx

from gateway import auth
from gateway.api.app import create_app
from gateway.config import load_settings
from gateway.db import make_engine, upgrade
from gateway.serving import serve_in_thread


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


def run_demo(workdir: str = "var/demo", keep: bool = False) -> int:
    root = Path(workdir)
    if root.exists() and not keep:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    settings = load_settings(environ={}, database={"url": f"sqlite:///{root / 'gateway.db'}"})
    engine = make_engine(settings.database)
    upgrade(engine)
    token = auth.create_key(engine, "operator", label="demo").token
    app = create_app(settings, engine)
    print(f"DT Gateway demo (data in {root})")
    try:
        with serve_in_thread(app) as url:
            print(f"gateway listening on {url}")
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
                ledger_demo(client)
    except DemoFailed as exc:
        print(f"DEMO FAILED: {exc}")
        return 1
    print("demo complete: every step behaved as promised")
    return 0


__all__ = ["run_demo"]
