"""What the connector's tests share: the connector over real HTTP with a fake DT network
(:class:`Env`, started by the ``make_env`` and ``env`` fixtures), its settings, and the banks
of a trade."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from gateway.config import load_settings
from gateway.connector.runtime import Connector
from tests.integration.connector.fakenet import BIC, FakeNetwork
from tests.support.waiting import wait_for

AED_BANK = "CBAUAEAA"
DT_BANK = "HSBKKZKX"
FX_BANK = "EBILAEAD"
DEADLINE_S = 30.0
"""A trade's deadline unless a test sets one: what most tests check is the path to a
decision, not the deadline, and a loaded machine can stall a PvP for seconds (5 s, the
default once, was missed in full runs of the suite). Tests of deadlines set their own."""


@dataclass
class Env:
    url: str
    http: httpx.Client
    connector: Connector
    dt: FakeNetwork

    def trade(
        self,
        *,
        kzt: int = 100_000,
        aed: int = 800,
        seconds: float = DEADLINE_S,
        pvp_id: str | None = None,
    ) -> str:
        body = self.trade_body(kzt=kzt, aed=aed, seconds=seconds, pvp_id=pvp_id)
        r = self.http.post("/v1/trades", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["pvp_id"])

    @staticmethod
    def trade_body(
        *,
        kzt: int = 100_000,
        aed: int = 800,
        seconds: float = DEADLINE_S,
        pvp_id: str | None = None,
    ) -> dict[str, Any]:
        """A ``POST /v1/trades`` body: HSBK pays KZT, EBIL pays AED (simulated)."""
        value_time = datetime.now(UTC) + timedelta(seconds=seconds)
        body: dict[str, Any] = {
            "value_time": value_time.isoformat(),
            "a": {
                "bic": DT_BANK,
                "currency": "KZT",
                "amount": kzt,
                "account": "hsbk-dt",
                "receive_account": "HSBK-AED",
            },
            "b": {
                "bic": FX_BANK,
                "currency": "AED",
                "amount": aed,
                "account": "EBIL-AED",
                "receive_account": "ebil-dt",
            },
        }
        if pvp_id:
            body["pvp_id"] = pvp_id
        return body

    def pvp(self, pvp_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/pvp/{pvp_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(
        self, pvp_id: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        """The PvP's view once ``pred`` holds of it."""
        seen: list[dict[str, Any]] = []

        def view() -> dict[str, Any] | None:
            seen[:] = [self.pvp(pvp_id)]
            return seen[0] if pred(seen[0]) else None

        return wait_for(view, lambda: f"PvP is {seen[0]}", timeout=timeout, interval=0.02)

    def balance(self, account: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/sim/AED/accounts/{account}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def connector_settings(tmp: Path, **connector: Any) -> Any:
    return load_settings(
        environ={},
        data_dir=str(tmp),
        connector={
            "database_url": f"sqlite:///{tmp}/connector.db",
            "sim_accounts": {"AED": {"EBIL-AED": 1_000_000}},
            "safety_margin_ms": 300,
            "redeliver_after_ms": 1500,
            "retry_base_ms": 20,
            "retry_cap_ms": 500,
            **connector,
        },
    )


def register_network(http: httpx.Client, net: FakeNetwork) -> None:
    r = http.post(
        "/v1/participants",
        json={"bic": BIC, "currency": "KZT", "endpoint": net.url, "certificate_pem": net.cert_pem},
    )
    assert r.status_code == 201, r.text
