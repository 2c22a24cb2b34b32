"""The operator API over real HTTP: every route, and every kind of bad input, which must get a
4xx problem document and change nothing."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway import auth
from tests.support.http import Gateway
from tests.support.waiting import wait_for

PROBLEM = "application/problem+json"


def _open(gw: Gateway, wallet_id: str, kind: str = "participant") -> dict[str, Any]:
    r = gw.operator.post("/v1/wallets", json={"id": wallet_id, "kind": kind, "owner": wallet_id})
    assert r.status_code == 201, r.text
    return r.json()


def _funded(gw: Gateway, amount: int = 10_000) -> tuple[str, str]:
    _open(gw, "a")
    _open(gw, "b")
    r = gw.operator.post("/v1/issuances", json={"id": "iss-1", "wallet_id": "a", "amount": amount})
    assert r.status_code == 201, r.text
    return "a", "b"


def _balances(gw: Gateway) -> dict[str, tuple[int, int]]:
    return {
        w: (
            gw.operator.get(f"/v1/wallets/{w}").json()["posted"],
            gw.operator.get(f"/v1/wallets/{w}").json()["reserved"],
        )
        for w in ("a", "b")
    }


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    return body


def test_health_needs_no_key(gateway: Gateway) -> None:
    r = gateway.anonymous.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_openapi_schema_lists_every_operator_route(gateway: Gateway) -> None:
    r = gateway.anonymous.get("/schema/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in (
        "/v1/wallets",
        "/v1/wallets/{wallet_id}",
        "/v1/wallets/{wallet_id}/history",
        "/v1/transfers",
        "/v1/locks",
        "/v1/locks/{lock_id}",
        "/v1/locks/{lock_id}/commit",
        "/v1/locks/{lock_id}/release",
        "/v1/batches",
        "/health",
    ):
        assert path in paths


def test_wallet_open_is_idempotent_and_shows_balances(gateway: Gateway) -> None:
    first = _open(gateway, "w1")
    assert _open(gateway, "w1") == first
    assert first["posted"] == 0 and first["available"] == 0 and first["status"] == "open"
    r = gateway.operator.post("/v1/wallets", json={"id": "w1", "kind": "exchange", "owner": "x"})
    _problem(r, 409, "DU01")


def test_transfer_moves_funds_and_replays(gateway: Gateway) -> None:
    a, b = _funded(gateway)
    body = {"id": "t1", "debit_wallet_id": a, "credit_wallet_id": b, "amount": 2_500}
    first = gateway.operator.post("/v1/transfers", json=body)
    assert first.status_code == 201
    assert gateway.operator.post("/v1/transfers", json=body).json() == first.json()
    assert _balances(gateway) == {"a": (7_500, 0), "b": (2_500, 0)}
    assert gateway.operator.get("/v1/transfers/t1").json() == first.json()
    r = gateway.operator.post("/v1/transfers", json={**body, "amount": 2_501})
    _problem(r, 409, "DU01")
    assert _balances(gateway) == {"a": (7_500, 0), "b": (2_500, 0)}


def test_lock_commit_with_preimage(gateway: Gateway) -> None:
    a, b = _funded(gateway)
    secret = os.urandom(32)
    condition = hashlib.sha256(secret).hexdigest()
    lock = {
        "id": "l1",
        "debit_wallet_id": a,
        "credit_wallet_id": b,
        "amount": 4_000,
        "condition": condition,
    }
    r = gateway.operator.post("/v1/locks", json=lock)
    assert r.status_code == 201 and r.json()["state"] == "pending"
    assert _balances(gateway) == {"a": (10_000, 4_000), "b": (0, 0)}
    assert gateway.operator.get("/v1/wallets/a").json()["available"] == 6_000
    _problem(
        gateway.operator.post("/v1/locks/l1/commit", json={"fulfilment": "ab" * 32}),
        422,
        "CONDITION_MISMATCH",
    )
    _problem(gateway.operator.post("/v1/locks/l1/commit", json={}), 422, "CONDITION_MISMATCH")
    assert _balances(gateway) == {"a": (10_000, 4_000), "b": (0, 0)}
    ok = gateway.operator.post("/v1/locks/l1/commit", json={"fulfilment": secret.hex()})
    assert ok.status_code == 200 and ok.json()["state"] == "posted"
    assert (
        gateway.operator.post("/v1/locks/l1/commit", json={"fulfilment": secret.hex()}).json()
        == ok.json()
    )
    assert gateway.operator.get("/v1/locks/l1").json() == ok.json()
    assert _balances(gateway) == {"a": (6_000, 0), "b": (4_000, 0)}
    _problem(gateway.operator.post("/v1/locks/l1/release"), 409, "LOCK_RESOLVED")
    assert _balances(gateway) == {"a": (6_000, 0), "b": (4_000, 0)}


def test_release_returns_funds_once(gateway: Gateway) -> None:
    a, b = _funded(gateway)
    lock = {"id": "l2", "debit_wallet_id": a, "credit_wallet_id": b, "amount": 1_000}
    assert gateway.operator.post("/v1/locks", json=lock).status_code == 201
    first = gateway.operator.post("/v1/locks/l2/release")
    assert first.status_code == 200 and first.json()["state"] == "voided"
    assert gateway.operator.post("/v1/locks/l2/release").json() == first.json()
    _problem(gateway.operator.post("/v1/locks/l2/commit"), 409, "LOCK_RESOLVED")
    assert _balances(gateway) == {"a": (10_000, 0), "b": (0, 0)}


def test_expired_lock_cannot_be_resolved(gateway: Gateway) -> None:
    a, b = _funded(gateway)
    expires = datetime.now(UTC) + timedelta(seconds=1)  # far enough for the lock to be made
    lock = {
        "id": "l3",
        "debit_wallet_id": a,
        "credit_wallet_id": b,
        "amount": 1_000,
        "expires_at": expires.isoformat(),
    }
    assert gateway.operator.post("/v1/locks", json=lock).status_code == 201
    # The gateway reads this machine's clock: once it is past the expiry, so is the gateway's.
    wait_for(lambda: datetime.now(UTC) > expires, "the clock past the expiry")
    _problem(gateway.operator.post("/v1/locks/l3/commit"), 409, "LOCK_EXPIRED")
    _problem(gateway.operator.post("/v1/locks/l3/release"), 409, "LOCK_EXPIRED")
    assert _balances(gateway) == {"a": (10_000, 1_000), "b": (0, 0)}


def test_history_pages_with_a_cursor(gateway: Gateway) -> None:
    a, b = _funded(gateway)
    for i in range(5):
        body = {"id": f"h{i}", "debit_wallet_id": a, "credit_wallet_id": b, "amount": 10 + i}
        assert gateway.operator.post("/v1/transfers", json=body).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = gateway.operator.get(f"/v1/wallets/{a}/history", params=params).json()
        seen += [e["ref_id"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["iss-1", "h0", "h1", "h2", "h3", "h4"]
    _problem(gateway.operator.get("/v1/wallets/nope/history"), 404, "AC01")
    _problem(
        gateway.operator.get(f"/v1/wallets/{a}/history", params={"limit": 0}), 400, "INVALID_INPUT"
    )


def test_batch_is_all_or_nothing(gateway: Gateway) -> None:
    a, b = _funded(gateway)
    ops = [
        {"op": "lock", "id": "bl1", "debit_wallet_id": a, "credit_wallet_id": b, "amount": 100},
        {"op": "commit_lock", "id": "bl1"},
        {
            "op": "transfer",
            "id": "bt1",
            "debit_wallet_id": a,
            "credit_wallet_id": b,
            "amount": 99_999,
        },
    ]
    body = _problem(gateway.operator.post("/v1/batches", json={"operations": ops}), 422, "AM04")
    assert body["operation_index"] == 2
    assert _balances(gateway) == {"a": (10_000, 0), "b": (0, 0)}
    _problem(gateway.operator.get("/v1/locks/bl1"), 404, "LOCK_NOT_FOUND")
    ops[2]["amount"] = 900
    r = gateway.operator.post("/v1/batches", json={"operations": ops})
    assert r.status_code == 200, r.text
    assert [x["object"] for x in r.json()["results"]] == ["lock", "lock", "transfer"]
    assert _balances(gateway) == {"a": (9_000, 0), "b": (1_000, 0)}
    assert gateway.operator.post("/v1/batches", json={"operations": ops}).json() == r.json()


def test_frozen_wallet_cannot_send_but_receives(gateway: Gateway) -> None:
    a, b = _funded(gateway)
    r = gateway.operator.post(f"/v1/wallets/{a}/status", json={"status": "frozen"})
    assert r.json()["status"] == "frozen"
    t = {"id": "f1", "debit_wallet_id": a, "credit_wallet_id": b, "amount": 1}
    _problem(gateway.operator.post("/v1/transfers", json=t), 422, "AC06")
    r = gateway.operator.post("/v1/issuances", json={"id": "iss-2", "wallet_id": a, "amount": 5})
    assert r.status_code == 201
    _problem(
        gateway.operator.post(f"/v1/wallets/{a}/status", json={"status": "closed"}),
        409,
        "WALLET_NOT_EMPTY",
    )


def test_closed_wallet_refuses_funds(gateway: Gateway) -> None:
    a, _ = _funded(gateway)
    _open(gateway, "c")
    assert (
        gateway.operator.post("/v1/wallets/c/status", json={"status": "closed"}).status_code == 200
    )
    t = {"id": "c1", "debit_wallet_id": a, "credit_wallet_id": "c", "amount": 1}
    _problem(gateway.operator.post("/v1/transfers", json=t), 422, "AC04")


BAD_TRANSFERS: list[tuple[dict[str, Any], int, str]] = [
    ({"amount": 0}, 400, "AM12"),
    ({"amount": -5}, 400, "AM12"),
    ({"amount": 1.5}, 400, "INVALID_INPUT"),
    ({"amount": "100"}, 400, "INVALID_INPUT"),
    ({"amount": True}, 400, "INVALID_INPUT"),
    ({"amount": 100.0}, 400, "INVALID_INPUT"),
    ({"amount": "1e2"}, 400, "INVALID_INPUT"),
    ({"amount": 2**63}, 400, "AM12"),
    ({"amount": 10**30}, 400, "AM12"),
    ({"amount": 10_001}, 422, "AM04"),
    ({"credit_wallet_id": "ghost"}, 404, "AC01"),
    ({"debit_wallet_id": "ghost"}, 404, "AC01"),
    ({"currency": "AED"}, 422, "AM11"),
    ({"currency": "kzt"}, 400, "INVALID_INPUT"),
    ({"credit_wallet_id": "a"}, 400, "SAME_WALLET"),
    ({"id": ""}, 400, "INVALID_INPUT"),
    ({"id": "has space"}, 400, "INVALID_ID"),
    ({"unexpected": 1}, 400, "INVALID_INPUT"),
    ({"credit_wallet_id": "issuance-KZT"}, 422, "NOT_ALLOWED"),
]


@pytest.mark.parametrize(("change", "status", "code"), BAD_TRANSFERS)
def test_bad_transfer_is_refused_and_changes_nothing(
    gateway: Gateway, change: dict[str, Any], status: int, code: str
) -> None:
    a, b = _funded(gateway)
    body = {"id": "bad", "debit_wallet_id": a, "credit_wallet_id": b, "amount": 100, **change}
    _problem(gateway.operator.post("/v1/transfers", json=body), status, code)
    assert _balances(gateway) == {"a": (10_000, 0), "b": (0, 0)}
    assert gateway.operator.get("/v1/ledger/invariants").json()["ok"]


def test_malformed_json_is_a_problem(gateway: Gateway) -> None:
    r = gateway.operator.post(
        "/v1/transfers",
        content=b'{"id": "x", "amount": ',
        headers={"content-type": "application/json"},
    )
    _problem(r, 400, "INVALID_INPUT")


def test_unknown_lock_and_wallet_are_404(gateway: Gateway) -> None:
    _problem(gateway.operator.get("/v1/locks/none"), 404, "LOCK_NOT_FOUND")
    _problem(gateway.operator.post("/v1/locks/none/commit"), 404, "LOCK_NOT_FOUND")
    _problem(gateway.operator.get("/v1/wallets/none"), 404, "AC01")


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer nonsense", "Bearer dtg_0000_secret", "Basic dXNlcjpwYXNz"],
)
def test_missing_or_wrong_key_is_401(gateway: Gateway, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = gateway.anonymous.post(
        "/v1/wallets", json={"id": "x", "kind": "participant", "owner": "x"}, headers=headers
    )
    _problem(r, 401, "UNAUTHORIZED")
    assert gateway.operator.get("/v1/wallets/x").status_code == 404


def test_revoked_and_wrong_role_keys_are_refused(gateway: Gateway) -> None:
    participant = auth.create_key(gateway.engine, "participant").token
    with gateway.client_with(participant) as client:
        _problem(client.get("/v1/wallets/a"), 403, "FORBIDDEN")
    created = auth.create_key(gateway.engine, "operator")
    auth.revoke_key(gateway.engine, created.principal.key_id)
    with gateway.client_with(created.token) as client:
        _problem(client.get("/v1/wallets/a"), 401, "UNAUTHORIZED")
