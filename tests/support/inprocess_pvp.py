"""The PvP gateway in process: a gateway over real HTTP with its PvP engine (in this process,
on the test's database), and a tiny fake connector that records what the gateway sends it. Test
messages are built and signed with ``gateway.iso20022`` and a test key whose certificate is
pinned in the gateway's settings.

Not to be confused with ``tests/e2e/pvp/harness.py``'s :class:`PvPProcesses`, where the gateway
and the connector are real processes."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from gateway import auth
from gateway.api.app import create_app
from gateway.config import load_settings
from gateway.iso20022 import (
    Admi002,
    Camt056,
    CancellationRequest,
    CreditTransfer,
    Message,
    Money,
    OriginalRef,
    Pacs002,
    Pacs009,
    Pacs028,
    ParsedMessage,
    PvPTerms,
    StatusRequest,
    TransactionStatus,
    build,
    header_for,
    parse,
    sign_envelope,
)
from gateway.messaging.serving import serve_in_thread
from gateway.pvp.keys import SigningIdentity, generate
from gateway.pvp.runtime import PvPRuntime
from tests.support.waiting import wait_for

GATEWAY_BIC = "NBKZKZKAXXX"
CONNECTOR_BIC = "SWHQBEBBXXX"
FOREIGN_BIC = "CBAUAEAAXXX"
BANK_BIC = "HSBKKZKXXXX"


@dataclass
class Received:
    path: str
    body: bytes
    parsed: ParsedMessage | None = None
    json: Any = None


@dataclass
class FakeConnector:
    """Records every POST; answers 202 (or 500 while ``failures`` > 0)."""

    gateway_cert: Callable[[], bytes]
    received: list[Received] = field(default_factory=list)
    failures: int = 0
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, path: str, body: bytes) -> int:
        with self.lock:
            self.attempts += 1
            if self.failures > 0:
                self.failures -= 1
                return 500
        rec = Received(path, body)
        if path.endswith("/iso20022/messages"):
            rec.parsed = parse(body, cert_pem=self.gateway_cert())
        else:
            rec.json = json.loads(body)
        with self.lock:
            self.received.append(rec)
        return 202

    def messages(self, kind: type[Message] | None = None) -> list[Message]:
        with self.lock:
            msgs = [r.parsed.message for r in self.received if r.parsed is not None]
        return [m for m in msgs if kind is None or isinstance(m, kind)]

    def wait(self, pred: Callable[[], Any], timeout: float = 10.0) -> Any:
        return wait_for(pred, lambda: f"connector received {self.messages()}", timeout=timeout)

    def statuses(self, uetr: str) -> list[TransactionStatus]:
        reports = [m for m in self.messages(Pacs002) if isinstance(m, Pacs002)]
        return [t for m in reports for t in m.transactions if t.original.uetr == uetr]

    def wait_status(self, uetr: str, status: str, timeout: float = 10.0) -> TransactionStatus:
        def found() -> TransactionStatus | None:
            return next((t for t in self.statuses(uetr) if t.status == status), None)

        result: TransactionStatus = self.wait(found, timeout)
        return result


@contextmanager
def serve_connector(fake: FakeConnector) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            n = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(n)
            if len(body) < n:  # the sender died mid-request: no message arrived
                self.close_connection = True
                return
            status = fake.handle(self.path, body)
            out = b"{}"
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


CONNECTOR_ID: SigningIdentity = generate(CONNECTOR_BIC)
SECRET = bytes(range(32))
CONDITION = hashlib.sha256(SECRET).hexdigest()


def uetr() -> str:
    return str(uuid.uuid4())


def msg_id(prefix: str = "C") -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


@dataclass
class Leg:
    uetr: str
    amount: int
    debtor: str = "hsbk-dt"
    creditor: str = "cbuae-dt"
    e2e: str = "E2E-1"
    pvp_id: str = "PVP-1"
    msg_id: str = ""
    condition: str = CONDITION

    def original(self) -> OriginalRef:
        return OriginalRef(self.msg_id, "pacs.009.001.08", self.e2e, self.uetr)


@dataclass
class InProcessPvP:
    url: str
    engine: Engine
    runtime: PvPRuntime
    operator: httpx.Client
    anonymous: httpx.Client
    connector: FakeConnector
    tmp: Path

    # --- building connector messages ----------------------------------------

    def envelope(self, message: Message, identity: SigningIdentity = CONNECTOR_ID) -> bytes:
        header = header_for(message, from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC)
        return sign_envelope(build(message, header), identity.key_pem, identity.cert_pem)

    def sign(self, raw: bytes, identity: SigningIdentity = CONNECTOR_ID) -> bytes:
        """An envelope built elsewhere, signed as the connector signs (or as ``identity``)."""
        return sign_envelope(raw, identity.key_pem, identity.cert_pem)

    def post(self, raw: bytes) -> httpx.Response:
        return self.anonymous.post(
            "/iso20022/messages", content=raw, headers={"content-type": "application/xml"}
        )

    def pacs009(
        self,
        *legs: Leg,
        deadline_in: float = 60.0,
        mid: str | None = None,
        created_ago: float = 0.0,
    ) -> bytes:
        mid = mid or msg_id("P9")
        now = datetime.now(UTC)
        due = now + timedelta(seconds=deadline_in)
        now -= timedelta(seconds=created_ago)
        txs = []
        for leg in legs:
            leg.msg_id = mid
            txs.append(
                CreditTransfer(
                    end_to_end_id=leg.e2e,
                    uetr=leg.uetr,
                    amount=Money(leg.amount, "KZT"),
                    settlement_date=due.date(),
                    debtor_bic=BANK_BIC,
                    debtor_account=leg.debtor,
                    debtor_agent_bic=GATEWAY_BIC,
                    creditor_agent_bic=GATEWAY_BIC,
                    creditor_bic=FOREIGN_BIC,
                    creditor_account=leg.creditor,
                    deadline=due.timetz(),
                    pvp=PvPTerms(leg.pvp_id, "DT", leg.condition),
                )
            )
        return self.envelope(Pacs009(mid, now, tuple(txs)))

    def fulfil(self, *legs: Leg, secret: bytes = SECRET) -> bytes:
        """The connector's COMMIT. The terms it echoes are self-consistent (the message layer
        refuses Flfmt that does not hash to Cond); the gateway checks its own stored condition."""
        cond = hashlib.sha256(secret).hexdigest()
        sts = tuple(
            TransactionStatus(
                leg.original(),
                "ACSP",
                pvp=PvPTerms(leg.pvp_id, "DT", cond, secret.hex()),
            )
            for leg in legs
        )
        return self.envelope(Pacs002(msg_id("F2"), datetime.now(UTC), sts))

    def answer(self, leg: Leg, status: str, reason: str | None = None) -> bytes:
        st = TransactionStatus(leg.original(), status, reason)  # type: ignore[arg-type]
        return self.envelope(Pacs002(msg_id("A2"), datetime.now(UTC), (st,)))

    def camt056(self, leg: Leg) -> bytes:
        now = datetime.now(UTC)
        req = CancellationRequest(
            msg_id("X"), leg.original(), Money(leg.amount, "KZT"), reason="TMOT"
        )
        return self.envelope(Camt056(msg_id("C56"), CONNECTOR_BIC, GATEWAY_BIC, now, (req,)))

    def pacs028(self, leg: Leg) -> bytes:
        return self.envelope(
            Pacs028(msg_id("S28"), datetime.now(UTC), (StatusRequest(leg.original()),))
        )

    # --- ledger and state ----------------------------------------------------

    def wallet(self, wallet_id: str, owner: str | None = None, fund: int = 0) -> None:
        r = self.operator.post(
            "/v1/wallets",
            json={"id": wallet_id, "kind": "participant", "owner": owner or wallet_id},
        )
        assert r.status_code in (200, 201), r.text
        if fund:
            r = self.operator.post(
                "/v1/issuances",
                json={"id": msg_id("iss"), "wallet_id": wallet_id, "amount": fund},
            )
            assert r.status_code == 201, r.text

    def balance(self, wallet_id: str) -> tuple[int, int]:
        body = self.operator.get(f"/v1/wallets/{wallet_id}").json()
        return body["posted"], body["reserved"]

    def pvp(self, ref: str) -> dict[str, Any]:
        r = self.operator.get(f"/v1/pvp/{ref}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def leg_state(self, leg_uetr: str) -> str:
        state: str = self.pvp(leg_uetr)["legs"][0]["state"]
        return state

    def wait_state(self, leg_uetr: str, state: str, timeout: float = 10.0) -> dict[str, Any]:
        def in_state() -> dict[str, Any] | None:
            r = self.operator.get(f"/v1/pvp/{leg_uetr}")
            if r.status_code == 200 and r.json()["legs"][0]["state"] == state:
                body: dict[str, Any] = r.json()
                return body
            return None

        return wait_for(
            in_state, lambda: f"leg {leg_uetr} {state}: {self.pvp(leg_uetr)}", timeout=timeout
        )

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"})


def funded(w: InProcessPvP, amount: int = 1_000_000) -> None:
    """The DT wallets of the two banks, the debtor's funded with ``amount``."""
    w.wallet("hsbk-dt", fund=amount)
    w.wallet("cbuae-dt")


