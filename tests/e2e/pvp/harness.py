"""Both parties of a PvP as real processes: ``dt-gateway serve`` and ``dt-gateway connector``
(for the gateway in this process with a fake connector, see ``tests/support/inprocess_pvp.py``).

:class:`PvPProcesses` gives each process its own database (a SQLite file under the test's tmp
directory; the gateway's may be a PostgreSQL URL), migrates the gateway with ``dt-gateway db
upgrade``, creates API keys with ``dt-gateway keys create``, wires the two parties (the
connector's certificate pinned in the gateway's settings; the gateway registered at the connector
as the KZT network with its endpoint, its certificate and the token it instructs with), opens the
DT wallets, issues DT, funds the simulated AED accounts, and can ``kill -9`` and restart either
process while keeping its database. Everything goes over HTTP on 127.0.0.1; settings go through
``DT_GATEWAY_*`` variables exactly as an operator would set them.

Waiting is polling with a timeout: nothing is timed.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from gateway.iso20022 import Message, OriginalRef, build, header_for, parse, sign_envelope
from gateway.messaging.httplimits import DEFAULT_LIMITS
from gateway.messaging.serving import free_port
from gateway.pvp.keys import generate
from ops.chaos.processes import Process, Timeout, run_cli, wait_for
from ops.chaos.processes import clean_env as _clean_env
from ops.chaos.system import (
    AED_PAYER,
    AED_RECEIVER,
    CB_WALLET,
    CONNECTOR_BIC,
    CONNECTOR_TUNING,
    DT_BANK,
    DT_WALLET,
    FX_BANK,
    GATEWAY_BIC,
    GATEWAY_PVP_TUNING,
    SAFETY_MARGIN_MS,
    register_gateway,
)

FINAL = {"settled", "cancelled"}
PACS009 = "pacs.009.001.08"


@dataclass
class PvPProcesses:
    """A gateway and a connector, wired to each other, with funded accounts on both sides."""

    tmp: Path
    gateway_db_url: str | None = None
    connector_settings: dict[str, str] = field(default_factory=dict)
    gateway_settings: dict[str, str] = field(default_factory=dict)
    log_level: str = "WARNING"
    safety_margin_ms: int = SAFETY_MARGIN_MS
    """Both processes' ``connector.safety_margin_ms``: the connector commits only before
    deadline - margin, and the gateway refuses (TM01) a pacs.009 closer to its deadline than
    that, so with two margins a leg could be refused that the connector still counts on."""

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        (self.tmp / "gateway").mkdir(exist_ok=True)
        (self.tmp / "connector").mkdir(exist_ok=True)
        self.gateway_db_url = self.gateway_db_url or f"sqlite:///{self.tmp / 'gateway' / 'gw.db'}"
        self._clients: list[httpx.Client] = []
        base = _clean_env()
        self.identity = generate(GATEWAY_BIC)
        # The connector's key is generated here and passed to it, so that a test can also sign
        # messages "from the connector" (a wrong fulfilment, a late camt.056, a pacs.028).
        self.connector_identity = generate(CONNECTOR_BIC)
        connector_port, gateway_port = free_port(), free_port()
        while gateway_port == connector_port:
            gateway_port = free_port()
        connector_db = f"sqlite:///{self.tmp / 'connector' / 'c.db'}"
        # Its administrative endpoints (participants, trades, faults) take this token.
        self.admin_token = secrets.token_urlsafe(24)
        self.connector = Process(
            "connector",
            ["connector"],
            {
                **base,
                "DT_GATEWAY_LOG_LEVEL": self.log_level,
                "DT_GATEWAY_DATA_DIR": str(self.tmp / "connector"),
                "DT_GATEWAY_CONNECTOR__DATABASE_URL": connector_db,
                "DT_GATEWAY_CONNECTOR__SIGNING_KEY_PEM": self.connector_identity.key_pem.decode(),
                "DT_GATEWAY_CONNECTOR__SIGNING_CERT_PEM": self.connector_identity.cert_pem.decode(),
                "DT_GATEWAY_CONNECTOR__ADMIN_TOKEN": self.admin_token,
                "DT_GATEWAY_CONNECTOR__SAFETY_MARGIN_MS": str(self.safety_margin_ms),
                **CONNECTOR_TUNING,
                **self.connector_settings,
            },
            connector_port,
            self.tmp / "connector.log",
            "/health",
        )
        self.gateway_env: dict[str, str] = {
            **base,
            "DT_GATEWAY_LOG_LEVEL": self.log_level,
            "DT_GATEWAY_DATA_DIR": str(self.tmp / "gateway"),
            "DT_GATEWAY_DATABASE__URL": self.gateway_db_url,
            "DT_GATEWAY_HTTP__PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
            "DT_GATEWAY_CONNECTOR__URL": self.connector.url,
            "DT_GATEWAY_CONNECTOR__GATEWAY_BIC": GATEWAY_BIC,
            "DT_GATEWAY_CONNECTOR__SAFETY_MARGIN_MS": str(self.safety_margin_ms),
            "DT_GATEWAY_PVP__CONNECTOR_BIC": CONNECTOR_BIC,
            "DT_GATEWAY_ISO20022__SIGNING_KEY_PEM": self.identity.key_pem.decode(),
            "DT_GATEWAY_ISO20022__SIGNING_CERT_PEM": self.identity.cert_pem.decode(),
            **GATEWAY_PVP_TUNING,
            **self.gateway_settings,
        }
        self.gateway = Process(
            "gateway",
            ["serve"],
            self.gateway_env,
            gateway_port,
            self.tmp / "gateway.log",
            "/health",
        )

    # --- set-up -------------------------------------------------------------------------------

    def setup(self, *, dt: int = 10_000_000_00, aed: int = 100_000_000) -> PvPProcesses:
        """Migrate, create keys, start both processes, wire them, fund both sides."""
        run_cli(self.gateway_env, "db", "upgrade")
        self.operator_token = json.loads(
            run_cli(self.gateway_env, "keys", "create", "--role", "operator", "--label", "e2e")
        )["token"]
        self.participant_token = json.loads(
            run_cli(
                self.gateway_env,
                "keys",
                "create",
                "--role",
                "participant",
                "--label",
                "hsbk",
                "--subject",
                DT_WALLET,
            )
        )["token"]
        self.connector.start()
        self.conn = self._client(self.connector.url, self.admin_token)
        cert = self.conn.get("/v1/certificate").json()["certificate_pem"]
        assert cert.encode() == self.connector_identity.cert_pem
        token = register_gateway(self.conn, self.gateway.url, self.identity.cert_pem)
        self.gateway_env["DT_GATEWAY_ISO20022__CONNECTOR_CERT_PEM"] = cert
        self.gateway_env["DT_GATEWAY_PVP__CONNECTOR_TOKEN"] = token
        self.gateway.start()
        self.op = self._client(self.gateway.url, self.operator_token)
        self.gateway_http = self._client(self.gateway.url)
        self.participant = self._client(self.gateway.url, self.participant_token)
        pinned = self._client(self.gateway.url).get("/iso20022/certificate")
        assert pinned.status_code == 200 and pinned.content == self.identity.cert_pem
        for wallet, kind in ((DT_WALLET, "participant"), (CB_WALLET, "foreign_central_bank")):
            self.call(
                self.op, "POST", "/v1/wallets", json={"id": wallet, "kind": kind, "owner": wallet}
            )
        self.issue(DT_WALLET, dt)
        self.fund_aed(AED_PAYER, aed)
        self.fund_aed(AED_RECEIVER, 0)
        return self

    def _client(self, url: str, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # An idle connection dropped well before the servers close it (their keep-alive): at
        # the same 5 s, a request after a restart's pause could go out on a connection the
        # server was closing ("Server disconnected without sending a response").
        limits = httpx.Limits(keepalive_expiry=DEFAULT_LIMITS.keep_alive / 2)
        client = httpx.Client(base_url=url, headers=headers, timeout=15, limits=limits)
        self._clients.append(client)
        return client

    @staticmethod
    def call(client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
        resp = client.request(method, path, **kw)
        assert resp.status_code < 300, f"{method} {path} -> {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def issue(self, wallet: str, amount: int) -> None:
        body = {"id": "iss-" + uuid.uuid4().hex[:12], "wallet_id": wallet, "amount": amount}
        self.call(self.op, "POST", "/v1/issuances", json=body)

    def redeem(self, wallet: str, amount: int) -> None:
        body = {"id": "red-" + uuid.uuid4().hex[:12], "wallet_id": wallet, "amount": amount}
        self.call(self.op, "POST", "/v1/redemptions", json=body)

    def fund_aed(self, account: str, amount: int) -> None:
        self.call(
            self.conn, "POST", "/v1/sim/AED/accounts", json={"account": account, "amount": amount}
        )

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.gateway.stop()
        self.connector.stop()

    # --- trading ------------------------------------------------------------------------------

    def trade(
        self,
        *,
        kzt: int = 1_000_00,
        aed: int = 800,
        seconds: float = 8.0,
        pvp_id: str | None = None,
        dt_wallet: str = DT_WALLET,
        cb_wallet: str = CB_WALLET,
        aed_payer: str = AED_PAYER,
        reference: str | None = None,
    ) -> str:
        """A matched DT/AED trade via the connector's ``POST /v1/trades``; its PvP id."""
        value_time = datetime.now(UTC) + timedelta(seconds=seconds)
        a: dict[str, Any] = {
            "bic": DT_BANK,
            "currency": "KZT",
            "amount": kzt,
            "account": dt_wallet,
            "receive_account": AED_RECEIVER,
        }
        if reference:
            a["reference"] = reference
        body: dict[str, Any] = {
            "value_time": value_time.isoformat(),
            "a": a,
            "b": {
                "bic": FX_BANK,
                "currency": "AED",
                "amount": aed,
                "account": aed_payer,
                "receive_account": cb_wallet,
            },
        }
        if pvp_id:
            body["pvp_id"] = pvp_id
        resp = self.conn.post("/v1/trades", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["pvp_id"])

    # --- speaking as the connector ------------------------------------------------------------

    def dt_original(self, pvp_id: str) -> OriginalRef:
        """The reference of the DT leg's pacs.009, as the connector sent it."""
        leg = self.dt_leg(pvp_id)
        sent = [
            m
            for m in self.connector_messages(pvp_id)
            if m["direction"] == "out"
            and m["message"].startswith("pacs.009")
            and m["peer_bic"] == GATEWAY_BIC
        ]
        assert sent, f"no pacs.009 was sent to the gateway for {pvp_id}"
        return OriginalRef(sent[0]["msg_id"], PACS009, leg["end_to_end_id"], leg["uetr"])

    def send_as_connector(self, message: Message) -> httpx.Response:
        """Sign ``message`` with the connector's key and post it to the gateway."""
        header = header_for(message, from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC)
        raw = sign_envelope(
            build(message, header),
            self.connector_identity.key_pem,
            self.connector_identity.cert_pem,
        )
        return self.post_to_gateway(raw)

    def post_to_gateway(self, raw: bytes) -> httpx.Response:
        return self.gateway_http.post(
            "/iso20022/messages", content=raw, headers={"content-type": "application/xml"}
        )

    def from_gateway(self, pvp_id: str, prefix: str) -> list[Message]:
        """The messages of type ``prefix`` the connector received from the gateway, parsed."""
        return [
            parse(m["xml"].encode(), cert_pem=self.identity.cert_pem).message
            for m in self.connector_messages(pvp_id)
            if m["direction"] == "in"
            and m["peer_bic"] == GATEWAY_BIC
            and m["message"].startswith(prefix)
        ]

    # --- observing ----------------------------------------------------------------------------

    def connector_pvp(self, pvp_id: str) -> dict[str, Any]:
        return dict(self.call(self.conn, "GET", f"/v1/pvp/{pvp_id}"))

    def connector_messages(self, pvp_id: str) -> list[dict[str, Any]]:
        return list(self.call(self.conn, "GET", f"/v1/pvp/{pvp_id}/messages"))

    def gateway_pvp(self, ref: str) -> dict[str, Any]:
        return dict(self.call(self.op, "GET", f"/v1/pvp/{ref}"))

    def wallet(self, wallet: str) -> dict[str, Any]:
        return dict(self.call(self.op, "GET", f"/v1/wallets/{wallet}"))

    def aed(self, account: str) -> dict[str, Any]:
        return dict(self.call(self.conn, "GET", f"/v1/sim/AED/accounts/{account}"))

    def invariants(self) -> dict[str, Any]:
        return dict(self.call(self.op, "GET", "/v1/ledger/invariants"))

    def ledger_check(self) -> dict[str, Any]:
        """``dt-gateway ledger check`` against the gateway's database (exit 0 = conserved)."""
        return dict(json.loads(run_cli(self.gateway_env, "ledger", "check")))

    def sim_check(self) -> dict[str, Any]:
        return dict(self.call(self.conn, "GET", "/v1/sim/AED/check"))

    def dt_leg(self, pvp_id: str) -> dict[str, Any]:
        view = self.connector_pvp(pvp_id)
        return next(leg for leg in view["legs"] if leg["leg"] == "DT")

    def wait_connector(
        self, pvp_id: str, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20.0
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            view = self.connector_pvp(pvp_id)
            return view if pred(view) else None

        return dict(wait_for(f"{what} ({pvp_id})", probe, timeout))

    def wait_final(self, pvp_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Both networks acknowledged THE decision (connector state settled or cancelled)."""
        return self.wait_connector(pvp_id, lambda v: v["state"] in FINAL, "a final state", timeout)

    def wait_all_final(
        self, pvp_ids: Iterable[str], timeout: float = 60.0
    ) -> dict[str, dict[str, Any]]:
        pending = list(pvp_ids)
        views: dict[str, dict[str, Any]] = {}
        end = time.monotonic() + timeout
        while pending:
            still: list[str] = []
            for pvp_id in pending:
                try:
                    view = self.connector_pvp(pvp_id)
                except (httpx.HTTPError, AssertionError):
                    still.append(pvp_id)
                    continue
                if view["state"] in FINAL:
                    views[pvp_id] = view
                else:
                    still.append(pvp_id)
            pending = still
            if pending:
                if time.monotonic() > end:
                    sample = self.connector_pvp(pending[0])
                    raise Timeout(f"{len(pending)} PvPs not final, e.g. {sample}")
                time.sleep(0.2)
        return views

    def wait_gateway_leg(self, pvp_id: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
        uetr = self.dt_leg(pvp_id)["uetr"]

        def probe() -> dict[str, Any] | None:
            resp = self.op.get(f"/v1/pvp/{uetr}")
            if resp.status_code != 200:
                return None
            view = resp.json()
            return view if view["legs"] and view["legs"][0]["state"] == state else None

        return dict(wait_for(f"the gateway's DT leg {state} ({pvp_id})", probe, timeout))

    def assert_atomic(self, pvp_id: str) -> str:
        """Both legs settled (COMMIT) or both not moved (ABORT), on both sides; the outcome.

        Read once the PvP is final again: a network's lock that arrives after its answer to the
        cancellation (the gateway's ACSP overtaken by its camt.029) has the connector cancel
        that leg again and wait for a new answer, so a cancelled PvP is aborted for a moment."""
        view = self.wait_final(pvp_id)
        decision = view["decision"]["decision"]
        legs = {leg["leg"]: leg for leg in view["legs"]}
        # By UETR: a leg cancelled before its pacs.009 arrived does not know its PvP id.
        resp = self.op.get(f"/v1/pvp/{legs['DT']['uetr']}")
        if resp.status_code == 404:  # the gateway never heard of this PvP
            assert decision == "ABORT", view
            return str(decision)
        assert resp.status_code == 200, resp.text
        gw = resp.json()
        gw_states = {leg["state"] for leg in gw["legs"]}
        if decision == "COMMIT":
            assert view["state"] == "settled", view
            assert {leg["status"] for leg in legs.values()} == {"settled"}, view
            assert gw_states == {"settled"}, gw
            assert gw["decision"] == "commit", gw
        else:
            assert decision == "ABORT", view
            assert view["state"] == "cancelled", view
            assert all(leg["status"] != "settled" for leg in legs.values()), view
            # The gateway's leg never settles on an abort: released, rejected, or cancelled (or
            # never received, when the connector aborted before delivering the pacs.009).
            assert gw_states <= {"released", "rejected", "cancelled"}, gw
            assert "settled" not in gw_states
        return str(decision)

    def assert_conserved(self) -> None:
        inv = self.invariants()
        assert inv["ok"], inv
        check = self.ledger_check()
        assert check["ok"] and check["violations"] == [], check
        sim = self.sim_check()
        assert sim["ok"] and sim["held"] == 0 and sim["open_locks"] == 0, sim


__all__ = [
    "AED_PAYER",
    "AED_RECEIVER",
    "CB_WALLET",
    "DT_BANK",
    "DT_WALLET",
    "FX_BANK",
    "GATEWAY_BIC",
    "Process",
    "PvPProcesses",
    "Timeout",
    "run_cli",
    "wait_for",
]
