"""The whole system as an operator deploys it, on one machine: a fresh PostgreSQL database,
anvil with the stablecoin contract (``dt-gateway stablecoin deploy``), the connector mock with
its simulated AED bank, two ``dt-gateway serve`` replicas behind a load balancer, sharing the
database and the collateral log's key. Settings go through ``DT_GATEWAY_*`` variables, keys
through ``dt-gateway keys create``, wallets and funds through the HTTP API.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from gateway.messaging.serving import free_port
from gateway.pvp.keys import generate
from gateway.stablecoin.devchain import dev_accounts
from ops.chaos.balancer import Balancer
from ops.chaos.chain import Anvil
from ops.chaos.processes import Process, clean_env, run_cli

GATEWAY_BIC = "NBKZKZKAXXX"
CONNECTOR_BIC = "SWHQBEBBXXX"
DT_BANK = "HSBKKZKX"  # sells KZT in the PvPs
FX_BANK = "EBILAEAD"  # sells AED
DT_WALLET = "hsbk-dt"  # pays the DT legs
CB_WALLET = "cbuae-dt"  # the foreign central bank's DT wallet: receives them
AED_PAYER = "EBIL-AED"
AED_RECEIVER = "HSBK-AED"
EXCHANGE = "ACME"
EXCHANGE_WALLET = "acme-dt"
SEGREGATED_WALLET = "kztd-segregated"
BANK_A, BANK_B = "bank-a-dt", "bank-b-dt"  # plain ledger traffic between two banks

FUNDS = {DT_WALLET: 10**12, EXCHANGE_WALLET: 10**12, BANK_A: 10**11, BANK_B: 10**11}
AED_FUNDS = 10**12
HOLDERS = 4  # token holders, anvil's dev accounts 4..7
SAFETY_MARGIN_MS = 300
"""Every process's ``connector.safety_margin_ms``: the connector commits only before deadline -
margin and the gateway refuses (TM01) a pacs.009 closer to its deadline than that, so the two
must agree or the gateway refuses legs the connector still counts on."""
CONNECTOR_TUNING = {
    "DT_GATEWAY_CONNECTOR__REDELIVER_AFTER_MS": "1000",
    "DT_GATEWAY_CONNECTOR__RETRY_BASE_MS": "20",
    "DT_GATEWAY_CONNECTOR__RETRY_CAP_MS": "500",
    "DT_GATEWAY_CONNECTOR__SWEEP_INTERVAL_MS": "100",
    "DT_GATEWAY_CONNECTOR__AUTO_COUNTER_INSTRUCT": json.dumps(
        {FX_BANK: {"AED": AED_PAYER, "KZT": CB_WALLET}}
    ),
}
"""The connector's settings for a run on one machine: quick retries and sweeps, and the foreign
bank's counter-instruction (AED from its simulated account, DT to the central bank's wallet)
sent on its behalf."""
GATEWAY_PVP_TUNING = {
    "DT_GATEWAY_PVP__GRACE_SECONDS": "0.5",
    "DT_GATEWAY_PVP__STATUS_RETRY_SECONDS": "1",
    "DT_GATEWAY_PVP__SWEEP_SECONDS": "0.5",
    "DT_GATEWAY_PVP__INBOX_RETRY_AFTER_SECONDS": "2",
}
"""The gateway's PvP timings for a run on one machine: deadlines and retries in seconds."""


def register_gateway(connector: httpx.Client, endpoint: str, certificate_pem: bytes) -> str:
    """Register the gateway at the connector as the KZT network (``connector``: its admin
    client), with its endpoint and certificate; the token the gateway instructs with."""
    registered = connector.post(
        "/v1/participants",
        json={
            "bic": GATEWAY_BIC,
            "currency": "KZT",
            "endpoint": endpoint,
            "certificate_pem": certificate_pem.decode(),
        },
    )
    assert registered.status_code == 201, registered.text
    return str(registered.json()["token"])


def create_database(admin_url: str) -> str:
    """A fresh PostgreSQL database; its URL."""
    name = f"dtg_chaos_{secrets.token_hex(6)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@dataclass
