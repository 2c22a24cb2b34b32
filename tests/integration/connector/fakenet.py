"""A tiny fake DT network (a test double for the gateway) that speaks to the connector over
HTTP like a network would: verifies the connector's signature, parses and validates every
message with ``gateway.iso20022.parse``, acknowledges at once, answers asynchronously."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from litestar import Litestar, Request, Response, post

from gateway.connector.keys import generate_identity
from gateway.iso20022 import (
    Camt029,
    Camt056,
    CancellationResolution,
    Message,
    MessageRejected,
    OriginalRef,
    Pacs002,
    Pacs009,
    Pacs028,
    StatusRequest,
    TransactionStatus,
    admi002_for,
    build,
    header_for,
    parse,
    sign_envelope,
)

BIC = "NBKZKZKAXXX"
_SEND_ATTEMPTS = 25  # 5 s: a restarting connector is back by then


def _id() -> str:
    return "F" + uuid.uuid4().hex[:30]


@dataclass
class Leg:
    uetr: str
    msg_id: str
    end_to_end_id: str
    state: str  # locked | rejected | settled | released | cancelled


@dataclass
class FakeNetwork:
    connector_url: str
    connector_cert: str
    reject_reason: str | None = None
    silent: bool = False
    """Receive pacs.009 but never answer (a late network)."""
    key_pem: str = ""
    cert_pem: str = ""
    url: str = ""
    received: list[tuple[str, Message]] = field(default_factory=list)
    duplicates: int = 0
    legs: dict[str, Leg] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.key_pem, self.cert_pem = generate_identity("fake DT network")
        self._work: queue.Queue[Message | None] = queue.Queue()
        self._client = httpx.Client(base_url=self.connector_url, timeout=10)
        self._thread = threading.Thread(target=self._worker, daemon=True)
        self._thread.start()

    # --- receiving ----------------------------------------------------------------------

    def app(self) -> Litestar:
        @post("/iso20022/messages")
        async def messages(request: Request[Any, Any, Any]) -> Response[Any]:
            raw = await request.body()
            try:
                parsed = parse(raw, cert_pem=self.connector_cert)
            except MessageRejected as exc:
                admi = admi002_for(exc)
                body = build(admi, header_for(admi, from_bic=BIC, to_bic="SWHQBEBBXXX"))
                return Response(body, status_code=400, media_type="application/xml")
            msg = parsed.message
            sha = hashlib.sha256(raw).hexdigest()
            with self.lock:
                dup = self.seen.get(msg.id) == sha
                self.seen[msg.id] = sha
                if dup:
                    self.duplicates += 1
                else:
                    self.received.append((msg.MESSAGE_ID, msg))
            if not dup:
                self._work.put(msg)
            return Response({"msg_id": msg.id, "sha256": sha, "duplicate": dup}, status_code=202)

        return Litestar([messages])

    def of_type(self, name: str) -> list[Any]:
        with self.lock:
            return [m for n, m in self.received if n.startswith(name)]

    def close(self) -> None:
        self._work.put(None)
        self._client.close()

    # --- answering ----------------------------------------------------------------------

    def send(self, msg: Message) -> httpx.Response:
        raw = build(msg, header_for(msg, from_bic=BIC, to_bic="SWHQBEBBXXX"))
        raw = sign_envelope(raw, self.key_pem, self.cert_pem)
        # Like a network's outbox, try again when no answer came: a connection kept alive
        # across a restart of the connector fails its next post ("Server disconnected"), and
        # an answer lost that way would wait for the connector's redelivery (30 s). The
        # connector deduplicates what arrives twice.
        for _ in range(_SEND_ATTEMPTS - 1):
            try:
                return self._post(raw)
            except httpx.TransportError:
                time.sleep(0.2)
        return self._post(raw)  # the last attempt: its failure is the test's to see

    def _post(self, raw: bytes) -> httpx.Response:
        return self._client.post(
            "/iso20022/messages", content=raw, headers={"Content-Type": "application/xml"}
        )

    def status_request(self, uetr: str) -> httpx.Response:
        leg = self.legs[uetr]
        ref = OriginalRef(leg.msg_id, "pacs.009.001.08", leg.end_to_end_id, uetr)
        return self.send(
            Pacs028(_id(), datetime.now(UTC), (StatusRequest(original=ref, request_id=_id()),))
        )

    def status_request_raw(self, uetr: str) -> httpx.Response:
        """A pacs.028 for a UETR this fake never saw."""
        ref = OriginalRef("F0", "pacs.009.001.08", "e2e", uetr)
        return self.send(Pacs028(_id(), datetime.now(UTC), (StatusRequest(original=ref),)))

    def answer_pacs009(self, msg: Pacs009, reason: str | None = None) -> None:
        statuses = []
        for tx in msg.transactions:
            reason = reason or self.reject_reason
            self.legs[tx.uetr] = Leg(
                tx.uetr, msg.msg_id, tx.end_to_end_id, "rejected" if reason else "locked"
            )
            statuses.append(
                TransactionStatus(
                    original=OriginalRef(msg.msg_id, msg.MESSAGE_ID, tx.end_to_end_id, tx.uetr),
                    status="RJCT" if reason else "ACSP",
                    reason=reason,
                )
            )
        self.send(Pacs002(_id(), datetime.now(UTC), tuple(statuses)))

    def _worker(self) -> None:
        while (msg := self._work.get()) is not None:
            try:
                self._handle(msg)
            except Exception as exc:  # the test sees the missing answer
                print("fake network failed:", repr(exc))

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Pacs009):
            if not self.silent:
                self.answer_pacs009(msg)
            else:
                for tx in msg.transactions:
                    self.legs[tx.uetr] = Leg(tx.uetr, msg.msg_id, tx.end_to_end_id, "received")
        elif isinstance(msg, Pacs002):
            out = []
            for st in msg.transactions:
                leg = self.legs.get(st.original.uetr)
                if st.pvp is not None and st.pvp.fulfilment and leg and leg.state == "locked":
                    leg.state = "settled"
                if st.pvp is not None and st.pvp.fulfilment:
                    ok = leg is not None and leg.state == "settled"
                    out.append(
                        TransactionStatus(
                            original=st.original,
                            status="ACSC" if ok else "RJCT",
                            reason=None if ok else "NARR",
                        )
                    )
            if out:
                self.send(Pacs002(_id(), datetime.now(UTC), tuple(out)))
        elif isinstance(msg, Camt056):
            for tx in msg.transactions:
                leg = self.legs.get(tx.original.uetr)
                refused = leg is not None and leg.state == "settled"
                if leg is not None and not refused:
                    leg.state = "released"
                self.send(
                    Camt029(
                        _id(),
                        BIC,
                        msg.assigner_bic,
                        datetime.now(UTC),
                        "RJCR" if refused else "CNCL",
                        (
                            CancellationResolution(
                                original=tx.original, status="RJCR" if refused else "ACCR"
                            ),
                        ),
                    )
                )
