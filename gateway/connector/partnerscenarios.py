"""The standard scenarios of ``dt-gateway partner-check``, each a test case of steps run in a
:class:`~gateway.connector.partnercheck.Session`: the connector's messages to the partner's
leg of a PvP, and what the protocol (``docs/pvp-protocol.md``) requires it to answer. A step
that fails ends its test case; the next one starts afresh with a new leg."""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from gateway.connector.keys import generate_identity, load_or_create_identity
from gateway.connector.partnercheck import (
    Inbox,
    Leg,
    Report,
    Session,
    Target,
    deadline_in,
    new_id,
    now,
    serve,
)
from gateway.iso20022 import (
    Camt029,
    Camt056,
    CancellationRequest,
    CreditTransfer,
    Message,
    Money,
    OriginalRef,
    Pacs002,
    Pacs009,
    Pacs028,
    PvPTerms,
    StatusRequest,
    TransactionStatus,
)

PAST_SECONDS = 30.0
"""How long ago the past-deadline leg's TillTm was: past any partner's margin and clock skew."""


class _Signer:
    def __init__(self) -> None:
        self.key_pem, self.cert_pem = generate_identity("not the connector")


def new_leg(s: Session, *, account: str | None = None, seconds: float | None = None) -> Leg:
    t = s.target
    secret = secrets.token_hex(32)
    condition = hashlib.sha256(bytes.fromhex(secret)).hexdigest()
    pvp_id, uetr = new_id("PVP-CHECK-"), str(uuid.uuid4())
    deadline = deadline_in(seconds if seconds is not None else max(60.0, 4 * s.timeout))
    tx = CreditTransfer(
        end_to_end_id=new_id("check-"),
        uetr=uetr,
        amount=Money(t.amount, t.currency),
        settlement_date=deadline.date(),
        deadline=deadline.timetz(),
        debtor_bic=t.debtor[0],
        debtor_account=account or t.debtor[1],
        debtor_agent_bic=t.debtor[0],
        creditor_agent_bic=t.creditor[0],
        creditor_bic=t.creditor[0],
        creditor_account=t.creditor[1],
        pvp=PvPTerms(pvp_id=pvp_id, leg="FX", condition=condition),
    )
    msg = Pacs009(msg_id=new_id("PC"), created=now(), transactions=(tx,))
    return Leg(uetr, msg, condition, secret, pvp_id)


def _status_of(msg: Message, uetr: str) -> str | None:
    for tx in getattr(msg, "transactions", ()):
        if tx.original.uetr == uetr:
            return str(tx.status)
    return None


def _reason_of(msg: Message, uetr: str) -> str | None:
    for tx in getattr(msg, "transactions", ()):
        if tx.original.uetr == uetr:
            return getattr(tx, "reason", None)
    return None


def expect_answer(
    s: Session,
    step: str,
    leg_uetr: str,
    since: int,
    kind: type[Message],
    status: str,
    reason: str | None = None,
    timeout: float | None = None,
) -> Message:
    """The partner's first ``kind`` about the leg; it must carry ``status`` (and ``reason``)."""
    expected = f"{kind.MESSAGE_ID[:8]} {status}" + (f" {reason}" if reason else "")

    def about(m: Message) -> bool:
        return isinstance(m, kind) and _status_of(m, leg_uetr) is not None

    def right(m: Message) -> bool:
        return _status_of(m, leg_uetr) == status and (
            not reason or _reason_of(m, leg_uetr) == reason
        )

    return s.expect(step, leg_uetr, since, about, expected, timeout, content=right)


def lock(s: Session, leg: Leg, *, status: str = "ACSP", reason: str | None = None) -> None:
    since = s.inbox.mark()
    s.send("pacs.009 accepted (202)", leg.pacs009)
    word = "locked" if status == "ACSP" else "rejected"
    expect_answer(s, f"pacs.002 {status}: {word}", leg.uetr, since, Pacs002, status, reason)


