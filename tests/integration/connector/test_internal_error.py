"""An unexpected failure inside the connector is logged with its traceback and answered as a
problem document, like every other error: a partner sees a 500 it can retry, an operator
sees why. The failure is a real one: the database loses a table under the running
connector."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from tests.integration.connector.support import Env


def test_an_unexpected_error_is_logged_and_answered_as_a_problem(
    env: Env, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with sqlite3.connect(tmp_path / "connector.db") as db:  # where a trade's legs go
        db.execute("DROP TABLE legs")
    db.close()
    with caplog.at_level(logging.ERROR, logger="gateway.connector.app"):
        r = env.http.post("/v1/trades", json=Env.trade_body(pvp_id="PVP-BROKEN-1"))
    assert r.status_code == 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "INTERNAL_ERROR"
    assert "legs" not in r.text  # details stay in the log
    [record] = [rec for rec in caplog.records if rec.name == "gateway.connector.app"]
    assert "POST /v1/trades" in record.getMessage()
    assert record.exc_info is not None and "no such table: legs" in str(record.exc_info[1])
