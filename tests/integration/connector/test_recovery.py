"""kill -9 of the connector process at a chosen step; a restart resumes from the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.messaging.serving import free_port, serve_in_thread
from tests.integration.connector.fakenet import FakeNetwork
from tests.integration.connector.support import DT_BANK, FX_BANK, register_network
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[3]


class Proc:
    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp, self.port, self.url = tmp, port, f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "DT_GATEWAY_DATA_DIR": str(self.tmp),
            "DT_GATEWAY_CONNECTOR__DATABASE_URL": f"sqlite:///{self.tmp}/connector.db",
            "DT_GATEWAY_CONNECTOR__SIM_ACCOUNTS": json.dumps({"AED": {"EBIL-AED": 1_000_000}}),
            "DT_GATEWAY_CONNECTOR__SAFETY_MARGIN_MS": "300",
            "DT_GATEWAY_CONNECTOR__RETRY_CAP_MS": "300",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "connector",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda: httpx.get(self.url + "/health", timeout=1).status_code == 200,
            "the connector's start",
            timeout=20,
            proc=self.proc,
            tolerate=(httpx.HTTPError,),
            interval=0.05,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[Proc]:
    p = Proc(tmp_path, free_port())
    try:
        yield p
    finally:
        p.stop()


def test_killed_after_deciding_delivers_the_decision_after_restart(proc: Proc) -> None:
    proc.start()
    with ExitStack() as stack:
        http = stack.enter_context(httpx.Client(base_url=proc.url, timeout=10))
        cert = http.get("/v1/certificate").json()["certificate_pem"]
        net = FakeNetwork(connector_url=proc.url, connector_cert=cert)
        stack.callback(net.close)
        net.url = stack.enter_context(serve_in_thread(net.app()))
        register_network(http, net)
        r = http.post("/v1/faults", json={"kind": "crash_after", "step": "decided"})
        assert r.status_code == 201
        value_time = datetime.now(UTC) + timedelta(seconds=30)
        r = http.post(
            "/v1/trades",
            json={
                "value_time": value_time.isoformat(),
                "a": {
                    "bic": DT_BANK,
                    "currency": "KZT",
                    "amount": 500,
                    "account": "hsbk-dt",
                    "receive_account": "HSBK-AED",
                },
                "b": {
                    "bic": FX_BANK,
                    "currency": "AED",
                    "amount": 5,
                    "account": "EBIL-AED",
                    "receive_account": "ebil-dt",
                },
            },
        )
        assert r.status_code == 201, r.text
        pvp_id = r.json()["pvp_id"]
        assert proc.proc is not None
        assert proc.proc.wait(15) == -9  # SIGKILL, right after the decision was recorded
        assert net.of_type("pacs.002") == []  # nothing of the decision was sent
        proc.start()
        views: list[dict[str, Any]] = []

        def settled() -> dict[str, Any] | None:
            views[:] = [http.get(f"/v1/pvp/{pvp_id}").json()]
            return views[0] if views[0]["state"] == "settled" else None

        view = wait_for(settled, lambda: f"PvP settled; it is {views}", timeout=15, interval=0.05)
        assert view["decision"]["decision"] == "COMMIT"
        assert http.get("/v1/sim/AED/accounts/HSBK-AED").json()["available"] == 5
        assert http.get("/v1/faults").json() == []  # faults do not survive a restart
