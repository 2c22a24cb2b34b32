"""The stablecoin served for tests: a deployed contract, a configured gateway over real HTTP, an
exchange with a DT wallet and a key, a webhook receiver on 127.0.0.1. Used by the stablecoin
tests (``tests/integration/stablecoin/``) and the API tests that need a stablecoin."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from sqlalchemy.engine import Engine

from gateway import auth
from gateway.api.app import create_app
from gateway.config import Settings, load_settings
from gateway.ledger import service as ledger
from gateway.ledger.model import Issue, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.messaging.serving import serve_in_thread
from gateway.stablecoin.chain import StablecoinChain
from gateway.stablecoin.devchain import DevChain
from gateway.stablecoin.runtime import Stablecoin
from gateway.stablecoin.store import StablecoinUnitOfWork

EXCHANGE = "exch-1"
EXCHANGE_WALLET = "exch-1-dt"
OTHER_EXCHANGE = "exch-2"
OTHER_WALLET = "exch-2-dt"
FUNDED = 10_000_000_00  # 10,000,000.00 KZT
WEBHOOK_SECRET = "whsec-test"


@dataclass
class Deployment:
    chain: DevChain
    client: StablecoinChain
    admin: LocalAccount
    operator: LocalAccount
    pauser: LocalAccount
    blocklister: LocalAccount
    attestor: LocalAccount
    holders: list[LocalAccount]
    start_block: int

    def settings_values(self) -> dict[str, Any]:
        return {
            "rpc_url": self.chain.rpc_url or "",
            "contract_address": self.client.address,
            "operator_key": self.operator.key.hex(),
            "attestor_key": self.attestor.key.hex(),
            "start_block": self.start_block,
            "confirmations": 1,
            "poll_seconds": 0.1,
            "reconcile_seconds": 0.5,
            "mint_retry_after_seconds": 1.0,
            "receipt_poll_seconds": 0.005,
            "webhook_secret": WEBHOOK_SECRET,
        }

    def env(self) -> dict[str, str]:
        return {
            f"DT_GATEWAY_STABLECOIN__{k.upper()}": str(v) for k, v in self.settings_values().items()
        }


def deploy(chain: DevChain) -> Deployment:
    a = chain.accounts
    client = StablecoinChain(chain.w3, poll_latency=0.005)
    start = client.block_number()
    client.deploy(
        a[0],
        max_attestation_age=3600,
        minter=a[1].address,
        pauser=a[2].address,
        blocklister=a[3].address,
        attestor=a[4].address,
    )
    return Deployment(chain, client, a[0], a[1], a[2], a[3], a[4], list(a[5:]), start)


def setup_exchanges(engine: Engine) -> dict[str, str]:
    """Exchange wallets with DT and one key per exchange; returns subject -> token."""
    ops = [
        OpenWallet(id=EXCHANGE_WALLET, kind=WalletKind.EXCHANGE, owner=EXCHANGE),
        OpenWallet(id=OTHER_WALLET, kind=WalletKind.EXCHANGE, owner=OTHER_EXCHANGE),
        OpenWallet(id="bank-1", kind=WalletKind.PARTICIPANT, owner="Bank 1"),
        Issue(id="fund-exch-1", wallet_id=EXCHANGE_WALLET, amount=FUNDED),
        Issue(id="fund-exch-2", wallet_id=OTHER_WALLET, amount=FUNDED),
    ]
    ledger.apply(LedgerUnitOfWork(engine), ops)
    return {
        EXCHANGE: auth.create_key(engine, "exchange", subject=EXCHANGE).token,
        OTHER_EXCHANGE: auth.create_key(engine, "exchange", subject=OTHER_EXCHANGE).token,
        "operator": auth.create_key(engine, "operator").token,
    }


def balance(engine: Engine, wallet_id: str) -> int:
    return ledger.get_wallet(LedgerUnitOfWork(engine, readonly=True), wallet_id).posted


def uow_factory(engine: Engine) -> Any:
    return partial(StablecoinUnitOfWork, engine)


@dataclass
class Flow:
    """A gateway on ``engine`` wired to ``dep``, over real HTTP."""

    engine: Engine
    dep: Deployment
    settings: Settings
    sc: Stablecoin
    url: str
    tokens: dict[str, str]
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, who: str = EXCHANGE) -> httpx.Client:
        if who not in self.clients:
            self.clients[who] = httpx.Client(
                base_url=self.url,
                headers={"Authorization": f"Bearer {self.tokens[who]}"},
                timeout=30,
            )
        return self.clients[who]

    @property
    def uow(self) -> Any:
        return uow_factory(self.engine)

    def mint(self, key: str, amount: int, to: str, wallet: str = EXCHANGE_WALLET) -> httpx.Response:
        return self.client().post(
            "/v1/stablecoin/mints",
            json={"amount": amount, "source_wallet_id": wallet, "evm_address": to},
            headers={"Idempotency-Key": key},
        )

    def segregated(self) -> int:
        return balance(self.engine, self.sc.segregated_wallet_id)


def make_settings(engine: Engine, dep: Deployment, **stablecoin: Any) -> Settings:
    return load_settings(
        environ={},
        database={"url": engine.url.render_as_string(hide_password=False)},
        stablecoin={**dep.settings_values(), **stablecoin},
        webhooks={"allow_loopback": True},  # the receivers run on 127.0.0.1
    )


@contextmanager
def running_flow(engine: Engine, dep: Deployment, **stablecoin: Any) -> Iterator[Flow]:
    settings = make_settings(engine, dep, **stablecoin)
    sc = Stablecoin.from_settings(settings)
    tokens = setup_exchanges(engine)
    with serve_in_thread(create_app(settings, engine, stablecoin=sc)) as url:
        flow = Flow(engine, dep, settings, sc, url, tokens)
        try:
            yield flow
        finally:
            for c in flow.clients.values():
                c.close()


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: records deliveries; fails the first ``fail_first``."""

    url: str
    deliveries: list[tuple[dict[str, str], bytes]]
    fail_first: int = 0

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.deliveries]


@contextmanager
def webhook_receiver(fail_first: int = 0) -> Iterator[Receiver]:
    deliveries: list[tuple[dict[str, str], bytes]] = []
    seen = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if len(body) < length:
                # The sender died mid-request (a test kills it): like any HTTP server, a
                # truncated request is no delivery, and nothing is answered.
                self.close_connection = True
                return
            with lock:
                seen["n"] += 1
                fail = seen["n"] <= receiver.fail_first
                if not fail:
                    deliveries.append((dict(self.headers.items()), body))
            self.send_response(500 if fail else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(
        f"http://127.0.0.1:{server.server_address[1]}/hooks", deliveries, fail_first
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
