"""Prometheus metrics, scraped over real HTTP from the metrics port, on SQLite and PostgreSQL:
HTTP requests by route and status with their latency, the request id, the backlogs and
states read from the database at scrape time, SQLite's group commit, and (on anvil) the
stablecoin's and the collateral log's figures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from gateway import auth, leases, telemetry
from gateway.api.app import create_app
from gateway.collateral import service as collateral
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config import Settings, load_settings
from gateway.db import utcnow
from gateway.messaging.outbox import OutboxRepository
from gateway.messaging.serving import serve_in_thread
from gateway.stablecoin import service as stablecoin
from gateway.stablecoin import watcher
from gateway.stablecoin.devchain import DevChain
from gateway.stablecoin.runtime import Stablecoin
from tests.support.stablecoin import (
    EXCHANGE,
    EXCHANGE_WALLET,
    deploy,
    make_settings,
    setup_exchanges,
    uow_factory,
)
from tests.support.waiting import wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@contextmanager
def served(settings: Settings, engine: Engine, **kwargs: Any) -> Iterator[tuple[str, int]]:
    metrics = settings.metrics.model_copy(update={"port": 0, "database_refresh_seconds": 0})
    settings = settings.model_copy(update={"metrics": metrics})
    app = create_app(settings, engine, **kwargs)
    with serve_in_thread(app) as url:
        port = app.state.metrics.port
        assert port is not None
        yield url, port


def test_http_requests_by_route_and_status_with_latency(engine: Engine) -> None:
    token = auth.create_key(engine, "operator").token
    settings = load_settings(environ={}, database={"url": str(engine.url)})
    headers = {"Authorization": f"Bearer {token}"}
    with served(settings, engine) as (url, port), httpx.Client(base_url=url) as client:
        for _ in range(3):
            assert client.get("/v1/wallets/nope", headers=headers).status_code == 404
        body = {"id": "w1", "kind": "participant", "owner": "o"}
        assert client.post("/v1/wallets", json=body, headers=headers).status_code == 201
        assert client.get("/no/such/route").status_code == 404
        assert client.get("/v1/wallets/nope").status_code == 401
        samples = scrape(port)
    wallet = "/v1/wallets/{wallet_id}"  # the template, as the OpenAPI document names it
    assert value(samples, "dtg_http_requests_total", method="GET", route=wallet, status="404") == 3
    assert value(samples, "dtg_http_requests_total", method="GET", route=wallet, status="401") == 1
    created = value(
        samples, "dtg_http_requests_total", method="POST", route="/v1/wallets", status="201"
    )
    assert created == 1
    unmatched = value(
        samples, "dtg_http_requests_total", method="GET", route="(unmatched)", status="404"
    )
    assert unmatched == 1
    count = value(samples, "dtg_http_request_seconds_count", method="GET", route=wallet)
    inf = value(samples, "dtg_http_request_seconds_bucket", method="GET", route=wallet, le="+Inf")
    assert count == inf == 4
    assert (value(samples, "dtg_http_request_seconds_sum", method="GET", route=wallet) or 0) > 0
    assert value(samples, "dtg_metrics_database_up") == 1
    assert value(samples, "process_cpu_seconds_total") is not None


def test_every_answer_carries_a_request_id(engine: Engine) -> None:
    settings = load_settings(environ={}, database={"url": str(engine.url)})
    with served(settings, engine) as (url, _), httpx.Client(base_url=url) as client:
        given = client.get("/health", headers={"X-Request-Id": "lb-7f3a.1"})
        made = [client.get("/health").headers["x-request-id"] for _ in range(2)]
        refused = client.get("/health", headers={"X-Request-Id": "bad id\twith spaces"})
        unknown = client.get("/nowhere")
    assert given.headers["x-request-id"] == "lb-7f3a.1"
    assert made[0] != made[1] and all(made)
    assert refused.headers["x-request-id"] not in ("bad id\twith spaces", "")
    assert unknown.status_code == 404 and unknown.headers["x-request-id"]


def test_backlogs_and_states_are_read_from_the_database(engine: Engine) -> None:
    settings = load_settings(environ={}, database={"url": str(engine.url)})
    now = utcnow()
    with engine.begin() as conn:
        box = OutboxRepository(conn)
        for topic in ("pvp.iso", "pvp.iso", "webhook"):
            box.add(topic, b"{}", now=now - timedelta(seconds=30))
        conn.execute(
            sa.text(
                "INSERT INTO pvp_message (direction, sha256, raw, created_at)"
                " VALUES ('in', :sha, :raw, :at)"
            ),
            {"sha": "0" * 64, "raw": b"<x/>", "at": now},
        )
        message_id = conn.execute(sa.text("SELECT max(id) FROM pvp_message")).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO pvp_inbox (message_id, received_at, available_at, attempts)"
                " VALUES (:m, :at, :at, 0)"
            ),
            {"m": message_id, "at": now - timedelta(seconds=5)},
        )
        for i, alert in enumerate((None, None, now)):
            conn.execute(
                sa.text(
                    "INSERT INTO pvp_leg (uetr, state, status_requests, alert_at, created_at,"
                    " updated_at) VALUES (:u, 'locked', 0, :alert, :at, :at)"
                ),
                {"u": f"00000000-0000-4000-8000-00000000000{i}", "alert": alert, "at": now},
            )
    assert leases.acquire(engine, "outbox.dispatch", "replica-a", timedelta(minutes=5))
    with served(settings, engine) as (_, port):
        samples = scrape(port)
    assert value(samples, "dtg_outbox_backlog", topic="pvp.iso") == 2
    assert value(samples, "dtg_outbox_backlog", topic="webhook") == 1
    assert (value(samples, "dtg_outbox_oldest_seconds", topic="webhook") or 0) >= 30
    assert value(samples, "dtg_pvp_inbox_backlog") == 1
    assert (value(samples, "dtg_pvp_inbox_oldest_seconds") or 0) >= 5
    assert value(samples, "dtg_pvp_legs_locked") == 3
    assert value(samples, "dtg_pvp_legs_awaiting_operator") == 1
    assert value(samples, "dtg_job_lease", job="outbox.dispatch", holder="replica-a") == 1


def test_sqlite_group_commit_is_measured(sqlite_url: str) -> None:
    from tests.support.databases import migrated_engine

    engine = migrated_engine(sqlite_url)
    before = _fsyncs()
    auth.create_key(engine, "operator")  # a write transaction: its commit waits for an fsync
    assert _fsyncs() > before
    engine.dispose()


def _fsyncs() -> float:
    for metric in telemetry.REGISTRY.collect():
        for s in metric.samples:
            if s.name == "dtg_sqlite_fsync_seconds_count":
                return s.value
    raise AssertionError("no fsync histogram")


# ------------------------------------------------------------------ on anvil


@pytest.fixture
def chain(anvil: DevChain) -> DevChain:
    """The session's anvil (tests/conftest.py); the test deploys its own contract on it."""
    return anvil


