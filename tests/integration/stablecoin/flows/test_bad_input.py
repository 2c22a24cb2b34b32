"""Every refusal is a clear 4xx problem document, moves no DT and sends nothing on-chain."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.stablecoin.devchain import DevChain
from tests.support.databases import migrated_engine
from tests.support.stablecoin import (
    EXCHANGE_WALLET,
    FUNDED,
    OTHER_EXCHANGE,
    OTHER_WALLET,
    Flow,
    balance,
    deploy,
    running_flow,
)

pytestmark = pytest.mark.chain


@dataclass
class Baseline:
    flow: Flow
    exchange_dt: int
    segregated: int
    supply: int
    operator_nonce: int

    @classmethod
    def take(cls, flow: Flow) -> Baseline:
        w3 = flow.dep.chain.w3
        return cls(
            flow,
            balance(flow.engine, EXCHANGE_WALLET),
            flow.segregated(),
            flow.dep.client.total_supply(),
            w3.eth.get_transaction_count(flow.dep.operator.address),
        )


@pytest.fixture(scope="module")
def flow(anvil: DevChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    dep = deploy(anvil)
    engine = migrated_engine(f"sqlite:///{tmp_path_factory.mktemp('bad') / 'gateway.db'}")
    with running_flow(engine, dep) as running:
        ok = running.mint("first", 10_00, dep.holders[0].address)
        assert ok.status_code == 201 and ok.json()["state"] == "minted"
        yield running
    engine.dispose()


def _flip_case(address: str) -> str:
    """The address with one letter's case changed: a checksum mismatch."""
    for i, ch in enumerate(address[2:], start=2):
        if ch.isalpha():
            return address[:i] + ch.swapcase() + address[i + 1 :]
    raise AssertionError("no letter in address")


Case = Callable[[Flow], httpx.Response]


def _mint(
    flow: Flow, body: dict[str, Any], key: str | None = "bad-key", who: str = "exch-1"
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return flow.client(who).post("/v1/stablecoin/mints", json=body, headers=headers)


def _body(flow: Flow, **over: Any) -> dict[str, Any]:
    return {
        "amount": 5_00,
        "source_wallet_id": EXCHANGE_WALLET,
        "evm_address": flow.dep.holders[1].address,
        **over,
    }


def _paused(flow: Flow) -> httpx.Response:
    client, pauser = flow.dep.client, flow.dep.pauser
    client.transact(pauser, "pause")
    try:
        return _mint(flow, _body(flow))
    finally:
        client.transact(pauser, "unpause")


def _blocklisted(flow: Flow) -> httpx.Response:
    victim = flow.dep.holders[2].address
    flow.dep.client.transact(flow.dep.blocklister, "blocklist", victim)
    return _mint(flow, _body(flow, evm_address=victim))


def _no_key(flow: Flow) -> httpx.Response:
    return httpx.post(f"{flow.url}/v1/stablecoin/mints", json=_body(flow), timeout=10)


def _wrong_key(flow: Flow) -> httpx.Response:
    return httpx.post(
        f"{flow.url}/v1/stablecoin/mints",
        json=_body(flow),
        headers={"Authorization": "Bearer dtg_0000000000000000_nope", "Idempotency-Key": "k"},
        timeout=10,
    )


CASES: dict[str, tuple[Case, int, str]] = {
    "address_not_hex": (
        lambda f: _mint(f, _body(f, evm_address="0x12345")),
        400,
        "INVALID_ADDRESS",
    ),
    "address_checksum_mismatch": (
        lambda f: _mint(f, _body(f, evm_address=_flip_case(f.dep.holders[1].address))),
        400,
        "INVALID_ADDRESS",
    ),
    "amount_zero": (lambda f: _mint(f, _body(f, amount=0)), 400, "AM12"),
    "amount_negative": (lambda f: _mint(f, _body(f, amount=-100)), 400, "AM12"),
    "amount_fractional": (lambda f: _mint(f, _body(f, amount=1.5)), 400, "INVALID_INPUT"),
    "amount_as_string": (lambda f: _mint(f, _body(f, amount="500")), 400, "INVALID_INPUT"),
    "unknown_wallet": (lambda f: _mint(f, _body(f, source_wallet_id="nope")), 404, "AC01"),
    "foreign_wallet": (
        lambda f: _mint(f, _body(f, source_wallet_id=OTHER_WALLET)),
        403,
        "FOREIGN_WALLET",
    ),
    "not_an_exchange_wallet": (
        lambda f: _mint(f, _body(f, source_wallet_id="bank-1")),
        422,
        "NOT_EXCHANGE_WALLET",
    ),
    "insufficient_dt": (lambda f: _mint(f, _body(f, amount=FUNDED)), 422, "AM04"),
    "blocklisted_address": (_blocklisted, 422, "ACCOUNT_BLOCKED"),
    "paused_contract": (_paused, 409, "CONTRACT_PAUSED"),
    "idempotency_key_reused_with_another_body": (
        lambda f: _mint(f, _body(f, amount=11_00), key="first"),
        409,
        "DU01",
    ),
    "idempotency_key_missing": (
        lambda f: _mint(f, _body(f), key=None),
        400,
        "IDEMPOTENCY_KEY_REQUIRED",
    ),
    "api_key_missing": (_no_key, 401, "UNAUTHORIZED"),
    "api_key_wrong": (_wrong_key, 401, "UNAUTHORIZED"),
    "api_key_of_another_role": (lambda f: _mint(f, _body(f), who="operator"), 403, "FORBIDDEN"),
    "other_exchange_cannot_use_my_wallet": (
        lambda f: _mint(f, _body(f), who=OTHER_EXCHANGE),
        403,
        "FOREIGN_WALLET",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_mint_is_a_4xx_problem_and_changes_nothing(flow: Flow, case: str) -> None:
    call, status, code = CASES[case]
    before = Baseline.take(flow)
    resp = call(flow)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    assert problem["code"] == code and problem["status"] == status
    assert problem["detail"] and problem["title"]
    assert Baseline.take(flow) == before


def test_unknown_mint_is_404(flow: Flow) -> None:
    resp = flow.client().get("/v1/stablecoin/mints/does-not-exist")
    assert resp.status_code == 404 and resp.json()["code"] == "MINT_NOT_FOUND"


def test_schema_lists_the_exchange_routes(flow: Flow, tmp_path: Path) -> None:
    paths = httpx.get(f"{flow.url}/schema/openapi.json", timeout=10).json()["paths"]
    assert {"/v1/stablecoin/mints", "/v1/stablecoin/mints/{mint_id}"} <= set(paths)
    assert "/v1/stablecoin/redemptions" in paths and "/v1/stablecoin/reconciliation" in paths
