"""With ``connector.admin_token`` set, only its holder registers participants, creates trades,
opens simulated accounts and injects faults; a PvP and its messages are read by the admin and
the participants it concerns; the rest of reading stays open."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.connector.app import create_app
from gateway.connector.keys import generate_identity
from gateway.connector.runtime import Connector
from gateway.messaging.serving import serve_in_thread
from tests.integration.connector.fakenet import BIC
from tests.integration.connector.support import DT_BANK, Env, connector_settings

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
        # Reading needs no token, but for PvPs (below).
        assert [p["bic"] for p in http.get("/v1/participants").json()] == [BIC]
        assert http.get("/v1/pvp/PVP-ADMIN-1", headers=admin).status_code == 200
        assert http.get("/v1/sim/AED/accounts/NEW-AED").json()["available"] == 5
        assert http.get("/v1/faults").json() == []


def test_a_pvp_is_read_by_the_admin_and_the_participants_it_concerns(tmp_path: Path) -> None:
    connector = Connector(connector_settings(tmp_path, admin_token=TOKEN))
    _key, cert = generate_identity("a DT network")
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with serve_in_thread(create_app(connector)) as url, httpx.Client(base_url=url) as http:

        def register(body: dict[str, str]) -> dict[str, str]:
            r = http.post("/v1/participants", json=body, headers=admin)
            assert r.status_code == 201, r.text
            return {"Authorization": f"Bearer {r.json()['token']}"}

        # The DT network (settles the KZT leg), a party (pays KZT), and a stranger.
        network = register(
            {
                "bic": BIC,
                "currency": "KZT",
                "endpoint": "http://127.0.0.1:9",
                "certificate_pem": cert,
            }
        )
        party = register({"bic": DT_BANK, "currency": "KZT"})
        stranger = register({"bic": "OTHRTRIS", "currency": "TRY"})
        body = Env.trade_body(pvp_id="PVP-READ-1")
        assert http.post("/v1/trades", json=body, headers=admin).status_code == 201

        for path in ("/v1/pvp/PVP-READ-1", "/v1/pvp/PVP-READ-1/messages"):
            for headers in ({}, {"Authorization": "Bearer not-a-token"}):
                r = http.get(path, headers=headers)
                assert r.status_code == 401, (path, headers, r.text)
            for headers in (admin, network, party):
                assert http.get(path, headers=headers).status_code == 200, (path, headers)
            # Not theirs: as if it did not exist, like a PvP that does not.
            r = http.get(path, headers=stranger)
            assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND", r.text
            missing = path.replace("PVP-READ-1", "PVP-NONE")
            assert http.get(missing, headers=party).status_code == 404
            assert http.get(missing, headers=admin).status_code == 404
        messages = http.get("/v1/pvp/PVP-READ-1/messages", headers=party).json()
        assert [m["message"][:8] for m in messages][:2] == ["pacs.009", "pacs.009"]


def test_without_an_admin_token_a_pvp_is_open_to_read(tmp_path: Path) -> None:
    connector = Connector(connector_settings(tmp_path))
    _key, cert = generate_identity("a DT network")
    network = {"bic": BIC, "currency": "KZT", "endpoint": "http://127.0.0.1:9"}
    with serve_in_thread(create_app(connector)) as url, httpx.Client(base_url=url) as http:
        r = http.post("/v1/participants", json={**network, "certificate_pem": cert})
        assert r.status_code == 201, r.text
        assert http.post("/v1/trades", json=Env.trade_body(pvp_id="PVP-OPEN-1")).status_code == 201
        assert http.get("/v1/pvp/PVP-OPEN-1").status_code == 200
        assert http.get("/v1/pvp/PVP-OPEN-1/messages").status_code == 200
