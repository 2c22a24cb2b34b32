"""A mint that cannot succeed is refused before any DT moves: the zero address, the contract's
own address, a blocklisted address, a paused contract, an amount above the per-mint limit.
Each is a 4xx problem with its own code that leaves balances, totalSupply, the exchange's
event list and the outbox as they were. On SQLite and PostgreSQL, over real HTTP on anvil."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from gateway.stablecoin.devchain import DevChain
from tests.support.databases import migrated_engine
from tests.support.stablecoin import (
    EXCHANGE,
    EXCHANGE_WALLET,
    OTHER_EXCHANGE,
    OTHER_WALLET,
    Flow,
    balance,
    deploy,
    running_flow,
    webhook_receiver,
)

pytestmark = pytest.mark.chain

LIMIT = 5_000_00
"""stablecoin.max_mint_amount in these tests: 5,000.00 KZT."""


@dataclass(frozen=True)
class Snapshot:
    """Everything a refused mint must leave as it was."""

    exchange_dt: int
    other_dt: int
    segregated: int
    supply: int
    operator_nonce: int
    events: tuple[str, ...]
    other_events: tuple[str, ...]
    mints: tuple[str, ...]
    outbox_rows: int

    @classmethod
    def take(cls, flow: Flow) -> Snapshot:
        with flow.engine.connect() as conn:
            outbox_rows = conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one()
        return cls(
            balance(flow.engine, EXCHANGE_WALLET),
            balance(flow.engine, OTHER_WALLET),
            flow.segregated(),
            flow.dep.client.total_supply(),
            flow.dep.chain.w3.eth.get_transaction_count(flow.dep.operator.address),
            _event_ids(flow, EXCHANGE),
            _event_ids(flow, OTHER_EXCHANGE),
            tuple(m["id"] for m in _get(flow, "/v1/stablecoin/mints?limit=500")["mints"]),
            outbox_rows,
        )


def _get(flow: Flow, path: str, who: str = EXCHANGE) -> Any:
    resp = flow.client(who).get(path)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _event_ids(flow: Flow, who: str) -> tuple[str, ...]:
    return tuple(e["id"] for e in _get(flow, "/v1/events?limit=500", who)["events"])


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def flow(
    request: pytest.FixtureRequest, anvil: DevChain, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flow]:
    """One gateway per database, with a webhook endpoint and one mint made (so that there are
    events and balances to leave unchanged)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('refused') / 'gateway.db'}"
    else:
        url = request.getfixturevalue("pg_database_factory")(migrated=True)
    engine = migrated_engine(url)
    dep = deploy(anvil)
    with webhook_receiver() as receiver, running_flow(engine, dep, max_mint_amount=LIMIT) as f:
        registered = f.client().post("/v1/webhooks/endpoints", json={"url": receiver.url})
        assert registered.status_code == 201, registered.text
        ok = f.mint("first", 10_00, dep.holders[0].address)
        assert ok.status_code == 201 and ok.json()["state"] == "minted", ok.text
        yield f
    engine.dispose()


def _mint(flow: Flow, key: str, to: str, amount: int = 5_00) -> httpx.Response:
    return flow.mint(key, amount, to)


def _zero(flow: Flow, key: str) -> httpx.Response:
    return _mint(flow, key, "0x" + "0" * 40)


def _contract(flow: Flow, key: str) -> httpx.Response:
    return _mint(flow, key, flow.dep.client.address)


def _contract_lowercase(flow: Flow, key: str) -> httpx.Response:
    return _mint(flow, key, flow.dep.client.address.lower())


def _blocklisted(flow: Flow, key: str) -> httpx.Response:
    victim = flow.dep.holders[3].address
    if not flow.dep.client.call("isBlocklisted", victim):
        flow.dep.client.transact(flow.dep.blocklister, "blocklist", victim)
    return _mint(flow, key, victim)


def _paused(flow: Flow, key: str) -> httpx.Response:
    client, pauser = flow.dep.client, flow.dep.pauser
    client.transact(pauser, "pause")
    try:
        return _mint(flow, key, flow.dep.holders[1].address)
    finally:
        client.transact(pauser, "unpause")


def _above_limit(flow: Flow, key: str) -> httpx.Response:
    return _mint(flow, key, flow.dep.holders[1].address, amount=LIMIT + 1)


REFUSALS: dict[str, tuple[Callable[[Flow, str], httpx.Response], int, str]] = {
    "zero_address": (_zero, 422, "RECEIVER_ZERO_ADDRESS"),
    "contract_address": (_contract, 422, "RECEIVER_IS_CONTRACT"),
    "contract_address_in_lowercase": (_contract_lowercase, 422, "RECEIVER_IS_CONTRACT"),
    "blocklisted_address": (_blocklisted, 422, "ACCOUNT_BLOCKED"),
    "paused_contract": (_paused, 409, "CONTRACT_PAUSED"),
    "amount_above_the_per_mint_limit": (_above_limit, 422, "MINT_LIMIT_EXCEEDED"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_mint_moves_nothing_and_records_no_event(flow: Flow, case: str) -> None:
    call, status, code = REFUSALS[case]
    before = Snapshot.take(flow)
    resp = call(flow, f"refused-{case}")
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["title"] and problem["detail"]
    assert Snapshot.take(flow) == before


def test_a_refused_request_leaves_its_idempotency_key_free(flow: Flow) -> None:
    """Nothing of a refused request is stored: the key serves a good request next."""
    assert _zero(flow, "reused-after-refusal").status_code == 422
    again = _zero(flow, "reused-after-refusal")
    assert again.status_code == 422 and again.json()["code"] == "RECEIVER_ZERO_ADDRESS"
    good = _mint(flow, "reused-after-refusal", flow.dep.holders[1].address)
    assert good.status_code == 201 and good.json()["state"] == "minted", good.text


def test_the_limit_itself_is_accepted(flow: Flow) -> None:
    resp = _mint(flow, "at-the-limit", flow.dep.holders[2].address, amount=LIMIT)
    assert resp.status_code == 201 and resp.json()["state"] == "minted", resp.text
    assert resp.json()["amount"] == LIMIT


def test_the_refusals_are_in_the_openapi_document(flow: Flow) -> None:
    doc = httpx.get(f"{flow.url}/schema/openapi.json", timeout=10).json()
    responses = doc["paths"]["/v1/stablecoin/mints"]["post"]["responses"]
    for code in ("MINT_LIMIT_EXCEEDED", "RECEIVER_ZERO_ADDRESS", "RECEIVER_IS_CONTRACT"):
        assert code in responses["422"]["description"]
    assert "CONTRACT_PAUSED" in responses["409"]["description"]
    assert "application/problem+json" in responses["422"]["content"]