def settle(s: Session, leg: Leg, *, again: bool = False) -> None:
    terms = PvPTerms(leg.pvp_id, "FX", leg.condition, fulfilment=leg.secret)
    decision = TransactionStatus(original=leg.original, status="ACSP", pvp=terms)
    s.decisions[leg.uetr] = decision
    since = s.inbox.mark()
    msg = Pacs002(msg_id=new_id("PC"), created=now(), transactions=(decision,))
    label = "COMMIT re-sent as a new message" if again else "COMMIT (pacs.002 ACSP + Flfmt)"
    s.send(f"{label} accepted (202)", msg)
    expect_answer(s, "pacs.002 ACSC: settled", leg.uetr, since, Pacs002, "ACSC")


def cancel(s: Session, leg: Leg, reason: str, *, refused: bool = False) -> None:
    s.decisions.setdefault(leg.uetr, TransactionStatus(leg.original, "RJCT", reason))
    tx = leg.pacs009.transactions[0]
    request = CancellationRequest(
        cancellation_id=new_id("PX"),
        original=leg.original,
        amount=tx.amount,
        settlement_date=tx.settlement_date,
        reason=reason,
    )
    msg = Camt056(new_id("PC"), s.inbox.bic, s.target.bic, now(), (request,))
    since = s.inbox.mark()
    s.send(f"camt.056 ({reason}) accepted (202)", msg)
    status, word = ("RJCR", "refused, already settled") if refused else ("ACCR", "released")
    expect_answer(s, f"camt.029 {status}: {word}", leg.uetr, since, Camt029, status)


def ask_status(s: Session, original: OriginalRef, status: str, reason: str | None = None) -> None:
    request = StatusRequest(original=original, request_id=new_id("PS"))
    since = s.inbox.mark()
    s.send("pacs.028 accepted (202)", Pacs028(new_id("PC"), now(), (request,)))
    step = f"pacs.002 {status}{' ' + reason if reason else ''} answers the pacs.028"
    expect_answer(s, step, original.uetr, since, Pacs002, status, reason)


def refused_with(s: Session, step: str, raw: bytes, code: str) -> None:
    outcome = s.post(raw)
    got = outcome.admi002_reason()
    if outcome.status == 400 and got == code:
        s.passed(step)
        return
    body = outcome.body.decode("utf-8", "replace")[:300]
    raise s.fail(step, f"expected HTTP 400 + admi.002 {code}\ngot HTTP {outcome.status} {body}")


# --- the test cases -------------------------------------------------------------------


def commit(s: Session) -> None:
    leg = new_leg(s)
    lock(s, leg)
    settle(s, leg)


def abort_on_the_dt_side(s: Session) -> None:
    leg = new_leg(s)
    lock(s, leg)
    cancel(s, leg, "AM04")
    ask_status(s, leg.original, "RJCT", "DS02")


def partner_rejection(s: Session) -> None:
    leg = new_leg(s, account=s.target.unknown_account)
    lock(s, leg, status="RJCT")
    ask_status(s, leg.original, "RJCT")


def duplicates(s: Session) -> None:
    leg = new_leg(s)
    raw = s.envelope(leg.pacs009)
    since = s.inbox.mark()
    s.send("pacs.009 accepted (202)", leg.pacs009, raw=raw)
    again = s.post(raw)
    if again.status == 202 and again.duplicate() is True:
        s.passed('the same bytes again: 202 {"duplicate": true}')
    else:
        raise s.fail(
            "the same bytes again: 202 duplicate",
            f"got HTTP {again.status} {again.body[:300]!r}",
        )
    expect_answer(s, "pacs.002 ACSP: locked once", leg.uetr, since, Pacs002, "ACSP")
    tx = leg.pacs009.transactions[0]
    changed = replace(tx, amount=Money(tx.amount.minor + 1, tx.amount.currency))
    other_raw = s.envelope(replace(leg.pacs009, transactions=(changed,)))
    refused_with(s, "the same MsgId with other bytes: admi.002 DU01", other_raw, "DU01")
    second = replace(leg.pacs009, msg_id=new_id("PC"))
    refused_with(s, "a second pacs.009 for the UETR: admi.002 AM05", s.envelope(second), "AM05")
    settle(s, leg)
    settle(s, leg, again=True)


