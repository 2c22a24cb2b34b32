"""An unexpected failure inside the connector is logged with its traceback and answered as a
problem document, like every other error: a partner sees a 500 it can retry, an operator
sees why."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from gateway.connector import Connector, create_app
from gateway.messaging.serving import serve_in_thread
from tests.integration.connector.conftest import Env, connector_settings


def test_an_unexpected_error_is_logged_and_answered_as_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    connector = Connector(connector_settings(tmp_path))

    def broken(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(connector, "create_trade", broken)
    with (
        serve_in_thread(create_app(connector)) as url,
        httpx.Client(base_url=url) as http,
        caplog.at_level(logging.ERROR, logger="gateway.connector.app"),
    ):
        r = http.post("/v1/trades", json=Env.trade_body(pvp_id="PVP-BROKEN-1"))
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "INTERNAL_ERROR"
    assert "disk on fire" not in r.text  # details stay in the log
    [record] = [rec for rec in caplog.records if rec.name == "gateway.connector.app"]
    assert "POST /v1/trades" in record.getMessage()
    assert record.exc_info is not None and "disk on fire" in str(record.exc_info[1])