def refusal(r: httpx.Response) -> Admi002:
    """The admi.002 the gateway refused a message with (400, signed XML)."""
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/xml")
    msg = parse(r.content).message
    assert isinstance(msg, Admi002)
    return msg


@contextmanager
def serve_inprocess_pvp(
    engine: Engine, tmp_path: Path, pvp: dict[str, Any], **settings: Any
) -> Iterator[InProcessPvP]:
    """The gateway with its PvP runtime (``pvp`` settings), pinned to a fake connector it serves."""
    runtime_box: list[PvPRuntime] = []
    fake = FakeConnector(gateway_cert=lambda: runtime_box[0].keyring.identity().cert_pem)
    with serve_connector(fake) as connector_url:
        fake.url = connector_url
        loaded = load_settings(
            environ={},
            data_dir=str(tmp_path / "data"),
            database={"url": str(engine.url)},
            iso20022={"connector_cert_pem": CONNECTOR_ID.cert_pem.decode()},
            connector={"url": connector_url, "gateway_bic": GATEWAY_BIC},
            pvp={"connector_bic": CONNECTOR_BIC, **pvp},
            **settings,
        )
        runtime = PvPRuntime(loaded, engine, idle=0.05)
        runtime_box.append(runtime)
        token = auth.create_key(engine, "operator", label="pvp-tests").token
        with serve_in_thread(create_app(loaded, engine, pvp=runtime)) as url:
            operator = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            anonymous = httpx.Client(base_url=url, timeout=10)
            try:
                yield InProcessPvP(url, engine, runtime, operator, anonymous, fake, tmp_path)
            finally:
                operator.close()
                anonymous.close()
