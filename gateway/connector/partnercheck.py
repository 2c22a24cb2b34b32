"""``dt-gateway partner-check``: the connector's side of a PvP, played against a partner
central bank's own endpoint, step by step, with a verdict on each step.

The check is the connector for the partner: it signs what it sends with its own key (served
at ``GET /v1/certificate`` on ``--listen``, to pin), posts envelopes to ``{endpoint}/iso20022/
messages``, and receives the partner's on ``POST /iso20022/messages`` of ``--listen``, where
it verifies them against the partner's certificate (``--cert``) as the connector does, and
answers a partner's ``pacs.028`` with what it decided. The scenarios are in
:mod:`gateway.connector.partnerscenarios`; this module holds the session they run in:

- :class:`Inbox`: what the partner sent, waited for by UETR;
- :class:`Session`: sending, expecting and recording steps; :class:`Report`: the verdicts,
  printed as each step ends (as text, or as JSON lines for a pipeline), with a summary and the
  exit code (1 on any failure), in the manner of Mojaloop's Testing Toolkit (per request, its
  assertions; then totals).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

import httpx

from gateway.iso20022 import (
    Admi002,
    KeyPair,
    Message,
    MessageRejected,
    OriginalRef,
    Pacs002,
    Pacs009,
    Pacs028,
    TransactionStatus,
    admi002_for,
    build,
    header_for,
    parse,
)


@dataclass(frozen=True, slots=True)
class Target:
    """The partner under test, and the accounts its scenarios use."""

    endpoint: str
    bic: str
    currency: str
    cert_pem: str
    debtor: tuple[str, str] = ("EBILAEAD", "EBIL-AED")
    """(BIC, account) the partner's legs debit: funded for a few ``amount``s."""
    creditor: tuple[str, str] = ("HSBKKZKX", "HSBK-AED")
    unknown_account: str = "PARTNER-CHECK-NONE"
    """An account the partner does not have: its pacs.009 must be rejected."""
    amount: int = 100
    """Minor units per leg."""


@dataclass(frozen=True, slots=True)
class Received:
    index: int
    message: Message


def uetrs_of(msg: Message) -> list[str]:
    if isinstance(msg, Pacs009):
        return [tx.uetr for tx in msg.transactions]
    transactions = getattr(msg, "transactions", ())
    return [tx.original.uetr for tx in transactions]


def describe(msg: Message, uetr: str | None = None) -> str:
    """One line for a report: type, status and reason about ``uetr``, MsgId."""
    parts = [msg.MESSAGE_ID[:8]]
    if isinstance(msg, Admi002):
        parts.append(f"{msg.reason} {msg.description or ''}".strip())
    for tx in getattr(msg, "transactions", ()):
        original = getattr(tx, "original", None)
        if uetr is None or (original is not None and original.uetr == uetr):
            status = getattr(tx, "status", None)
            reason = getattr(tx, "reason", None)
            parts.extend(str(p) for p in (status, reason) if p)
    if isinstance(msg, Pacs002) and any(t.pvp and t.pvp.fulfilment for t in msg.transactions):
        parts.append("+Flfmt")
    return " ".join(parts) + f" (MsgId {msg.id})"


class Inbox:
    """What the partner posted, in order; waited for by UETR. Answers ``pacs.028`` with the
    decision its ``answer_status`` callback finds (PDNG if none)."""

    def __init__(
        self,
        target: Target,
        signer: KeyPair,
        bic: str,
        answer_status: Callable[[Pacs028], None],
    ) -> None:
        self.target = target
        self.signer = signer
        self.bic = bic
        self.answer_status = answer_status
        self.messages: list[Message] = []
        self.refused: list[str] = []
        self._changed = threading.Condition()
        self._seen: dict[str, str] = {}

    def receive(self, raw: bytes) -> tuple[int, bytes, str]:
        """(HTTP status, body, content type) for a posted envelope."""

        def pinned(bic: str) -> str | None:
            return self.target.cert_pem if bic == self.target.bic else None

        try:
            msg = parse(raw, certificate_of=pinned).message
        except MessageRejected as exc:
            with self._changed:
                self.refused.append(f"{exc.code} {exc.detail}")
                self._changed.notify_all()
            admi = admi002_for(exc)
            header = header_for(admi, from_bic=self.bic, to_bic=self.target.bic)
            return 400, build(admi, header, signer=self.signer), "application/xml"
        sha = hashlib.sha256(raw).hexdigest()
        with self._changed:
            duplicate = self._seen.get(msg.id) == sha
            self._seen[msg.id] = sha
            if not duplicate:
                self.messages.append(msg)
                self._changed.notify_all()
        if isinstance(msg, Pacs028) and not duplicate:
            threading.Thread(target=self.answer_status, args=(msg,), daemon=True).start()
        ack = {"msg_id": msg.id, "sha256": sha, "duplicate": duplicate}
        return 202, json.dumps(ack).encode(), "application/json"

    def mark(self) -> int:
        with self._changed:
            return len(self.messages)

    def wait(
        self, uetr: str, since: int, want: Callable[[Message], bool], timeout: float
    ) -> tuple[Message | None, list[Message]]:
        """The first message about ``uetr`` from index ``since`` that ``want`` accepts, and
        every message about it received meanwhile (what the report shows if none did)."""
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                about = [m for m in self.messages[since:] if uetr in uetrs_of(m)]
                for m in about:
                    if want(m):
                        return m, about
                left = end - time.monotonic()
                if left <= 0:
                    return None, about
                self._changed.wait(left)


