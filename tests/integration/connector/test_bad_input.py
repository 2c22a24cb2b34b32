"""The connector mock's edge: bad input is a 4xx problem, never a 500 (nor a crash), on SQLite
and on PostgreSQL, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.connector.app import create_app
from gateway.connector.runtime import Connector
from gateway.messaging.serving import serve_in_thread
from tests.integration.connector.support import connector_settings

ADMIN = {"Authorization": "Bearer admin-token"}
JSON = {"content-type": "application/json"}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database: dict[str, str] = {}
    if request.param == "postgresql":
        factory: Callable[[], str] = request.getfixturevalue("pg_database_factory")
        database["database_url"] = factory()
    settings = connector_settings(
        tmp_path_factory.mktemp("connector"), admin_token="admin-token", **database
    )
    with serve_in_thread(create_app(Connector(settings))) as base:
        yield base


def trade(**side_b: Any) -> dict[str, Any]:
    return {
        "value_time": "2030-01-01T00:00:00Z",
        "a": {
            "bic": "HSBKKZKX",
            "currency": "KZT",
            "amount": 100,
            "account": "hsbk-dt",
            "receive_account": "HSBK-AED",
        },
        "b": {
            "bic": "EBILAEAD",
            "currency": "AED",
            "amount": 8,
            "account": "EBIL-AED",
            "receive_account": "ebil-dt",
            **side_b,
        },
    }


CASES: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "nul_in_a_path_id": ("GET", "/v1/pvp/%00", {}, 400),
    "nul_in_a_sim_account": ("GET", "/v1/sim/AED/accounts/a%00b", {}, 400),
    "nul_in_a_trade_account": ("POST", "/v1/trades", {"json": trade(account="E\0")}, 400),
    "nul_in_a_new_sim_account": (
        "POST",
        "/v1/sim/AED/accounts",
        {"json": {"account": "x\0", "amount": 1}},
        400,
    ),
    "currency_that_is_an_object": ("POST", "/v1/trades", {"json": trade(currency={})}, 400),
    "participant_currency_that_is_a_list": (
        "POST",
        "/v1/participants",
        {"json": {"bic": "HSBKKZKX", "currency": ["KZT"]}},
        400,
    ),
    "sim_issuance_beyond_64_bits": (
        "POST",
        "/v1/sim/AED/accounts",
        {"json": {"account": "big", "amount": 2**64}},
        400,
    ),
    "arrays_nested_100000_deep": (
        "POST",
        "/v1/trades",
        {"content": b"[" * 100_000 + b"]" * 100_000, "headers": JSON},
        400,
    ),
    "trade_as_text_plain": (
        "POST",
        "/v1/trades",
        {"content": b"{}", "headers": {"content-type": "text/plain"}},
        415,
    ),
    "trade_as_a_form": ("POST", "/v1/trades", {"data": {"a": "b"}}, 415),
    "trade_without_the_admin_token": ("POST", "/v1/trades", {"json": {}, "anonymous": True}, 401),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_4xx_problem(url: str, case: str) -> None:
    method, path, kwargs, status = CASES[case]
    kwargs = dict(kwargs)
    headers = {} if kwargs.pop("anonymous", False) else dict(ADMIN)
    headers.update(kwargs.pop("headers", {}))
    r = httpx.request(method, url + path, headers=headers, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == status and r.json()["code"]
    check = httpx.get(f"{url}/v1/sim/AED/check", timeout=30).json()
    assert check["ok"], check
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200
