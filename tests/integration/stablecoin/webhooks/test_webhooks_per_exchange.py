"""Two exchanges minting and redeeming at once, on a real chain (anvil), with the gateway's own
scheduled jobs delivering: each receiver gets exactly its own exchange's events, every one
signed under its own endpoint's secret; a rotated secret signs from then on, the old one
stops. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from gateway.api.app import create_app
from gateway.jobs import Jobs
from gateway.messaging.serving import free_port, serve_in_thread
from gateway.stablecoin.devchain import DevChain
from gateway.stablecoin.runtime import Stablecoin
from tests.integration.stablecoin.webhooks.support import (
    HookGateway,
    deliveries,
    settings_for,
    signed_by,
    unsent_deliveries,
)
from tests.support.stablecoin import (
    EXCHANGE,
    EXCHANGE_WALLET,
    OTHER_EXCHANGE,
    OTHER_WALLET,
    Deployment,
    Receiver,
    deploy,
    setup_exchanges,
    webhook_receiver,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chain

WALLET = {EXCHANGE: EXCHANGE_WALLET, OTHER_EXCHANGE: OTHER_WALLET}


@contextmanager
def serving(engine: Engine, dep: Deployment, tmp: Path) -> Iterator[HookGateway]:
    """``dt-gateway serve`` in this process: the app and its scheduled jobs."""
    port = free_port()
    settings = settings_for(engine, tmp, port, stablecoin=dep.settings_values())
    sc = Stablecoin.from_settings(settings)
    tokens = setup_exchanges(engine)
    jobs = Jobs(settings, engine, stablecoin=sc)
    app = create_app(
        settings, engine, on_startup=[jobs.start], on_shutdown=[jobs.stop], stablecoin=sc
    )
    with serve_in_thread(app, port=port) as url:
        gw = HookGateway(url, port, engine, settings, tokens)
        try:
            yield gw
        finally:
            for c in gw.clients.values():
                c.close()


def _mint(gw: HookGateway, who: str, key: str, amount: int, to: str) -> dict[str, Any]:
    r = gw.client(who).post(
        "/v1/stablecoin/mints",
        json={"amount": amount, "source_wallet_id": WALLET[who], "evm_address": to},
        headers={"Idempotency-Key": key},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _all_delivered(gw: HookGateway, receivers: dict[str, Receiver]) -> bool:
    """Every event each exchange lists has reached its receiver, and nothing is queued."""
    if unsent_deliveries(gw.engine):
        return False
    for who, receiver in receivers.items():
        got = {d.event_id_header for d in deliveries(receiver)}
        if not {e["id"] for e in gw.events(who)} <= got:
            return False
    return True


def test_two_exchanges_minting_and_redeeming_at_once_each_receive_exactly_their_own_events(
    engine: Engine, anvil_chain: DevChain, tmp_path: Path
) -> None:
    dep = deploy(anvil_chain)
    holder = {EXCHANGE: dep.holders[0], OTHER_EXCHANGE: dep.holders[1]}
    with (
        webhook_receiver() as mine,
        webhook_receiver() as theirs,
        serving(engine, dep, tmp_path) as gw,
    ):
        receivers = {EXCHANGE: mine, OTHER_EXCHANGE: theirs}
        secret = {who: gw.register(who, r.url)["secret"] for who, r in receivers.items()}

        def trade(who: str) -> list[str]:
            ids = [
                _mint(gw, who, f"{who}-{i}", (i + 1) * 10_00, holder[who].address)["id"]
                for i in range(3)
            ]
            dep.client.redeem(holder[who], 5_00, WALLET[who])
            return ids

        with ThreadPoolExecutor(2) as pool:
            minted = dict(zip(receivers, pool.map(trade, receivers), strict=True))

        def redeemed() -> bool:
            return all(gw.events(who, type="redemption.paid") for who in receivers)

        wait_for(redeemed, "the watcher did not pay both redemptions", timeout=30, interval=0.05)
        wait_for(
            lambda: _all_delivered(gw, receivers),
            "not every event was delivered",
            timeout=30,
            interval=0.05,
        )

        for who, receiver in receivers.items():
            other = OTHER_EXCHANGE if who == EXCHANGE else EXCHANGE
            listed = gw.events(who)
            got = deliveries(receiver)
            assert {d.event_id_header for d in got} == {e["id"] for e in listed}
            assert {e["type"] for e in listed} >= {
                "mint.accepted",
                "mint.minted",
                "redemption.paid",
            }
            mint_ids = {e["data"]["mint_id"] for e in listed if e["type"].startswith("mint.")}
            assert mint_ids == set(minted[who])
            for d in got:
                assert d.event["id"] == d.event_id_header
                assert signed_by(secret[who], d) and not signed_by(secret[other], d)
                data = d.event["data"]
                assert WALLET[who] in (data.get("source_wallet_id"), data.get("dt_wallet_ref"))

        # Rotation: from the answer on, the new secret signs; the old one signs nothing more.
        rotated = gw.client(EXCHANGE).post(
            f"/v1/webhooks/endpoints/{_endpoint_id(gw, EXCHANGE)}/rotate-secret"
        )
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        before = {d.event_id_header for d in deliveries(mine)}
        late = _mint(gw, EXCHANGE, "after-rotation", 1_00, holder[EXCHANGE].address)
        wait_for(
            lambda: _all_delivered(gw, receivers),
            "the events after rotation did not arrive",
            timeout=30,
            interval=0.05,
        )
        after = [d for d in deliveries(mine) if d.event_id_header not in before]
        assert {d.event["data"]["mint_id"] for d in after} == {late["id"]}
        assert {d.event["type"] for d in after} >= {"mint.accepted", "mint.minted"}
        for d in after:
            assert signed_by(new_secret, d)
            assert not signed_by(secret[EXCHANGE], d) and not signed_by(secret[OTHER_EXCHANGE], d)
        assert late["id"] not in {d.event["data"].get("mint_id") for d in deliveries(theirs)}


def _endpoint_id(gw: HookGateway, who: str) -> str:
    [endpoint] = gw.client(who).get("/v1/webhooks/endpoints").json()["endpoints"]
    endpoint_id: str = endpoint["id"]
    return endpoint_id
