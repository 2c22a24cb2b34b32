"""Rate limits over real HTTP, on SQLite and PostgreSQL: per API key, per client address (keyed
or not, wrong keys included), the ISO 20022 door limited for refused posts only, so that the
pinned connector's messages are never limited, and the 429 with ``Retry-After`` as the
OpenAPI document declares it.

Client addresses other than 127.0.0.1 are given with ``X-Forwarded-For``, which uvicorn takes
from a proxy on 127.0.0.1 (its default ``FORWARDED_ALLOW_IPS``), as behind a reverse proxy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway import auth
from gateway.api.app import create_app
from gateway.config import Settings, load_settings
from gateway.messaging.serving import serve_in_thread
from tests.support.inprocess_pvp import InProcessPvP, Leg, serve_inprocess_pvp, uetr

FROM = "X-Forwarded-For"


def _settings(engine: Engine, **ratelimit: Any) -> Settings:
    return load_settings(environ={}, database={"url": str(engine.url)}, ratelimit=ratelimit)


@contextmanager
def _served(settings: Settings, engine: Engine) -> Iterator[str]:
    with serve_in_thread(create_app(settings, engine)) as url:
        yield url


def _get(url: str, token: str | None = None, address: str | None = None) -> httpx.Response:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if address:
        headers[FROM] = address
    return httpx.get(url + "/v1/wallets/w-none", headers=headers, timeout=10)


def _refused(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "RATE_LIMITED"
    assert int(r.headers["Retry-After"]) >= 1


def test_each_key_has_its_own_bucket(engine: Engine) -> None:
    first = auth.create_key(engine, "operator").token
    second = auth.create_key(engine, "operator").token
    settings = _settings(engine, key_burst=3, key_rate_per_second=0.01)
    with _served(settings, engine) as url:
        answers = [_get(url, first).status_code for _ in range(3)]
        limited = _get(url, first)
        other = _get(url, second)
    assert answers == [404, 404, 404]  # no such wallet: the request went through
    _refused(limited)
    assert "API key" in limited.json()["detail"]
    assert other.status_code == 404  # the same address, another key


def test_each_address_has_its_own_bucket_with_or_without_a_key(engine: Engine) -> None:
    token = auth.create_key(engine, "operator").token
    settings = _settings(engine, address_burst=3, address_rate_per_second=0.01)
    with _served(settings, engine) as url:
        a = "203.0.113.7"
        answers = [
            _get(url, token, a).status_code,
            _get(url, None, a).status_code,  # no key: 401, but it counts
            _get(url, "dtg_0000000000000000_guessing", a).status_code,  # a wrong key counts
        ]
        limited = _get(url, token, a)
        elsewhere = _get(url, token, "203.0.113.8")
        public = httpx.get(url + "/schema/openapi.json", headers={FROM: a}, timeout=10)
    assert answers == [404, 401, 401]
    _refused(limited)
    assert "address" in limited.json()["detail"]
    assert elsewhere.status_code == 404
    _refused(public)  # a public route, by address too


def test_exempt_networks_are_never_limited(engine: Engine) -> None:
    token = auth.create_key(engine, "operator").token
    settings = _settings(
        engine,
        key_burst=1,
        address_burst=1,
        key_rate_per_second=0.01,
        address_rate_per_second=0.01,
        exempt_networks=["198.51.100.0/24"],
    )
    with _served(settings, engine) as url:
        inside = {_get(url, token, "198.51.100.20").status_code for _ in range(10)}
        outside = [_get(url, token, "203.0.113.9").status_code for _ in range(2)]
    assert inside == {404}
    assert outside == [404, 429]


def test_limits_off(engine: Engine) -> None:
    token = auth.create_key(engine, "operator").token
    settings = _settings(engine, enabled=False, key_burst=1, address_burst=1)
    with _served(settings, engine) as url:
        assert {_get(url, token).status_code for _ in range(10)} == {404}


def test_openapi_declares_the_429_with_retry_after(engine: Engine) -> None:
    with _served(_settings(engine), engine) as url:
        doc = httpx.get(url + "/schema/openapi.json", timeout=10).json()
    keyed = doc["paths"]["/v1/wallets/{wallet_id}"]["get"]["responses"]["429"]
    assert keyed["headers"]["Retry-After"]["required"] is True
    content = keyed["content"]["application/problem+json"]
    assert content["examples"]["RATE_LIMITED"]["value"]["code"] == "RATE_LIMITED"
    door = doc["paths"]["/iso20022/messages"]["post"]["responses"]
    assert "429" in door and "Retry-After" in door["429"]["headers"]


# ------------------------------------------------------------------ the ISO 20022 door


@pytest.fixture
def door(engine: Engine, tmp_path: Path) -> Iterator[InProcessPvP]:
    """A PvP gateway whose door allows each address two refused posts, then one an hour."""
    pvp = {"workers": 1, "dispatchers": 1}
    ratelimit = {"door_refusal_burst": 2, "door_refusals_per_second": 1 / 3600}
    with serve_inprocess_pvp(engine, tmp_path, pvp, ratelimit=ratelimit) as world:
        yield world


def _post(world: InProcessPvP, raw: bytes, address: str) -> httpx.Response:
    return world.anonymous.post(
        "/iso20022/messages",
        content=raw,
        headers={"content-type": "application/xml", FROM: address},
    )


def test_the_pinned_connector_is_never_limited_at_the_door(door: InProcessPvP) -> None:
    door.wallet("hsbk-dt", fund=1_000_000)
    door.wallet("cbuae-dt")
    connector = "192.0.2.10"
    signed = [
        _post(door, door.pacs009(Leg(uetr(), 100, e2e=f"E2E-{i}", pvp_id=f"PVP-{i}")), connector)
        for i in range(10)
    ]
    assert [r.status_code for r in signed] == [202] * 10  # beyond the door's burst of 2


def test_refused_posts_use_up_their_address_then_429(door: InProcessPvP) -> None:
    junk = b"<not-iso20022/>"
    forged = door.pacs009(Leg(uetr(), 100)).replace(b"KZT", b"KZT ", 1)  # breaks the signature
    attacker = "203.0.113.66"
    first, second = _post(door, junk, attacker), _post(door, forged, attacker)
    assert (first.status_code, second.status_code) == (400, 400)
    limited = _post(door, junk, attacker)
    _refused(limited)
    # The refusals did not reach the store, and another address is not affected.
    assert _post(door, junk, "203.0.113.67").status_code == 400
    # Even a good message from the exhausted address waits for its Retry-After.
    _refused(_post(door, door.pacs009(Leg(uetr(), 100)), attacker))


def test_a_wrong_media_type_at_the_door_counts_as_refused(door: InProcessPvP) -> None:
    statuses = [
        door.anonymous.post(
            "/iso20022/messages",
            content=b"{}",
            headers={"content-type": "application/json", FROM: "203.0.113.70"},
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [415, 415, 429]
