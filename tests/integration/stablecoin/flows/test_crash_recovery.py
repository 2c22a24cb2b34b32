"""kill -9 at the worst moments, then restart: every mint and redemption completes exactly once,
on SQLite and on PostgreSQL.

The gateway runs as a real process (``dt-gateway serve``) configured through ``DT_GATEWAY_*``
variables; ``DT_GATEWAY_FAULTS__CRASH_POINTS`` makes it SIGKILL itself at a named step. The
restarted process (without the crash point) finishes the work from the database and the chain.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from gateway.stablecoin import watcher
from gateway.stablecoin.runtime import default_segregated_wallet_id
from tests.integration.stablecoin.flows.processes import gateway
from tests.support.stablecoin import (
    EXCHANGE,
    EXCHANGE_WALLET,
    FUNDED,
    Deployment,
    Receiver,
    balance,
    setup_exchanges,
    uow_factory,
    webhook_receiver,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.chain


class Gateway:
    def __init__(self, process: subprocess.Popen[bytes], url: str, token: str) -> None:
        self.process = process
        self.url = url
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


@contextmanager
def serve(
    engine: Engine, dep: Deployment, receiver: Receiver, token: str, tmp: Path, crash: list[str]
) -> Iterator[Gateway]:
    """``dt-gateway serve`` (``processes.gateway``) sending the exchange's webhooks to
    ``receiver``, with a client of the exchange's ``token``."""
    webhooks = {
        "DT_GATEWAY_STABLECOIN__WEBHOOK_URL": receiver.url,
        "DT_GATEWAY_STABLECOIN__WEBHOOK_EXCHANGE": EXCHANGE,
        "DT_GATEWAY_WEBHOOKS__ALLOW_LOOPBACK": "true",
    }
    with gateway(engine, dep, tmp, crash, webhooks) as (process, url):
        served = Gateway(process, url, token)
        try:
            yield served
        finally:
            served.client.close()


def _mint(gw: Gateway, key: str, amount: int, to: str) -> httpx.Response:
    return gw.client.post(
        "/v1/stablecoin/mints",
        json={"amount": amount, "source_wallet_id": EXCHANGE_WALLET, "evm_address": to},
        headers={"Idempotency-Key": key},
    )


def _killed(gw: Gateway) -> None:
    assert gw.process.wait(15) == -signal.SIGKILL


def _recorded_events(gw: Gateway) -> dict[str, set[str]]:
    """Event type -> the ids of the exchange's events, as the gateway recorded them."""
    page = gw.client.get("/v1/events?limit=500")
    assert page.status_code == 200, page.text
    by_type: dict[str, set[str]] = defaultdict(set)
    for event in page.json()["events"]:
        by_type[event["type"]].add(event["id"])
    return by_type


def _events_by_type(receiver: Receiver) -> dict[str, set[str]]:
    """Event type -> the distinct event ids delivered for it (duplicates share an id)."""
    by_type: dict[str, set[str]] = defaultdict(set)
    for headers, body in receiver.deliveries:
        event = json.loads(body)
        assert {k.lower(): v for k, v in headers.items()}["x-dt-event-id"] == event["id"]
        by_type[event["type"]].add(event["id"])
    return by_type


@pytest.fixture
def setup(engine: Engine) -> dict[str, str]:
    return setup_exchanges(engine)