@pytest.mark.chain
def test_mints_reconciliation_and_the_collateral_log(
    engine: Engine, chain: DevChain, tmp_path: Any
) -> None:
    dep = deploy(chain)
    settings = make_settings(engine, dep).model_copy(update={"data_dir": tmp_path})
    sc = Stablecoin.from_settings(settings)
    tokens = setup_exchanges(engine)
    clog = sc.collateral
    assert clog is not None

    def uow(*, readonly: bool = False) -> CollateralUnitOfWork:
        return CollateralUnitOfWork(engine, readonly=readonly)

    with served(settings, engine, stablecoin=sc) as (url, port):
        client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {tokens[EXCHANGE]}"}, timeout=60
        )
        r = client.post(
            "/v1/stablecoin/mints",
            json={
                "amount": 1_000_00,
                "source_wallet_id": EXCHANGE_WALLET,
                "evm_address": dep.holders[0].address,
            },
            headers={"Idempotency-Key": "metrics-1"},
        )
        assert r.status_code in (200, 201), r.text
        mint_id = r.json()["id"]

        def minted() -> bool:
            if client.get(f"/v1/stablecoin/mints/{mint_id}").json()["state"] == "minted":
                return True
            stablecoin.drive_mint(uow_factory(engine), sc, mint_id)
            return False

        wait_for(minted, "the mint completed", timeout=60, interval=0)
        watcher.poll(uow_factory(engine), sc)  # the watcher's cursor, which reconciling needs
        assert stablecoin.reconcile(uow_factory(engine), sc) is not None
        collateral.integrate(uow, clog)
        samples = scrape(port)
        client.close()
    assert value(samples, "dtg_stablecoin_mints", state="minted") == 1
    assert value(samples, "dtg_reconciliation_gap") == 0
    assert value(samples, "dtg_reconciliation_ok") == 1
    assert value(samples, "dtg_stablecoin_total_supply") == 1_000_00
    assert (value(samples, "dtg_collateral_log_size") or 0) >= 2  # the deposit and the mint
    assert value(samples, "dtg_collateral_pending") == 0
    assert value(samples, "dtg_collateral_checkpoint_size") == value(
        samples, "dtg_collateral_log_size"
    )
    assert 0 <= (value(samples, "dtg_collateral_checkpoint_age_seconds") or -1) < 60