def reordering(s: Session) -> None:
    leg = new_leg(s)
    cancel(s, leg, "TMOT")
    since = s.inbox.mark()
    s.send("the pacs.009 after its camt.056 accepted (202)", leg.pacs009)
    step = "pacs.002 RJCT DS02: nothing locked"
    expect_answer(s, step, leg.uetr, since, Pacs002, "RJCT", "DS02")


def past_deadline(s: Session) -> None:
    leg = new_leg(s, seconds=-PAST_SECONDS)
    since = s.inbox.mark()
    s.send(f"a pacs.009 whose TillTm passed {PAST_SECONDS:.0f} s ago accepted (202)", leg.pacs009)
    step = "pacs.002 RJCT TM01: refused, nothing locked"
    expect_answer(s, step, leg.uetr, since, Pacs002, "RJCT", "TM01")
    ask_status(s, leg.original, "RJCT", "TM01")


def wrong_fulfilment(s: Session) -> None:
    leg = new_leg(s)
    lock(s, leg)
    wrong = secrets.token_hex(32)
    terms = PvPTerms(leg.pvp_id, "FX", leg.condition, fulfilment=wrong)
    decision = TransactionStatus(original=leg.original, status="ACSP", pvp=terms)
    since = s.inbox.mark()
    msg = Pacs002(msg_id=new_id("PC"), created=now(), transactions=(decision,))
    s.send("COMMIT with a fulfilment that does not match accepted (202)", msg)
    step = "pacs.002 RJCT CH16: nothing settled"
    expect_answer(s, step, leg.uetr, since, Pacs002, "RJCT", "CH16")
    ask_status(s, leg.original, "ACSP")  # still locked
    settle(s, leg)


def late_fulfilment(s: Session, late_seconds: float) -> None:
    leg = new_leg(s, seconds=late_seconds)
    lock(s, leg)
    deadline = leg.pacs009.transactions[0]
    assert deadline.deadline is not None
    time.sleep(late_seconds + 1.0)
    s.passed(f"waited past the deadline ({late_seconds:.0f} s): the lock stays")
    settle(s, leg)


def camt056_after_settlement(s: Session) -> None:
    leg = new_leg(s)
    lock(s, leg)
    settle(s, leg)
    cancel(s, leg, "TMOT", refused=True)
    ask_status(s, leg.original, "ACSC")


def status_at_each_stage(s: Session) -> None:
    unknown = OriginalRef(new_id("PC"), Pacs009.MESSAGE_ID, "unknown", str(uuid.uuid4()))
    ask_status(s, unknown, "RJCT", "NARR")
    leg = new_leg(s)
    lock(s, leg)
    ask_status(s, leg.original, "ACSP")
    settle(s, leg)
    ask_status(s, leg.original, "ACSC")


def bad_signature(s: Session) -> None:
    leg = new_leg(s)
    forged = s.envelope(leg.pacs009, signer=_Signer())
    refused_with(s, "signed by another key: admi.002 DS0B", forged, "DS0B")
    unsigned = s.envelope(leg.pacs009).split(b"<Sgntr>")[0]
    unsigned += b"</AppHdr>" + s.envelope(leg.pacs009).split(b"</AppHdr>", 1)[1]
    refused_with(s, "unsigned: admi.002 DS0B", unsigned, "DS0B")
    ask_status(s, leg.original, "RJCT", "NARR")  # nothing was locked


def scenarios(late_seconds: float) -> list[tuple[str, Callable[[Session], None]]]:
    return [
        ("commit: lock, COMMIT, settled", commit),
        ("abort on the DT side: lock, camt.056, released", abort_on_the_dt_side),
        ("partner rejection: a leg it cannot lock", partner_rejection),
        ("duplicates: the same message twice, a MsgId or UETR reused", duplicates),
        ("reordering: the camt.056 before its pacs.009", reordering),
        ("past deadline: a pacs.009 whose TillTm has passed", past_deadline),
        ("wrong fulfilment: a COMMIT whose Flfmt does not match", wrong_fulfilment),
        ("late fulfilment: COMMIT after the deadline", lambda s: late_fulfilment(s, late_seconds)),
        ("camt.056 after settlement", camt056_after_settlement),
        ("pacs.028 at each stage", status_at_each_stage),
        ("bad signature", bad_signature),
    ]


