"""A whole gateway for the edge tests: the stablecoin deployed on anvil, a key for each role,
funded wallets, served over real HTTP on 127.0.0.1 with short request-head and body limits."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway import auth
from gateway.api.app import create_app
from gateway.ledger import service as ledger
from gateway.ledger.model import Issue, OpenWallet, WalletKind
from gateway.ledger.store import LedgerUnitOfWork
from gateway.messaging.httplimits import HttpLimits
from gateway.messaging.serving import serve_in_thread
from gateway.stablecoin.devchain import DevChain
from gateway.stablecoin.runtime import Stablecoin
from tests.support.databases import migrated_engine
from tests.support.stablecoin import deploy, make_settings, setup_exchanges

PROBLEM = "application/problem+json"
LIMITS = HttpLimits(head_timeout=2.0, body_idle_timeout=2.0)
"""Short deadlines, so that the tests that wait for them end soon."""
PARTICIPANT_BIC = "HSBKKZKX"
COUNTED = (
    "ledger_wallet",
    "ledger_transfer",
    "ledger_lock",
    "ledger_entry",
    "stablecoin_mint",
    "pvp_instruction",
    "pvp_audit",
)


@dataclass
class Edge:
    url: str
    engine: Engine
    tokens: dict[str, str]
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, role: str | None) -> httpx.Client:
        """A client with the key of ``role`` (operator, exchange, participant), or none."""
        name = role or "anonymous"
        if name not in self.clients:
            headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
            self.clients[name] = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        return self.clients[name]

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)

    def counts(self) -> dict[str, int]:
        """Rows of the tables a request could write to."""
        with self.engine.connect() as conn:
            return {
                t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in COUNTED
            }


@pytest.fixture(scope="module")
def edge_chain(anvil: DevChain) -> DevChain:
    """The session's anvil (tests/conftest.py); the edge deploys its own contract on it."""
    return anvil


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def edge(
    request: pytest.FixtureRequest,
    edge_chain: DevChain,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Edge]:
    """The whole gateway on a fresh SQLite file, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('edge') / 'gateway.db'}"
    else:
        url = request.getfixturevalue("pg_database_factory")(migrated=True)
    engine = migrated_engine(url)
    with running_edge(engine, edge_chain) as running:
        yield running
    engine.dispose()


@contextmanager
def running_edge(engine: Engine, chain: DevChain) -> Iterator[Edge]:
    dep = deploy(chain)
    settings = make_settings(engine, dep)
    sc = Stablecoin.from_settings(settings)
    tokens = setup_exchanges(engine)
    tokens["exchange"] = tokens["exch-1"]
    tokens["participant"] = auth.create_key(engine, "participant", subject=PARTICIPANT_BIC).token
    ledger.apply(
        LedgerUnitOfWork(engine),
        [
            OpenWallet(id="a", kind=WalletKind.PARTICIPANT, owner="a"),
            OpenWallet(id="b", kind=WalletKind.PARTICIPANT, owner="b"),
            Issue(id="fund-a", wallet_id="a", amount=1_000_00),
        ],
    )
    with serve_in_thread(create_app(settings, engine, stablecoin=sc), limits=LIMITS) as url:
        edge = Edge(url, engine, tokens)
        try:
            yield edge
        finally:
            for c in edge.clients.values():
                c.close()


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["type"] and body["title"] and body["detail"]
    return body


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def read_answer(sock: socket.socket) -> RawAnswer:
    """One HTTP/1.1 answer read off ``sock`` (the server closes after those we expect here,
    or sends a Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the server closed without an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {k.lower(): v for k, v in headers.items()}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawAnswer(int(lines[0].split(" ")[1]), headers, body)


def read_until_closed(sock: socket.socket) -> bytes:
    """What the server sends on ``sock`` until it closes it (the socket's timeout, if it
    never does, fails the test)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


__all__ = [
    "COUNTED",
    "LIMITS",
    "PROBLEM",
    "Edge",
    "RawAnswer",
    "assert_problem",
    "edge",
    "edge_chain",
    "read_answer",
    "read_until_closed",
    "running_edge",
]
