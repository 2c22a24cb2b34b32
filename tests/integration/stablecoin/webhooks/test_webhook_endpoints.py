"""Webhook endpoints per exchange, over real HTTP, on SQLite and PostgreSQL: registration and
its refusals, each exchange's own endpoints and events only, rotation, test events,
redelivery, deliveries that outlive a restart, and the adoption of the old single URL."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from gateway.errors import GatewayError
from gateway.messaging.outbox import outbox_t
from gateway.stablecoin import endpoints_service, webhooks
from gateway.stablecoin.endpoints_store import WebhookUnitOfWork
from tests.integration.stablecoin.webhooks.support import (
    HookGateway,
    deliveries,
    hook_gateway,
    publish,
    pump,
    settings_for,
    signed_by,
    unsent_deliveries,
)
from tests.support.stablecoin import (
    EXCHANGE,
    OTHER_EXCHANGE,
    webhook_receiver,
)

PROBLEM = "application/problem+json"


def _refused(gw: HookGateway, url: str, who: str = EXCHANGE) -> tuple[int, str]:
    r = gw.client(who).post("/v1/webhooks/endpoints", json={"url": url})
    assert r.headers["content-type"].startswith(PROBLEM), r.text
    return r.status_code, r.json()["code"]


# ------------------------------------------------------------------ refusals


REFUSED = [
    ("ftp://hooks.example/dt", 400, "WEBHOOK_URL_SCHEME"),
    ("file:///etc/passwd", 400, "WEBHOOK_URL_SCHEME"),
    ("javascript:alert(1)", 400, "WEBHOOK_URL_SCHEME"),
    ("hooks.example/dt", 400, "WEBHOOK_URL_SCHEME"),
    ("http:///no-host", 400, "WEBHOOK_URL_INVALID"),
    ("http://user:password@127.0.0.1:9/dt", 400, "WEBHOOK_URL_INVALID"),
    ("http://127.0.0.1:9/dt#fragment", 400, "WEBHOOK_URL_INVALID"),
    ("http://127.0.0.1:99999/dt", 400, "WEBHOOK_URL_INVALID"),
    ("http://127.0.0.1:9/" + "a" * 2100, 400, "WEBHOOK_URL_TOO_LONG"),
    ("http://169.254.169.254/latest/meta-data/", 422, "WEBHOOK_ADDRESS_REFUSED"),
    ("http://169.254.1.1:8080/dt", 422, "WEBHOOK_ADDRESS_REFUSED"),
    ("http://[fe80::1]/dt", 422, "WEBHOOK_ADDRESS_REFUSED"),
    ("http://[::ffff:169.254.169.254]/dt", 422, "WEBHOOK_ADDRESS_REFUSED"),
    ("http://2852039166/dt", 422, "WEBHOOK_ADDRESS_REFUSED"),  # 169.254.169.254 in decimal
    ("http://[fd00:ec2::254]/dt", 422, "WEBHOOK_ADDRESS_REFUSED"),
    ("http://10.1.2.3/dt", 422, "WEBHOOK_ADDRESS_REFUSED"),
    ("http://192.168.0.10/dt", 422, "WEBHOOK_ADDRESS_REFUSED"),
    ("http://0.0.0.0:9/dt", 422, "WEBHOOK_ADDRESS_REFUSED"),
    ("http://no-such-host.invalid/dt", 422, "WEBHOOK_URL_UNRESOLVABLE"),
]


def test_bad_webhook_urls_are_refused_with_their_own_code(engine: Engine, tmp_path: Path) -> None:
    with hook_gateway(engine, tmp_path) as gw:
        for url, status, code in REFUSED:
            assert _refused(gw, url) == (status, code), url
        assert gw.client().get("/v1/webhooks/endpoints").json()["endpoints"] == []


def test_link_local_and_metadata_are_refused_even_when_no_network_is(
    engine: Engine, tmp_path: Path
) -> None:
    with hook_gateway(engine, tmp_path, webhooks={"refused_networks": []}) as gw:
        for url in (
            "http://169.254.169.254/",
            "http://[fe80::a:b]/",
            "http://100.100.100.200/",
        ):
            assert _refused(gw, url) == (422, "WEBHOOK_ADDRESS_REFUSED")
        assert gw.register(EXCHANGE, "http://10.1.2.3/dt")["url"] == "http://10.1.2.3/dt"


def test_the_gateway_itself_is_refused(engine: Engine, tmp_path: Path) -> None:
    with hook_gateway(engine, tmp_path) as gw:
        for url in (
            f"{gw.url}/v1/wallets",
            f"http://localhost:{gw.port}/hooks",
            f"http://127.0.0.1:{gw.port}/hooks",
            f"http://[::1]:{gw.port}/hooks",
        ):
            assert _refused(gw, url) == (422, "WEBHOOK_URL_SELF"), url


def test_loopback_is_refused_unless_the_operator_allows_it(engine: Engine, tmp_path: Path) -> None:
    with hook_gateway(engine, tmp_path, webhooks={"allow_loopback": False}) as gw:
        for url in ("http://127.0.0.1:9/dt", "http://localhost:9/dt", "http://[::1]:9/dt"):
            assert _refused(gw, url) == (422, "WEBHOOK_ADDRESS_REFUSED"), url


def test_an_exchange_has_at_most_the_configured_number_of_endpoints(
    engine: Engine, tmp_path: Path
) -> None:
    with hook_gateway(engine, tmp_path, webhooks={"max_endpoints_per_exchange": 2}) as gw:
        first = gw.register(EXCHANGE, "http://127.0.0.1:9/a")
        gw.register(EXCHANGE, "http://127.0.0.1:9/b")
        assert _refused(gw, "http://127.0.0.1:9/c") == (409, "WEBHOOK_ENDPOINT_LIMIT")
        # The limit is per exchange, and a removed endpoint frees its place.
        gw.register(OTHER_EXCHANGE, "http://127.0.0.1:9/c")
        assert gw.client().delete(f"/v1/webhooks/endpoints/{first['id']}").status_code == 204
        gw.register(EXCHANGE, "http://127.0.0.1:9/c")
        assert len(gw.client().get("/v1/webhooks/endpoints").json()["endpoints"]) == 2


def test_the_same_url_twice_is_refused(engine: Engine, tmp_path: Path) -> None:
    with hook_gateway(engine, tmp_path) as gw:
        first = gw.register(EXCHANGE, "http://127.0.0.1:9/a")
        r = gw.client().post("/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/a"})
        assert (r.status_code, r.json()["code"]) == (409, "WEBHOOK_ENDPOINT_EXISTS")
        assert r.json()["endpoint_id"] == first["id"]


def test_only_exchange_keys_that_name_an_exchange_reach_webhooks(
    engine: Engine, tmp_path: Path
) -> None:
    with hook_gateway(engine, tmp_path) as gw:
        for who, status, code in (
            ("anonymous", 401, "UNAUTHORIZED"),
            ("operator", 403, "FORBIDDEN"),
            ("no-subject", 403, "EXCHANGE_NOT_NAMED"),
        ):
            for method, path in (
                ("POST", "/v1/webhooks/endpoints"),
                ("GET", "/v1/webhooks/endpoints"),
                ("GET", "/v1/events"),
            ):
                body = {"url": "http://127.0.0.1:9/a"} if method == "POST" else None
                r = gw.client(who).request(method, path, json=body)
                assert (r.status_code, r.json()["code"]) == (status, code), (who, path)


# ------------------------------------------------------------------ each exchange its own


def test_an_exchange_never_sees_nor_touches_another_exchanges_endpoints_or_events(
    engine: Engine, tmp_path: Path
) -> None:
    with hook_gateway(engine, tmp_path) as gw:
        theirs = gw.register(OTHER_EXCHANGE, "http://127.0.0.1:9/theirs")
        their_event = publish(engine, OTHER_EXCHANGE, "mint.accepted", {"mint_id": "m2"})
        mine = publish(engine, EXCHANGE, "mint.accepted", {"mint_id": "m1"})

        me = gw.client(EXCHANGE)
        assert me.get("/v1/webhooks/endpoints").json()["endpoints"] == []
        assert [e["id"] for e in gw.events(EXCHANGE)] == [mine]
        endpoint = f"/v1/webhooks/endpoints/{theirs['id']}"
        for method, path in (
            ("GET", endpoint),
            ("POST", f"{endpoint}/rotate-secret"),
            ("POST", f"{endpoint}/test"),
            ("DELETE", endpoint),
        ):
            r = me.request(method, path)
            assert (r.status_code, r.json()["code"]) == (404, "WEBHOOK_ENDPOINT_NOT_FOUND")
        for method, path in (
            ("GET", f"/v1/events/{their_event}"),
            ("POST", f"/v1/events/{their_event}/redeliver"),
        ):
            r = me.request(method, path)
            assert (r.status_code, r.json()["code"]) == (404, "EVENT_NOT_FOUND")
        r = me.post(f"/v1/events/{mine}/redeliver", params={"endpoint_id": theirs["id"]})
        assert (r.status_code, r.json()["code"]) == (404, "WEBHOOK_ENDPOINT_NOT_FOUND")

        # Theirs is untouched: same secret, still listed, and nothing of ours was queued to it.
        listed = gw.client(OTHER_EXCHANGE).get("/v1/webhooks/endpoints").json()["endpoints"]
        assert [(e["id"], e["secret_rotated_at"]) for e in listed] == [(theirs["id"], None)]
        with engine.connect() as conn:
            queued = [json.loads(h) for (h,) in conn.execute(sa.select(outbox_t.c.headers))]
        assert queued == [{"event_id": their_event, "endpoint_id": theirs["id"]}]


def test_each_endpoint_receives_only_its_exchanges_events_signed_with_its_own_secret(
    engine: Engine, tmp_path: Path
) -> None:
    with (
        webhook_receiver() as mine,
        webhook_receiver() as theirs,
        hook_gateway(engine, tmp_path) as gw,
    ):
        my_secret = gw.register(EXCHANGE, mine.url)["secret"]
        their_secret = gw.register(OTHER_EXCHANGE, theirs.url)["secret"]
        assert my_secret != their_secret
        mine_ids = [publish(engine, EXCHANGE, "mint.minted", {"n": i}) for i in range(3)]
        their_ids = [publish(engine, OTHER_EXCHANGE, "mint.minted", {"n": i}) for i in range(2)]
        pump(gw.dispatcher(), lambda: unsent_deliveries(engine) == 0)

        assert sorted(d.event_id_header for d in deliveries(mine)) == sorted(mine_ids)
        assert sorted(d.event_id_header for d in deliveries(theirs)) == sorted(their_ids)
        for d in deliveries(mine):
            assert d.event["id"] == d.event_id_header
            assert signed_by(my_secret, d) and not signed_by(their_secret, d)
        for d in deliveries(theirs):
            assert signed_by(their_secret, d) and not signed_by(my_secret, d)


def test_events_are_listed_oldest_first_paged_and_filtered_by_type_and_time(
    engine: Engine, tmp_path: Path
) -> None:
    with hook_gateway(engine, tmp_path) as gw:
        ids = [
            publish(engine, EXCHANGE, t, {"n": i})
            for i, t in enumerate(["mint.accepted", "mint.minted", "redemption.paid"] * 2)
        ]
        publish(engine, OTHER_EXCHANGE, "mint.accepted", {})
        everything = gw.events(EXCHANGE)
        assert [e["id"] for e in everything] == ids
        assert everything[0]["data"] == {"n": 0} and everything[0]["type"] == "mint.accepted"

        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
            page = gw.client().get("/v1/events", params=params).json()
            seen += [e["id"] for e in page["events"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids

        minted = gw.events(EXCHANGE, type="mint.minted")
        assert [e["id"] for e in minted] == [ids[1], ids[4]]
        middle = everything[2]["created_at"]
        after = gw.events(EXCHANGE, created_after=middle)
        before = gw.events(EXCHANGE, created_before=middle)
        assert [e["id"] for e in before + after] == ids
        future = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
        assert gw.events(EXCHANGE, created_after=future) == []
        r = gw.client().get("/v1/events", params={"created_after": "yesterday"})
        assert (r.status_code, r.json()["code"]) == (400, "INVALID_INPUT")


# ------------------------------------------------------------------ rotation, test, replay


def test_a_rotated_secret_signs_at_once_and_the_old_one_stops(
    engine: Engine, tmp_path: Path
) -> None:
    with webhook_receiver() as receiver, hook_gateway(engine, tmp_path) as gw:
        created = gw.register(EXCHANGE, receiver.url)
        old = created["secret"]
        dispatcher = gw.dispatcher()
        before = publish(engine, EXCHANGE, "mint.minted", {"n": 1})
        pump(dispatcher, lambda: len(receiver.deliveries) == 1)

        queued = publish(engine, EXCHANGE, "mint.minted", {"n": 2})  # queued, not sent yet
        r = gw.client().post(f"/v1/webhooks/endpoints/{created['id']}/rotate-secret")
        assert r.status_code == 200, r.text
        new = r.json()["secret"]
        assert new != old and r.json()["secret_rotated_at"] is not None
        replayed = gw.client().post(f"/v1/events/{before}/redeliver")
        assert replayed.status_code == 202
        assert replayed.json()["endpoint_ids"] == [created["id"]]
        pump(dispatcher, lambda: len(receiver.deliveries) == 3)

        first, *after = deliveries(receiver)
        assert first.event_id_header == before and signed_by(old, first)
        assert sorted(d.event_id_header for d in after) == sorted([queued, before])
        for d in after:
            assert signed_by(new, d) and not signed_by(old, d)
        # The replay is the same event: same id, same bytes.
        assert next(d for d in after if d.event_id_header == before).body == first.body


def test_a_test_event_goes_to_that_endpoint_only_and_is_listed(
    engine: Engine, tmp_path: Path
) -> None:
    with (
        webhook_receiver() as one,
        webhook_receiver() as two,
        hook_gateway(engine, tmp_path) as gw,
    ):
        target = gw.register(EXCHANGE, one.url)
        gw.register(EXCHANGE, two.url)
        r = gw.client().post(f"/v1/webhooks/endpoints/{target['id']}/test")
        assert r.status_code == 202, r.text
        event = r.json()
        assert event["type"] == "webhook.test"
        assert event["data"]["endpoint_id"] == target["id"]
        pump(gw.dispatcher(), lambda: unsent_deliveries(engine) == 0)
        [d] = deliveries(one)
        assert d.event_id_header == event["id"] and signed_by(target["secret"], d)
        assert deliveries(two) == []
        assert [e["id"] for e in gw.events(EXCHANGE, type="webhook.test")] == [event["id"]]


def test_a_removed_endpoint_gets_nothing_more(engine: Engine, tmp_path: Path) -> None:
    with (
        webhook_receiver() as gone,
        webhook_receiver() as kept,
        hook_gateway(engine, tmp_path) as gw,
    ):
        removed = gw.register(EXCHANGE, gone.url)
        gw.register(EXCHANGE, kept.url)
        event = publish(engine, EXCHANGE, "mint.minted", {})
        assert gw.client().delete(f"/v1/webhooks/endpoints/{removed['id']}").status_code == 204
        pump(gw.dispatcher(), lambda: unsent_deliveries(engine) == 0)
        assert [d.event_id_header for d in deliveries(kept)] == [event]
        assert deliveries(gone) == []
        r = gw.client().get(f"/v1/webhooks/endpoints/{removed['id']}")
        assert r.status_code == 404


def test_deliveries_are_retried_with_backoff_and_outlive_a_restart(
    engine: Engine, tmp_path: Path
) -> None:
    with webhook_receiver(fail_first=2) as receiver:
        with hook_gateway(engine, tmp_path) as gw:
            tokens = gw.tokens
            secret = gw.register(EXCHANGE, receiver.url)["secret"]
            event = publish(engine, EXCHANGE, "redemption.paid", {"amount": 5_00})

            def failed_once() -> bool:
                with engine.connect() as conn:
                    row = conn.execute(sa.select(outbox_t.c.attempts, outbox_t.c.sent_at)).one()
                return row.attempts >= 1 and row.sent_at is None

            pump(gw.dispatcher(), failed_once)
        # A new process: its own app and dispatcher, the same database.
        with hook_gateway(engine, tmp_path, tokens=tokens) as gw:
            dispatcher = gw.dispatcher()
            dispatcher.release_leases_at_start()
            pump(dispatcher, lambda: unsent_deliveries(engine) == 0)
        [d] = deliveries(receiver)
        assert d.event_id_header == event and signed_by(secret, d)
        with engine.connect() as conn:
            row = conn.execute(sa.select(outbox_t.c.attempts, outbox_t.c.last_error)).one()
        assert row.attempts == 3  # two refusals, each retried
        assert "answered 500" in row.last_error


def test_secrets_are_never_logged(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with webhook_receiver(fail_first=1) as receiver, hook_gateway(engine, tmp_path) as gw:
        created = gw.register(EXCHANGE, receiver.url)
        rotated = gw.client().post(f"/v1/webhooks/endpoints/{created['id']}/rotate-secret")
        publish(engine, EXCHANGE, "mint.minted", {})
        pump(gw.dispatcher(), lambda: unsent_deliveries(engine) == 0)
        listed = gw.client().get("/v1/webhooks/endpoints").text
        one = gw.client().get(f"/v1/webhooks/endpoints/{created['id']}").text
    secrets = [created["secret"], rotated.json()["secret"]]
    assert caplog.records
    for secret in secrets:
        assert secret not in caplog.text
        assert secret not in listed and secret not in one
    assert "secret" not in json.loads(listed)["endpoints"][0]


# ------------------------------------------------------------------ the old single URL


def test_the_configured_url_becomes_an_endpoint_of_the_named_exchange_only(
    engine: Engine, tmp_path: Path
) -> None:
    with webhook_receiver() as receiver:
        legacy = {
            "webhook_url": receiver.url,
            "webhook_exchange": EXCHANGE,
            "webhook_secret": "whsec-configured",
        }
        with hook_gateway(engine, tmp_path, stablecoin=legacy) as gw:
            # A delivery an earlier version queued for the URL, naming no endpoint.
            with WebhookUnitOfWork(engine) as uow:
                uow.outbox.add(
                    webhooks.TOPIC, b'{"id":"old"}', destination=receiver.url, event_id="old"
                )
                uow.commit()
            adopted = endpoints_service.adopt_legacy_url(gw.uow(), gw.settings)
            assert adopted is not None and adopted.exchange == EXCHANGE
            again = endpoints_service.adopt_legacy_url(gw.uow(), gw.settings)
            assert again is not None and again.id == adopted.id
            [listed] = gw.client().get("/v1/webhooks/endpoints").json()["endpoints"]
            assert (listed["id"], listed["url"]) == (adopted.id, receiver.url)
            assert gw.client(OTHER_EXCHANGE).get("/v1/webhooks/endpoints").json() == {
                "endpoints": []
            }

            mine = publish(engine, EXCHANGE, "mint.minted", {})
            publish(engine, OTHER_EXCHANGE, "mint.minted", {})
            pump(gw.dispatcher(), lambda: unsent_deliveries(engine) == 0)
            got = deliveries(receiver)
            assert sorted(d.event_id_header for d in got) == sorted(["old", mine])
            assert all(signed_by("whsec-configured", d) for d in got)

            # Rotated through the API, it stays rotated across restarts (re-adoptions).
            rotated = gw.client().post(f"/v1/webhooks/endpoints/{adopted.id}/rotate-secret")
            endpoints_service.adopt_legacy_url(gw.uow(), gw.settings)
            after = publish(engine, EXCHANGE, "mint.minted", {"n": 2})
            pump(gw.dispatcher(), lambda: unsent_deliveries(engine) == 0)
            [last] = [d for d in deliveries(receiver) if d.event_id_header == after]
            assert signed_by(rotated.json()["secret"], last)
            assert not signed_by("whsec-configured", last)


def test_a_configured_url_without_its_exchange_stops_the_start(
    engine: Engine, tmp_path: Path
) -> None:
    settings = settings_for(
        engine, tmp_path, 8080, stablecoin={"webhook_url": "http://127.0.0.1:9/hooks"}
    )
    uow = lambda **kw: WebhookUnitOfWork(engine, **kw)  # noqa: E731
    with pytest.raises(endpoints_service.WebhookUrlUnassigned) as refused:
        endpoints_service.adopt_legacy_url(uow, settings)
    assert refused.value.code == "WEBHOOK_URL_UNASSIGNED"
    # A URL the policy refuses is refused here too, whoever configured it.
    metadata = settings.model_copy(
        update={
            "stablecoin": settings.stablecoin.model_copy(
                update={
                    "webhook_url": "http://169.254.169.254/",
                    "webhook_exchange": EXCHANGE,
                    "webhook_secret": SecretStr("s"),
                }
            )
        }
    )
    with pytest.raises(GatewayError) as bad:
        endpoints_service.adopt_legacy_url(uow, metadata)
    assert bad.value.code == "WEBHOOK_ADDRESS_REFUSED"
    with WebhookUnitOfWork(engine, readonly=True) as read:
        assert read.webhooks.endpoints(EXCHANGE) == []


# ------------------------------------------------------------------ the OpenAPI document


def test_the_webhook_routes_are_in_the_openapi_document_with_their_schemas(
    engine: Engine, tmp_path: Path
) -> None:
    with hook_gateway(engine, tmp_path) as gw:
        doc = gw.client("anonymous").get("/schema/openapi.json").json()
    paths = doc["paths"]
    expected = {
        "/v1/webhooks/endpoints": {"get", "post"},
        "/v1/webhooks/endpoints/{endpoint_id}": {"get", "delete"},
        "/v1/webhooks/endpoints/{endpoint_id}/rotate-secret": {"post"},
        "/v1/webhooks/endpoints/{endpoint_id}/test": {"post"},
        "/v1/events": {"get"},
        "/v1/events/{event_id}": {"get"},
        "/v1/events/{event_id}/redeliver": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path

    def ref(node: dict[str, Any]) -> str:
        return json.dumps(node)

    create = paths["/v1/webhooks/endpoints"]["post"]
    assert "EndpointCreate" in ref(create["requestBody"])
    assert "EndpointWithSecret" in ref(create["responses"]["201"])
    assert "EndpointList" in ref(paths["/v1/webhooks/endpoints"]["get"]["responses"]["200"])
    rotate = paths["/v1/webhooks/endpoints/{endpoint_id}/rotate-secret"]["post"]
    assert "EndpointWithSecret" in ref(rotate["responses"]["200"])
    assert "EventOut" in ref(
        paths["/v1/webhooks/endpoints/{endpoint_id}/test"]["post"]["responses"]["202"]
    )
    listing = paths["/v1/events"]["get"]
    assert "EventPage" in ref(listing["responses"]["200"])
    assert {"type", "created_after", "created_before", "cursor", "limit"} <= {
        p["name"] for p in listing["parameters"]
    }
    redeliver = paths["/v1/events/{event_id}/redeliver"]["post"]
    assert "RedeliveryOut" in ref(redeliver["responses"]["202"])
    assert "endpoint_id" in {p["name"] for p in redeliver["parameters"]}
    schemas = doc["components"]["schemas"]
    assert "secret" in schemas["EndpointWithSecret"]["properties"]
    assert "secret" not in schemas["EndpointOut"]["properties"]
    assert {"id", "type", "created_at", "data"} <= set(schemas["EventOut"]["properties"])