class _Identity:
    def __init__(self, key_pem: str, cert_pem: str) -> None:
        self.key_pem, self.cert_pem = key_pem, cert_pem


def run_check(
    target: Target,
    *,
    listen: tuple[str, int],
    bic: str = "SWHQBEBBXXX",
    identity: tuple[str, str] | None = None,
    timeout: float = 10.0,
    late_seconds: float = 3.0,
    out: TextIO | None = None,
    as_json: bool = False,
) -> int:
    """Every scenario against ``target``, reported on ``out`` (``as_json``: JSON lines, the
    opening lines then on stderr); 0 if all passed, else 1."""
    out = out or sys.stdout
    me = _Identity(*(identity or generate_identity(f"partner-check {bic}")))
    report = Report(out, as_json=as_json)
    holder: list[Session] = []
    inbox = Inbox(target, me, bic, lambda request: holder[0].answer_status(request))
    server = serve(inbox, listen[0], listen[1], me.cert_pem)
    session = Session(target, inbox, me, report, timeout)
    holder.append(session)
    host, port = server.server_address[:2]
    (sys.stderr if as_json else out).write(
        f"partner-check: {target.bic} ({target.currency}) at {target.endpoint}\n"
        f"the connector {bic} listens on http://{host!s}:{port}"
        " (POST /iso20022/messages, GET /v1/certificate)\n"
    )
    try:
        for name, scenario in scenarios(late_seconds):
            with session.test_case(name):
                scenario(session)
    finally:
        session.close()
        server.shutdown()
        server.server_close()
    return report.summary()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", required=True, help="the partner's base URL")
    p.add_argument("--bic", required=True, help="the partner's BIC (AppHdr/To, From)")
    p.add_argument("--currency", required=True, help="the currency the partner settles")
    p.add_argument("--cert", required=True, help="PEM file: the partner's certificate")
    p.add_argument("--listen", default="127.0.0.1:8090", help="HOST:PORT the check receives on")
    p.add_argument("--connector-bic", default="SWHQBEBBXXX")
    p.add_argument("--identity", help="directory keeping the check's key (else a new one)")
    p.add_argument("--debtor", default="EBILAEAD:EBIL-AED", help="BIC:ACCOUNT, funded")
    p.add_argument("--creditor", default="HSBKKZKX:HSBK-AED", help="BIC:ACCOUNT")
    p.add_argument("--unknown-account", default="PARTNER-CHECK-NONE")
    p.add_argument("--amount", type=int, default=100, help="minor units per leg")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    p.add_argument("--late-seconds", type=float, default=3.0, help="deadline of the late leg")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per step, then one with the totals (no text report)",
    )


def main(args: argparse.Namespace) -> int:
    debtor_bic, _, debtor_account = args.debtor.partition(":")
    creditor_bic, _, creditor_account = args.creditor.partition(":")
    target = Target(
        endpoint=args.endpoint,
        bic=args.bic,
        currency=args.currency,
        cert_pem=Path(args.cert).read_text("ascii"),
        debtor=(debtor_bic, debtor_account),
        creditor=(creditor_bic, creditor_account),
        unknown_account=args.unknown_account,
        amount=args.amount,
    )
    host, _, port = args.listen.rpartition(":")
    identity = None
    if args.identity:
        identity = load_or_create_identity(Path(args.identity), "partner-check")
    return run_check(
        target,
        listen=(host or "127.0.0.1", int(port)),
        bic=args.connector_bic,
        identity=identity,
        timeout=args.timeout,
        late_seconds=args.late_seconds,
        as_json=args.json,
    )


__all__ = ["add_arguments", "main", "run_check", "scenarios"]