def serve(inbox: Inbox, host: str, port: int, cert_pem: str) -> ThreadingHTTPServer:
    """``POST /iso20022/messages`` and ``GET /v1/certificate`` on ``host:port``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/v1/certificate":
                self._answer(404, b"{}", "application/json")
                return
            body = {"bic": inbox.bic, "certificate_pem": cert_pem}
            self._answer(200, json.dumps(body).encode(), "application/json")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path != "/iso20022/messages":
                self._answer(404, b"{}", "application/json")
                return
            self._answer(*inbox.receive(raw))

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="partner-check").start()
    return server


@dataclass(slots=True)
class Verdict:
    case: str
    step: str
    ok: bool
    detail: str = ""


@dataclass(slots=True)
class Report:
    """The verdicts, written as they come: as text, or with ``as_json`` one JSON object per
    step (``"type": "step"``) and a last one with the totals (``"type": "summary"``)."""

    out: TextIO
    as_json: bool = False
    verdicts: list[Verdict] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)

    def begin(self, case: str) -> None:
        self.cases.append(case)
        if not self.as_json:
            self.out.write(f"\n[{len(self.cases)}] {case}\n")

    def record(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)
        mark = "PASS" if verdict.ok else "FAIL"
        if self.as_json:
            line = {"type": "step", "case_number": len(self.cases), "case": verdict.case}
            line |= {"step": verdict.step, "result": mark, "detail": verdict.detail}
            self.out.write(json.dumps(line) + "\n")
        else:
            self.out.write(f"    {mark}  {verdict.step}\n")
            if not verdict.ok:
                for text in verdict.detail.splitlines():
                    self.out.write(f"          {text}\n")
        self.out.flush()

    def failed_cases(self) -> list[str]:
        return list(dict.fromkeys(v.case for v in self.verdicts if not v.ok))

    def summary(self) -> int:
        """Write the totals; the exit code: 1 if any step failed, else 0."""
        failed = self.failed_cases()
        steps = len(self.verdicts)
        passed = sum(v.ok for v in self.verdicts)
        result = "FAIL" if failed else "PASS"
        if self.as_json:
            totals = {
                "type": "summary",
                "result": result,
                "cases": len(self.cases),
                "cases_passed": len(self.cases) - len(failed),
                "cases_failed": len(failed),
                "steps": steps,
                "steps_passed": passed,
                "steps_failed": steps - passed,
                "failed_cases": failed,
            }
            self.out.write(json.dumps(totals) + "\n")
        else:
            self.out.write(
                f"\nTest cases: {len(self.cases)}, passed {len(self.cases) - len(failed)}, "
                f"failed {len(failed)}\nSteps: {steps}, passed {passed}, failed {steps - passed}\n"
            )
            for case in failed:
                self.out.write(f"FAILED: {case}\n")
            self.out.write(f"RESULT: {result}\n")
        self.out.flush()
        return 1 if failed else 0


class StepFailed(Exception):
    """A step failed: the rest of its test case depends on it and is skipped."""


@dataclass(slots=True)
class Leg:
    """One leg the check instructed: what answers and decisions refer to."""

    uetr: str
    pacs009: Pacs009
    condition: str
    secret: str
    pvp_id: str

    @property
    def original(self) -> OriginalRef:
        tx = self.pacs009.transactions[0]
        return OriginalRef(self.pacs009.msg_id, Pacs009.MESSAGE_ID, tx.end_to_end_id, self.uetr)


def new_id(prefix: str) -> str:
    return (prefix + uuid.uuid4().hex)[:35]


def now() -> datetime:
    return datetime.now(UTC)


def deadline_in(seconds: float) -> datetime:
    """``seconds`` from now (negative: ago), to the millisecond, as TillTm carries it."""
    at = now() + timedelta(seconds=seconds)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


@dataclass(slots=True)
class Outcome:
    status: int
    body: bytes

    def admi002_reason(self) -> str | None:
        try:
            msg = parse(self.body).message
        except MessageRejected:
            return None
        return msg.reason if isinstance(msg, Admi002) else None

    def duplicate(self) -> bool | None:
        try:
            return bool(json.loads(self.body)["duplicate"])
        except (ValueError, KeyError, TypeError):
            return None


class Session:
    """Sending to the partner, expecting its answers, and recording each step's verdict."""

    def __init__(
        self, target: Target, inbox: Inbox, signer: KeyPair, report: Report, timeout: float
    ) -> None:
        self.target = target
        self.inbox = inbox
        self.signer = signer
        self.report = report
        self.timeout = timeout
        self.case = ""
        self.decisions: dict[str, TransactionStatus] = {}
        self.http = httpx.Client(timeout=timeout)

    @contextmanager
    def test_case(self, name: str) -> Iterator[None]:
        self.case = name
        self.report.begin(name)
        try:
            yield
        except StepFailed:
            pass
        except Exception as exc:  # the partner's answer broke the check's own reading
            self.report.record(Verdict(name, "(the test case stopped)", False, repr(exc)))

    def passed(self, step: str) -> None:
        self.report.record(Verdict(self.case, step, True))

    def fail(self, step: str, detail: str) -> StepFailed:
        self.report.record(Verdict(self.case, step, False, detail))
        return StepFailed(step)

    def post(self, raw: bytes) -> Outcome:
        url = self.target.endpoint.rstrip("/") + "/iso20022/messages"
        try:
            r = self.http.post(url, content=raw, headers={"Content-Type": "application/xml"})
        except httpx.HTTPError as exc:
            return Outcome(0, repr(exc).encode())
        return Outcome(r.status_code, r.content)

    def envelope(self, msg: Message, signer: KeyPair | None = None) -> bytes:
        header = header_for(msg, from_bic=self.inbox.bic, to_bic=self.target.bic)
        return build(msg, header, signer=signer or self.signer)

    def send(self, step: str, msg: Message, *, raw: bytes | None = None) -> Outcome:
        """Post ``msg`` (or ``raw``, its bytes as given); the step passes on 202."""
        outcome = self.post(raw if raw is not None else self.envelope(msg))
        if outcome.status != 202:
            body = outcome.body.decode("utf-8", "replace")[:500]
            raise self.fail(step, f"sent {describe(msg)}: HTTP {outcome.status}\n{body}")
        self.passed(step)
        return outcome

    def expect(
        self,
        step: str,
        uetr: str,
        since: int,
        want: Callable[[Message], bool],
        expected: str,
        timeout: float | None = None,
        content: Callable[[Message], bool] | None = None,
    ) -> Message:
        """Wait for the partner's message about ``uetr`` that ``want`` accepts; with
        ``content``, the step passes only if that message also satisfies it."""
        wait = self.timeout if timeout is None else timeout
        got, about = self.inbox.wait(uetr, since, want, wait)
        if got is not None and (content is None or content(got)):
            self.passed(step)
            return got
        if got is not None:
            raise self.fail(step, f"expected {expected}\ngot {describe(got, uetr)}")
        seen = "\n".join("got " + describe(m, uetr) for m in about) or "got nothing"
        raise self.fail(step, f"expected {expected} for UETR {uetr}\n{seen}")

    def answer_status(self, request: Pacs028) -> None:
        """The partner asked for the status of legs: the decision, else PDNG."""
        answers = []
        for req in request.transactions:
            decided = self.decisions.get(req.original.uetr)
            answers.append(decided or TransactionStatus(original=req.original, status="PDNG"))
        reply = Pacs002(msg_id=new_id("PC"), created=now(), transactions=tuple(answers))
        self.post(self.envelope(reply))

    def close(self) -> None:
        self.http.close()


__all__ = [
    "Inbox",
    "Leg",
    "Outcome",
    "Report",
    "Session",
    "StepFailed",
    "Target",
    "Verdict",
    "deadline_in",
    "describe",
    "new_id",
    "now",
    "serve",
]