@pytest.mark.parametrize("crash_point", ["mint.after_ledger", "mint.after_submit"])
def test_mint_killed_mid_flight_completes_exactly_once_after_restart(
    engine: Engine,
    dep: Deployment,
    setup: dict[str, str],
    tmp_path: Path,
    crash_point: str,
) -> None:
    holder = dep.holders[0].address
    segregated = default_segregated_wallet_id(dep.client.address)
    token = setup[EXCHANGE]
    with webhook_receiver() as receiver:
        with serve(engine, dep, receiver, token, tmp_path, [crash_point]) as gw:
            with pytest.raises(httpx.TransportError):
                _mint(gw, "crash-1", 123_00, holder)
            _killed(gw)
        # The DT moved with the mint row; whether the chain minted depends on the crash point.
        assert balance(engine, EXCHANGE_WALLET) == FUNDED - 123_00
        assert balance(engine, segregated) == 123_00
        on_chain_before = dep.client.balance_of(holder)
        assert on_chain_before == (123_00 if crash_point == "mint.after_submit" else 0)

        with serve(engine, dep, receiver, token, tmp_path, []) as gw:
            replay = _mint(gw, "crash-1", 123_00, holder)
            assert replay.status_code == 200, replay.text
            mint_id = replay.json()["id"]
            done = wait_for(
                lambda: (
                    (m := gw.client.get(f"/v1/stablecoin/mints/{mint_id}").json())["state"]
                    == "minted"
                    and m
                ),
                "the mint was not resumed",
                timeout=20,
                interval=0.05,
            )
            assert done["tx_hash"]
            wait_for(
                lambda: "mint.minted" in _events_by_type(receiver),
                "no minted webhook",
                timeout=15,
                interval=0.05,
            )
            recorded = _recorded_events(gw)

        assert dep.client.balance_of(holder) == 123_00
        assert dep.client.total_supply() == 123_00
        assert balance(engine, EXCHANGE_WALLET) == FUNDED - 123_00
        assert balance(engine, segregated) == 123_00
        assert {t: len(ids) for t, ids in recorded.items() if t.startswith("mint.")} == {
            "mint.accepted": 1,
            **({"mint.submitted": 1} if "mint.submitted" in recorded else {}),
            "mint.minted": 1,
        }
        # Deliveries repeat only recorded events (a delivery the killed process had claimed
        # waits out its lease on PostgreSQL, so it may still be on its way).
        delivered = _events_by_type(receiver)
        assert all(ids <= recorded[t] for t, ids in delivered.items())


def test_redemption_killed_before_its_dt_transfer_is_paid_exactly_once_after_restart(
    engine: Engine, dep: Deployment, setup: dict[str, str], tmp_path: Path
) -> None:
    holder = dep.holders[0]
    token = setup[EXCHANGE]
    with webhook_receiver() as receiver:
        with serve(engine, dep, receiver, token, tmp_path, ["redeem.after_event"]) as gw:
            minted = _mint(gw, "r-1", 300_00, holder.address)
            assert minted.status_code == 201 and minted.json()["state"] == "minted"
            dep.client.redeem(holder, 120_00, EXCHANGE_WALLET)
            _killed(gw)  # the watcher saw the Redeemed log and died before paying
        assert balance(engine, EXCHANGE_WALLET) == FUNDED - 300_00

        with serve(engine, dep, receiver, token, tmp_path, []) as gw:
            wait_for(
                lambda: gw.client.get("/v1/stablecoin/redemptions").json()["redemptions"],
                "the redemption was not paid after the restart",
                timeout=20,
                interval=0.05,
            )
            wait_for(
                lambda: "redemption.paid" in _events_by_type(receiver),
                "no webhook",
                timeout=15,
                interval=0.05,
            )
            # More watcher passes over the redemption's blocks and past them: still paid once.
            dep.chain.mine(3)
            past = dep.client.block_number()
            wait_for(
                lambda: _cursor_block(engine, dep) >= past,
                "the watcher made no more passes",
                timeout=15,
                interval=0.05,
            )
            page = gw.client.get("/v1/stablecoin/redemptions").json()["redemptions"]
            assert [(r["amount"], r["state"]) for r in page] == [(120_00, "paid")]

        assert balance(engine, EXCHANGE_WALLET) == FUNDED - 300_00 + 120_00
        assert dep.client.total_supply() == 180_00
        assert len(_events_by_type(receiver)["redemption.paid"]) == 1
        assert _cursor_block(engine, dep) >= page[0]["block_number"]


def _cursor_block(engine: Engine, dep: Deployment) -> int:
    """The last block the watcher finished, from its stored cursor (-1 before its first pass)."""
    cursor = watcher.load_cursor(uow_factory(engine), _runtime_stub(dep))
    return -1 if cursor is None else cursor.block_number


def _runtime_stub(dep: Deployment) -> Any:
    class Stub:
        contract = dep.client.address

    return Stub()
