"""``/health`` and ``/ready`` over real HTTP, on SQLite and PostgreSQL: what each checks, that
both are public and never rate limited, and that the OpenAPI document declares what they
really answer (a 503 from ``/ready`` is its own body, not a problem document)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.api.app import create_app
from gateway.collateral import service as collateral
from gateway.collateral.store import CollateralUnitOfWork
from gateway.config import DatabaseSettings, Settings, load_settings
from gateway.db import make_engine, upgrade, utcnow
from gateway.messaging.serving import free_port, serve_in_thread
from gateway.stablecoin.devchain import start_anvil
from gateway.stablecoin.runtime import Stablecoin
from tests.support.anvil import require_anvil
from tests.support.stablecoin import deploy, make_settings


def _settings(engine: Engine, **sections: Any) -> Settings:
    return load_settings(environ={}, database={"url": str(engine.url)}, **sections)


@contextmanager
def _gateway(settings: Settings, engine: Engine, **kwargs: Any) -> Iterator[httpx.Client]:
    app = create_app(settings, engine, **kwargs)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


@contextmanager
def _stub_connector(status: int) -> Iterator[str]:
    """A connector stand-in on 127.0.0.1 that answers every GET with ``status``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_ready_with_the_database_at_the_newest_schema(engine: Engine) -> None:
    with _gateway(_settings(engine), engine) as client:
        alive = client.get("/health")
        ready = client.get("/ready")
    assert alive.status_code == 200 and alive.json()["status"] == "ok"
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database"}  # no stablecoin, no pinned connector
    assert body["checks"]["database"]["ok"] is True


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def behind_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database whose schema stops at 0010."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'behind.db'}"
    else:
        url = request.getfixturevalue("pg_database_factory")()
    eng = make_engine(DatabaseSettings(url=url))
    upgrade(eng, "0010")
    yield eng
    eng.dispose()


def test_a_schema_behind_the_code_is_alive_but_not_ready(behind_engine: Engine) -> None:
    with _gateway(_settings(behind_engine), behind_engine) as client:
        assert client.get("/health").status_code == 200
        r = client.get("/ready")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/json")
    check = r.json()["checks"]["database"]
    assert check["ok"] is False
    assert "schema at 0010" in check["detail"]


def test_a_database_that_fails_to_answer_is_not_ready(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone.db'}"
    eng = make_engine(DatabaseSettings(url=url))
    upgrade(eng)
    settings = load_settings(environ={}, database={"url": url}, readiness={"cache_seconds": 0})
    with _gateway(settings, eng) as client:
        assert client.get("/ready").status_code == 200
        with eng.begin() as conn:  # the database loses its schema under the running app
            conn.exec_driver_sql("DROP TABLE alembic_version")
        r = client.get("/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["database"]["detail"].startswith("unreachable: OperationalError")
    eng.dispose()


def test_pvp_needs_the_connector_reachable(engine: Engine) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    pinned = {"connector_cert_pem": "-----BEGIN CERTIFICATE-----\n(pinned)"}
    settings = _settings(engine, iso20022=pinned, connector={"url": down})
    with _gateway(settings, engine) as client:
        r = client.get("/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["connector"]["ok"] is False
    assert r.json()["checks"]["database"]["ok"] is True
    with _stub_connector(200) as up:
        settings = _settings(engine, iso20022=pinned, connector={"url": up})
        with _gateway(settings, engine) as client:
            r = client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["connector"] == {"ok": True, "detail": f"{up}/health answered 200"}
    with _stub_connector(502) as failing:
        settings = _settings(engine, iso20022=pinned, connector={"url": failing})
        with _gateway(settings, engine) as client:
            assert client.get("/ready").status_code == 503


def test_probes_are_never_rate_limited(engine: Engine) -> None:
    limits = {"address_burst": 1, "address_rate_per_second": 0.001}
    with _gateway(_settings(engine, ratelimit=limits), engine) as client:
        statuses = {client.get(path).status_code for path in ["/health", "/ready"] * 20}
        schema = [client.get("/schema/openapi.json").status_code for _ in range(2)]
    assert statuses == {200}
    assert schema == [200, 429]


def test_openapi_declares_both_public_with_their_real_bodies(engine: Engine) -> None:
    with _gateway(_settings(engine), engine) as client:
        doc = client.get("/schema/openapi.json").json()
    health = doc["paths"]["/health"]["get"]
    ready = doc["paths"]["/ready"]["get"]
    assert health["security"] == [] and ready["security"] == []
    assert "503" not in health["responses"] and "429" not in health["responses"]
    assert "429" not in ready["responses"]
    ok = ready["responses"]["200"]["content"]["application/json"]["schema"]
    down = ready["responses"]["503"]["content"]["application/json"]["schema"]
    assert ok == down and ok["$ref"].endswith("/ReadyOut")
    assert "application/problem+json" not in ready["responses"]["503"]["content"]


# ------------------------------------------------------------------ chain and collateral


@pytest.fixture
def anvil_chain() -> Iterator[Any]:
    """An anvil of this test's own: it stops it to see the node go away."""
    require_anvil()
    chain = start_anvil(accounts=10)
    yield chain
    chain.stop()


@pytest.mark.chain
def test_stablecoin_needs_the_chain_and_a_fresh_checkpoint(
    engine: Engine, anvil_chain: Any, tmp_path: Path
) -> None:
    dep = deploy(anvil_chain)
    base = make_settings(engine, dep)
    settings = base.model_copy(
        update={
            "data_dir": tmp_path,
            "readiness": base.readiness.model_copy(update={"cache_seconds": 0.0}),
        }
    )
    sc = Stablecoin.from_settings(settings)
    clog = sc.collateral
    assert clog is not None

    def uow(*, readonly: bool = False) -> CollateralUnitOfWork:
        return CollateralUnitOfWork(engine, readonly=readonly)

    with _gateway(settings, engine, stablecoin=sc) as client:
        first = client.get("/ready")
        assert first.status_code == 503
        checks = first.json()["checks"]
        assert checks["chain"]["ok"] is True and checks["chain"]["detail"].startswith("block ")
        assert checks["collateral_checkpoint"] == {
            "ok": False,
            "detail": "no checkpoint signed yet",
        }

        collateral.integrate(uow, clog)  # what the integrating job does: a checkpoint is signed
        fresh = client.get("/ready")
        assert fresh.status_code == 200, fresh.text
        assert fresh.json()["checks"]["collateral_checkpoint"]["ok"] is True

        old = utcnow() - timedelta(hours=1)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE collateral_checkpoint SET signed_at = :t"), {"t": old})
        stale = client.get("/ready")
        assert stale.status_code == 503
        detail = stale.json()["checks"]["collateral_checkpoint"]["detail"]
        assert "signed 3600" in detail and "limit 60 s" in detail

        anvil_chain.stop()  # the node goes away
        gone = client.get("/ready")
        assert gone.status_code == 503
        assert gone.json()["checks"]["chain"]["ok"] is False