class System:
    workdir: Path
    database_url: str
    replicas: int = 2
    anvil: Anvil = field(init=False)
    connector: Process = field(init=False)
    gateways: list[Process] = field(default_factory=list)
    balancer: Balancer = field(init=False)
    contract: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    log_vkey: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds from the start of :meth:`start` to the end of each of its steps."""

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        accounts = dev_accounts(4 + HOLDERS)
        self.operator_key, self.attestor_key = accounts[1].key.hex(), accounts[2].key.hex()
        self.holders = [a.address for a in accounts[4:]]
        self.anvil = Anvil(free_port(), self.workdir)
        self.identity = generate(GATEWAY_BIC)
        self.connector_identity = generate(CONNECTOR_BIC)
        self.admin_token = secrets.token_urlsafe(24)
        self._clients: list[httpx.Client] = []

    # --- set-up -------------------------------------------------------------------------------

    def start(self) -> System:
        """Independent steps run side by side: each ``dt-gateway`` process takes seconds to
        start on a busy machine."""
        began = time.monotonic()
        ports = [free_port() for _ in range(self.replicas)]
        self.balancer = Balancer(ports).start()

        def timed(step: Callable[[], None]) -> None:
            step()
            self.timings[step.__name__.strip("_")] = round(time.monotonic() - began, 1)

        with ThreadPoolExecutor(4) as pool:
            steps = [
                pool.submit(timed, self._start_chain),
                pool.submit(timed, self._start_database),
                pool.submit(timed, self._start_connector),
            ]
            for step in steps:
                step.result()
        gateway_env = self._gateway_env()
        for n, port in enumerate(ports, 1):
            replica_dir = self.workdir / f"replica-{n}"
            replica_dir.mkdir(exist_ok=True)
            self.gateways.append(
                Process(
                    f"replica-{n}",
                    ["serve"],
                    {**gateway_env, "DT_GATEWAY_DATA_DIR": str(replica_dir)},
                    port,
                    self.workdir / f"replica-{n}.log",
                    "/health",
                )
            )
        with ThreadPoolExecutor(self.replicas) as pool:
            for started in [pool.submit(replica.start) for replica in self.gateways]:
                started.result()
        self.timings["replicas"] = round(time.monotonic() - began, 1)
        self.op = self.client(self.balancer.url, self.tokens["operator"])
        self.exchange = self.client(self.balancer.url, self.tokens["exchange"])
        self._fund()
        self.timings["funded"] = round(time.monotonic() - began, 1)
        return self

    def _start_chain(self) -> None:
        """anvil, the contract, and the collateral log's key (its origin names the contract)."""
        self.anvil.start()
        env = self._gateway_env()
        deployed = json.loads(run_cli(env, "stablecoin", "deploy").strip().splitlines()[-1])
        self.deployed = {k: v for k, v in deployed.items() if k.startswith("DT_GATEWAY_")}
        contract = self.deployed["DT_GATEWAY_STABLECOIN__CONTRACT_ADDRESS"]
        chain_id = self.deployed["DT_GATEWAY_STABLECOIN__CHAIN_ID"]
        logkey = json.loads(
            run_cli(env, "collateral", "keygen", "--chain-id", chain_id, "--contract", contract)
        )
        self.log_key, self.log_vkey = logkey["log_key"], logkey["vkey"]
        self.contract = contract

    def _start_database(self) -> None:
        """The schema, then an operator key and the exchange's."""
        env = self._gateway_env()
        run_cli(env, "db", "upgrade")
        with ThreadPoolExecutor(2) as pool:
            keys = {
                role: pool.submit(run_cli, env, "keys", "create", "--role", role, *extra)
                for role, extra in (("operator", []), ("exchange", ["--subject", EXCHANGE]))
            }
            self.tokens = {role: json.loads(done.result())["token"] for role, done in keys.items()}

    def _start_connector(self) -> None:
        port = free_port()
        self.connector = Process(
            "connector",
            ["connector"],
            {
                **clean_env(),
                "DT_GATEWAY_LOG_LEVEL": "WARNING",
                "DT_GATEWAY_DATA_DIR": str(self.workdir),
                "DT_GATEWAY_CONNECTOR__DATABASE_URL": f"sqlite:///{self.workdir / 'connector.db'}",
                "DT_GATEWAY_CONNECTOR__SIGNING_KEY_PEM": self.connector_identity.key_pem.decode(),
                "DT_GATEWAY_CONNECTOR__SIGNING_CERT_PEM": (
                    self.connector_identity.cert_pem.decode()
                ),
                "DT_GATEWAY_CONNECTOR__ADMIN_TOKEN": self.admin_token,
                "DT_GATEWAY_CONNECTOR__SAFETY_MARGIN_MS": str(SAFETY_MARGIN_MS),
                **CONNECTOR_TUNING,
            },
            port,
            self.workdir / "connector.log",
            "/health",
        )
        self.connector.start()
        self.conn = self.client(self.connector.url, self.admin_token)
        self.connector_token = register_gateway(
            self.conn, self.balancer.url, self.identity.cert_pem
        )

    def _gateway_env(self) -> dict[str, str]:
        env = {
            **clean_env(),
            "DT_GATEWAY_LOG_LEVEL": "WARNING",
            "DT_GATEWAY_DATA_DIR": str(self.workdir),
            "DT_GATEWAY_DATABASE__URL": self.database_url,
            "DT_GATEWAY_STABLECOIN__RPC_URL": self.anvil.url,
            "DT_GATEWAY_STABLECOIN__OPERATOR_KEY": self.operator_key,
            "DT_GATEWAY_STABLECOIN__ATTESTOR_KEY": self.attestor_key,
        }
        if not self.contract:  # before the deployment: enough for the CLI
            return env
        return {
            **env,
            **self.deployed,
            "DT_GATEWAY_HTTP__PUBLIC_URL": self.balancer.url,
            "DT_GATEWAY_STABLECOIN__SEGREGATED_WALLET_ID": SEGREGATED_WALLET,
            "DT_GATEWAY_STABLECOIN__CONFIRMATIONS": "1",
            "DT_GATEWAY_STABLECOIN__POLL_SECONDS": "0.2",
            "DT_GATEWAY_STABLECOIN__RECONCILE_SECONDS": "1",
            "DT_GATEWAY_STABLECOIN__MINT_RETRY_AFTER_SECONDS": "1",
            "DT_GATEWAY_STABLECOIN__RECEIPT_TIMEOUT_SECONDS": "10",
            "DT_GATEWAY_COLLATERAL__LOG_KEY": self.log_key,
            "DT_GATEWAY_CONNECTOR__URL": self.connector.url,
            "DT_GATEWAY_CONNECTOR__GATEWAY_BIC": GATEWAY_BIC,
            "DT_GATEWAY_CONNECTOR__SAFETY_MARGIN_MS": str(SAFETY_MARGIN_MS),
            "DT_GATEWAY_PVP__CONNECTOR_BIC": CONNECTOR_BIC,
            "DT_GATEWAY_PVP__CONNECTOR_TOKEN": self.connector_token,
            "DT_GATEWAY_ISO20022__SIGNING_KEY_PEM": self.identity.key_pem.decode(),
            "DT_GATEWAY_ISO20022__SIGNING_CERT_PEM": self.identity.cert_pem.decode(),
            "DT_GATEWAY_ISO20022__CONNECTOR_CERT_PEM": self.connector_identity.cert_pem.decode(),
            **GATEWAY_PVP_TUNING,
        }

    def _fund(self) -> None:
        wallets = [
            (DT_WALLET, "participant", DT_WALLET),
            (CB_WALLET, "foreign_central_bank", CB_WALLET),
            (EXCHANGE_WALLET, "exchange", EXCHANGE),
            (BANK_A, "participant", BANK_A),
            (BANK_B, "participant", BANK_B),
        ]
        for wallet, kind, owner in wallets:
            self.call(self.op, "POST", "/v1/wallets", {"id": wallet, "kind": kind, "owner": owner})
        for wallet, amount in FUNDS.items():
            body = {"id": f"fund-{wallet}", "wallet_id": wallet, "amount": amount}
            self.call(self.op, "POST", "/v1/issuances", body)
        for account, amount in ((AED_PAYER, AED_FUNDS), (AED_RECEIVER, 0)):
            body = {"account": account, "amount": amount}
            self.call(self.conn, "POST", "/v1/sim/AED/accounts", body)

    # --- clients ------------------------------------------------------------------------------

    def client(self, url: str, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=url, headers=headers, timeout=15)
        self._clients.append(client)
        return client

    @staticmethod
    def call(client: httpx.Client, method: str, path: str, body: Any = None) -> Any:
        resp = client.request(method, path, json=body)
        if resp.status_code >= 300:
            raise RuntimeError(f"{method} {path} -> {resp.status_code} {resp.text}")
        return resp.json() if resp.content else None

    @property
    def processes(self) -> dict[str, Process | Anvil]:
        return {
            **{g.name: g for g in self.gateways},
            "connector": self.connector,
            "anvil": self.anvil,
        }

    def logs(self) -> list[Path]:
        return sorted(self.workdir.glob("*.log"))

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        for gateway in self.gateways:
            gateway.stop()
        if hasattr(self, "connector"):
            self.connector.stop()
        if hasattr(self, "balancer"):
            self.balancer.stop()
        self.anvil.stop()
