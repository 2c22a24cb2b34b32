"""With ``connector.admin_token`` set, only its holder registers participants, creates trades,
opens simulated accounts and injects faults; reading stays open."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.connector import Connector, create_app
from gateway.connector.keys import generate_identity
from gateway.serving import serve_in_thread
from tests.integration.connector.conftest import Env, connector_settings
from tests.integration.connector.fakenet import BIC

TOKEN = "admin-secret-0123456789"


def test_the_administrative_endpoints_take_the_admin_token_only(tmp_path: Path) -> None:
    connector = Connector(connector_settings(tmp_path, admin_token=TOKEN))
    _key, cert = generate_identity("a DT network")
    network = {"bic": BIC, "currency": "KZT", "endpoint": "http://127.0.0.1:9"}
    writes = [
        ("POST", "/v1/participants", {**network, "certificate_pem": cert}),
        ("POST", "/v1/sim/AED/accounts", {"account": "NEW-AED", "amount": 5}),
        ("POST", "/v1/faults", {"kind": "drop", "probability": 0.0}),
        ("DELETE", "/v1/faults", None),
        ("POST", "/v1/trades", Env.trade_body(pvp_id="PVP-ADMIN-1")),
        ("POST", "/v1/trades/bulk", {"trades": [Env.trade_body(pvp_id="PVP-ADMIN-2")]}),
    ]
    with serve_in_thread(create_app(connector)) as url, httpx.Client(base_url=url) as http:
        for header in (None, "Bearer wrong-token", TOKEN, f"Basic {TOKEN}"):
            headers = {"Authorization": header} if header else {}
            for method, path, body in writes:
                r = http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (header, path, r.text)
                assert r.json()["code"] == "UNAUTHORIZED"
        assert http.get("/v1/participants").json() == []  # nothing was registered
        assert http.get("/v1/sim/AED/accounts/NEW-AED").status_code == 404

        admin = {"Authorization": f"Bearer {TOKEN}"}
        for method, path, body in writes:
            r = http.request(method, path, json=body, headers=admin)
            assert r.status_code in (201, 204), (path, r.text)
        # Reading needs no token.
        assert [p["bic"] for p in http.get("/v1/participants").json()] == [BIC]
        assert http.get("/v1/pvp/PVP-ADMIN-1").status_code == 200
        assert http.get("/v1/sim/AED/accounts/NEW-AED").json()["available"] == 5
        assert http.get("/v1/faults").json() == []
