"""PvP use cases: one function per command. The only place that commits PvP changes.

Inbound ISO 20022 messages take two steps:

1. :func:`receive_messages` (for the HTTP requests): parse and verify (outside any
   transaction), then in one transaction store the raw bytes with their SHA-256, create the
   ``received`` legs of a pacs.009 (the UETR is the leg's primary key: deduplication by
   constraint) and an inbox row, for every envelope received at that moment. The callers are
   answered 202 once this commits.
2. :func:`process_inbox_items` (a worker woken right after the commit, or the recovery job):
   under a row lock on the inbox item, apply the message to the legs and the DT ledger and
   queue the signed replies in the outbox, all in one transaction (a worker takes every item
   queued at that moment, up to a limit, into that one transaction). A crash before the commit
   leaves the item unprocessed, and it is processed again; after it, the replies are in the
   outbox and the dispatcher sends them.

A pacs.009 with several transactions locks all its legs as ONE ledger batch; when the batch is
refused, each transaction is retried alone (in a savepoint), so one failing leg does not reject
the others. The answer is one pacs.002 with a status per transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from gateway.config import FaultSettings, Iso20022Settings
from gateway.db import retrying, utcnow
from gateway.errors import GatewayError, IdempotencyConflict, InvalidInput, TransientError
from gateway.faults import crash_point
from gateway.ids import sortable_id
from gateway.iso20022 import (
    Admi002,
    AppHeader,
    Camt029,
    Camt056,
    CancellationResolution,
    CreditTransfer,
    DuplicateMessage,
    KeyPair,
    Message,
    MessageRejected,
    OriginalRef,
    Pacs002,
    Pacs009,
    Pacs028,
    SignatureInvalid,
    StatusRequest,
    TransactionStatus,
    admi002_for,
    build,
    header_for,
    parse,
)
from gateway.ledger import model as lm
from gateway.ledger import service as ledger
from gateway.logcontext import bound
from gateway.pvp.model import (
    AM03,
    ARDT,
    CH16,
    NARR,
    FulfilmentMismatch,
    Instruction,
    InstructionState,
    Leg,
    LegState,
    LegTerms,
    MessageRecord,
    NotAwaitingOperator,
    NotYourWallet,
    PvPNotFound,
    fulfilment_matches,
    iso_reason,
)
from gateway.pvp.store import PvPUnitOfWork

log = logging.getLogger(__name__)

PACS009 = "pacs.009.001.08"
DT_CURRENCY = "KZT"
ISO_TOPIC = "pvp.iso20022"
INSTRUCTION_TOPIC = "pvp.instruction"
_BIC = re.compile(r"^[A-Z]{6}[A-Z2-9][A-Z0-9]([A-Z0-9]{3})?$")


def _bic11(bic: str) -> str:
    return bic if len(bic) == 11 else bic + "XXX"


@dataclass(frozen=True)
class PvPContext:
    """What the use cases need besides the unit of work (built once from the settings)."""

    gateway_bic: str
    connector_bic: str
    connector_url: str
    connector_cert_pem: str | None
    signer: Callable[[], KeyPair]
    """The gateway's signing key (loaded on first use)."""
    iso: Iso20022Settings = field(default_factory=Iso20022Settings)
    faults: FaultSettings = field(default_factory=FaultSettings)
    grace_seconds: float = 5.0
    status_retry_seconds: float = 5.0
    last_resort_seconds: float = 300.0
    default_deadline_seconds: float = 60.0
    inbox_retry_after_seconds: float = 5.0
    """How long the recovery job leaves a fresh inbox item to the worker that was woken for it."""
    notify_inbox: Callable[[list[tuple[int, Message | None]]], None] = lambda _items: None
    """Called after a reception commits, with the stored messages' ids and the messages as
    parsed on receipt (the worker then neither reads them back nor parses them again)."""
    notify_outbox: Callable[[], None] = lambda: None


@dataclass(frozen=True, slots=True)
class Ack:
    """The technical acknowledgement of a received message (202)."""

    msg_id: str
    sha256: str
    duplicate: bool
    inbox_id: int | None = None


def new_msg_id() -> str:
    return sortable_id("DTGW-")


# ------------------------------------------------------------------ receiving


def _uetrs(message: Message) -> list[str]:
    if isinstance(message, Pacs009):
        return [t.uetr for t in message.transactions]
    if isinstance(message, Admi002):
        return []
    return [t.original.uetr for t in message.transactions]


def _terms(msg: Pacs009, tx: CreditTransfer, ctx: PvPContext) -> LegTerms:
    deadline = tx.deadline_at or (msg.created + timedelta(seconds=ctx.default_deadline_seconds))
    return LegTerms(
        msg_id=msg.msg_id,
        end_to_end_id=tx.end_to_end_id,
        pvp_id=tx.pvp.pvp_id if tx.pvp else None,
        leg=tx.pvp.leg if tx.pvp else None,
        amount=tx.amount.minor,
        currency=tx.amount.currency,
        debtor_bic=tx.debtor_bic,
        debtor_account=tx.debtor_account,
        creditor_bic=tx.creditor_bic,
        creditor_account=tx.creditor_account,
        condition=tx.pvp.condition.lower() if tx.pvp else None,
        deadline=deadline.astimezone(UTC),
        instr_id=tx.instr_id,
        tx_id=tx.tx_id,
    )


@dataclass(frozen=True, slots=True)
class _Checked:
    """An inbound envelope that passed every check done outside a transaction."""

    raw: bytes
    sha: str
    header: AppHeader
    message: Message
    sender: str


def _check(raw: bytes, ctx: PvPContext, now: datetime) -> _Checked:
    """Parse, verify and address-check an envelope; raises :class:`MessageRejected`."""
    sha = hashlib.sha256(raw).hexdigest()
    if ctx.connector_cert_pem is None:
        # Unsigned input is never trusted: a gateway without a pinned connector refuses all.
        raise SignatureInvalid("no connector certificate is pinned (iso20022.connector_cert_pem)")
    parsed = parse(raw, cert_pem=ctx.connector_cert_pem, settings=ctx.iso, now=now)
    header = parsed.header
    message = parsed.message
    if header is None:  # parse refuses an unsigned bare Document when a cert is pinned
        raise MessageRejected("FF01", "an envelope is required", xpath="/")
    if _bic11(header.to_bic) != _bic11(ctx.gateway_bic):
        raise MessageRejected(
            "RC01",
            f"addressed to {header.to_bic}, not to the gateway {ctx.gateway_bic}",
            xpath="/BizMsg/AppHdr/To/FIId/FinInstnId/BICFI",
            msg_id=message.id,
        )
    return _Checked(raw, sha, header, message, _bic11(header.from_bic))


def _store(
    uow: PvPUnitOfWork, c: _Checked, ctx: PvPContext, now: datetime, *, inbox: bool = True
) -> Ack:
    """Deduplicate and store one checked envelope in the caller's transaction (raises
    :class:`DuplicateMessage` for other bytes under a known id, or a known UETR); with
    ``inbox``, also the inbox item that has it processed (without, the caller applies it in
    the same transaction, or calls :func:`_add_inbox`)."""
    repo = uow.pvp
    message = c.message
    seen = repo.inbound_sha(c.sender, message.MESSAGE_ID, message.id)
    if seen == c.sha:
        return Ack(message.id, c.sha, duplicate=True)
    if seen is not None:
        raise DuplicateMessage(
            "DU01",
            f"message id {message.id} already received with other content",
            xpath="/BizMsg/AppHdr/BizMsgIdr",
            msg_id=message.id,
        )
    uetrs = _uetrs(message)
    new_legs: list[Leg] = []
    late: list[Leg] = []
    if isinstance(message, Pacs009):
        existing = repo.legs_for_update(uetrs)
        for i, tx in enumerate(message.transactions):
            leg = existing.get(tx.uetr)
            if leg is None:
                new_legs.append(Leg.receive(tx.uetr, _terms(message, tx, ctx), now))
            elif leg.is_tombstone:
                late.append(leg.with_terms(_terms(message, tx, ctx), now))
            else:
                raise DuplicateMessage(
                    "AM05",
                    f"UETR {tx.uetr} already instructed",
                    xpath=f"/BizMsg/Document/FICdtTrf/CdtTrfTxInf[{i + 1}]/PmtId/UETR",
                    msg_id=message.id,
                )
    message_id = repo.add_message(
        "in",
        c.raw,
        c.sha,
        now,
        sender=c.sender,
        receiver=_bic11(c.header.to_bic),
        msg_def_id=message.MESSAGE_ID,
        msg_id=message.id,
        uetrs=uetrs,
    )
    repo.insert_legs(new_legs)
    repo.update_legs(late)
    if inbox:
        _add_inbox(uow, message_id, ctx, now)
    return Ack(message.id, c.sha, duplicate=False, inbox_id=message_id)


def _add_inbox(uow: PvPUnitOfWork, message_id: int, ctx: PvPContext, now: datetime) -> None:
    uow.pvp.add_inbox(message_id, now, now + timedelta(seconds=ctx.inbox_retry_after_seconds))


def receive_messages(
    uow: PvPUnitOfWork,
    raws: Sequence[bytes],
    ctx: PvPContext,
    now: datetime | None = None,
    *,
    process: bool = False,
) -> list[Ack | MessageRejected]:
    """Verify, deduplicate and store inbound envelopes, all in one transaction: per envelope
    its acknowledgement, or why it is refused (nothing of it stored).

    Each envelope is stored in a savepoint: one refused there (a duplicate id with other
    bytes, a UETR already instructed) takes nothing of the others with it.

    With ``process``, each new message is also applied in that transaction, in its own
    savepoint, in the order received: one commit (one fsync) where storing, then applying,
    took two, before the 202 instead of after it; a message applied so needs no inbox item.
    A message whose application fails gets its inbox item, stored and unprocessed, as
    without ``process``. Once the transaction is durable, the inbox items go to the workers
    together."""
    now = now or utcnow()
    outcomes: list[Ack | MessageRejected | _Checked] = []
    for raw in raws:
        try:
            outcomes.append(_check(raw, ctx, now))
        except MessageRejected as exc:
            outcomes.append(exc)
    checked = [(i, c) for i, c in enumerate(outcomes) if isinstance(c, _Checked)]
    if not checked:
        return outcomes  # type: ignore[return-value]
    applied: list[str] = []

    def work() -> list[Ack | MessageRejected]:
        applied.clear()
        stored: list[Ack | MessageRejected] = []
        for _, c in checked:
            try:
                with uow.savepoint():
                    stored.append(_store(uow, c, ctx, now, inbox=not process))
            except MessageRejected as exc:
                stored.append(exc)
        new: list[tuple[int, Message | None]] = []
        for ack, (_, c) in zip(stored, checked, strict=True):
            if not isinstance(ack, Ack) or ack.inbox_id is None:
                continue
            if process and _apply_in_savepoint(uow, ack.inbox_id, c.message, ctx, now):
                applied.append(c.message.MESSAGE_ID)
                continue
            if process:
                _add_inbox(uow, ack.inbox_id, ctx, now)
            new.append((ack.inbox_id, c.message))
        if new:
            uow.after_commit(lambda: ctx.notify_inbox(new))
        return stored

    stored = retrying(uow, work)
    for (i, _), result in zip(checked, stored, strict=True):
        outcomes[i] = result
    if any(isinstance(r, Ack) and not r.duplicate for r in stored):
        crash_point("pvp.after_inbox", ctx.faults)
    for message_type in applied:
        crash_point(_AFTER.get(message_type, "pvp.after_process"), ctx.faults)
    return outcomes  # type: ignore[return-value]


def _apply_in_savepoint(
    uow: PvPUnitOfWork, message_id: int, message: Message, ctx: PvPContext, at: datetime
) -> bool:
    """:func:`_apply` in a savepoint of the caller's transaction, which stored the message;
    False (and nothing of it kept) if it failed, other than by a transient conflict, which
    retries the whole unit."""
    try:
        with uow.savepoint():
            _apply(uow, message, ctx, at)
            return True
    except TransientError:
        raise
    except Exception:
        log.warning(
            "pvp: applying inbox item %s on receipt failed; left to the workers",
            message_id,
            exc_info=True,
        )
        return False


def receive_message(
    uow: PvPUnitOfWork, raw: bytes, ctx: PvPContext, now: datetime | None = None
) -> Ack:
    """One envelope: :func:`receive_messages`; raises :class:`MessageRejected`."""
    [outcome] = receive_messages(uow, [raw], ctx, now)
    if isinstance(outcome, MessageRejected):
        raise outcome
    return outcome


def record_rejection(
    uow: PvPUnitOfWork,
    raw: bytes,
    rejection: MessageRejected,
    ctx: PvPContext,
    now: datetime | None = None,
) -> bytes:
    """The signed admi.002 that answers a refused message; both are stored (best effort: a
    flood of junk must never turn into server errors)."""
    now = now or utcnow()
    admi = admi002_for(rejection, now=now)
    out_id = new_msg_id()
    header = AppHeader(
        from_bic=ctx.gateway_bic,
        to_bic=ctx.connector_bic,
        biz_msg_id=out_id,
        msg_def_id=admi.MESSAGE_ID,
        created=now,
    )
    signed = build(admi, header, signer=ctx.signer())
    try:
        with uow:
            uow.pvp.add_message(
                "rejected",
                raw[: ctx.iso.max_message_bytes],
                hashlib.sha256(raw).hexdigest(),
                now,
                msg_id=(rejection.msg_id or "")[:35] or None,
                reason=rejection.code[:4],
            )
            uow.pvp.add_message(
                "out",
                signed,
                hashlib.sha256(signed).hexdigest(),
                now,
                sender=_bic11(ctx.gateway_bic),
                receiver=_bic11(ctx.connector_bic),
                msg_def_id=admi.MESSAGE_ID,
                msg_id=out_id,
                reason=rejection.code[:4],
            )
            uow.commit()
    except Exception:  # storing the trail of junk is best effort; the answer is not
        log.warning("could not store a rejected message (%s)", rejection.code, exc_info=True)
    return signed


# ------------------------------------------------------------------ sending


def _queue(
    uow: PvPUnitOfWork,
    ctx: PvPContext,
    message: Message,
    uetrs: Iterable[str],
    now: datetime,
) -> str:
    """Sign, store and queue one outbound message in the caller's transaction."""
    header = header_for(message, from_bic=ctx.gateway_bic, to_bic=ctx.connector_bic, created=now)
    signed = build(message, header, signer=ctx.signer())
    uow.pvp.add_message(
        "out",
        signed,
        hashlib.sha256(signed).hexdigest(),
        now,
        sender=_bic11(ctx.gateway_bic),
        receiver=_bic11(ctx.connector_bic),
        msg_def_id=message.MESSAGE_ID,
        msg_id=message.id,
        uetrs=uetrs,
    )
    uow.outbox.add(
        ISO_TOPIC,
        signed,
        destination=ctx.connector_url.rstrip("/") + "/iso20022/messages",
        headers='{"content-type": "application/xml"}',
        event_id=message.id,
        now=now,
    )
    if uow.outbox.claim_for is None:  # else the caller sends it itself after the commit
        uow.after_commit(ctx.notify_outbox)
    return message.id


def _original(leg: Leg) -> OriginalRef:
    t = leg.terms
    assert t is not None, "only legs with a pacs.009 have an original instruction"
    return OriginalRef(t.msg_id, PACS009, t.end_to_end_id, leg.uetr, t.instr_id, t.tx_id)


def _status(
    original: OriginalRef, status: str, reason: str | None, info: str | None = None
) -> TransactionStatus:
    return TransactionStatus(
        original=original,
        status=status,  # type: ignore[arg-type]
        reason=reason if status == "RJCT" else None,
        additional_info=info,
    )


def _status_of(leg: Leg, original: OriginalRef) -> TransactionStatus:
    status, reason = leg.status()
    return _status(original, status, reason)


def _follow_instructions(uow: PvPUnitOfWork, legs: Sequence[Leg], now: datetime) -> None:
    """Instructions follow the DT leg whose EndToEndId is their id."""
    by_e2e = {leg.terms.end_to_end_id: leg for leg in legs if leg.terms is not None}
    if not by_e2e:
        return
    for inst_id, inst in uow.pvp.instructions_for_update(by_e2e).items():
        moved = inst.follow(by_e2e[inst_id], now)
        if moved is not inst:
            uow.pvp.update_instruction(moved)


def _batch(
    uow: PvPUnitOfWork, ops: Sequence[tuple[str, lm.Operation]], now: datetime
) -> dict[str, GatewayError | None]:
    """Apply ledger ops as one batch; if refused, one at a time. Returns key -> error or None."""
    if not ops:
        return {}
    try:
        with uow.savepoint():
            ledger.execute(uow, [op for _, op in ops], now)
        return {key: None for key, _ in ops}
    except GatewayError as exc:
        if len(ops) == 1:
            return {ops[0][0]: exc}
    outcome: dict[str, GatewayError | None] = {}
    for key, op in ops:
        try:
            with uow.savepoint():
                ledger.execute(uow, [op], now)
            outcome[key] = None
        except GatewayError as exc:
            outcome[key] = exc
    return outcome


# ------------------------------------------------------------------ processing


def process_inbox_item(
    uow: PvPUnitOfWork,
    message_id: int,
    ctx: PvPContext,
    now: datetime | None = None,
    *,
    parsed: Message | None = None,
) -> bool:
    """Apply one stored inbound message; False when it was already processed.

    ``parsed`` is the message as :func:`receive_messages` parsed it (the fast path, in
    memory); without it (recovery) the stored bytes are read back and parsed again."""
    [applied] = process_inbox_items(uow, [(message_id, parsed)], ctx, now)
    return applied


def process_inbox_items(
    uow: PvPUnitOfWork,
    items: Sequence[tuple[int, Message | None]],
    ctx: PvPContext,
    now: datetime | None = None,
) -> list[bool]:
    """Apply several stored inbound messages in order, in one transaction (one commit for
    all); per item, False when it was already processed.

    The same as one transaction each, except that it is all or nothing: if one item fails,
    none is applied and the exception propagates, and the caller processes them one at a
    time, so that a failing item holds up no other. A transient database error (deadlock,
    lock timeout) retries the whole batch."""

    def work() -> list[str | None]:
        at = now or utcnow()
        return [_process(uow, message_id, parsed, ctx, at) for message_id, parsed in items]

    done = retrying(uow, work)
    for message_type in done:
        if message_type is not None:
            crash_point(_AFTER.get(message_type, "pvp.after_process"), ctx.faults)
    return [message_type is not None for message_type in done]


def _process(
    uow: PvPUnitOfWork, message_id: int, parsed: Message | None, ctx: PvPContext, at: datetime
) -> str | None:
    """Claim and apply one inbox item; its message type, or None if it was processed."""
    if not uow.pvp.inbox_claim(message_id):
        return None
    message = parsed
    if message is None:
        stored = uow.pvp.message_raw(message_id)
        assert stored is not None
        raw, _sender = stored
        # Verified on receipt (the signature is not checked twice). Later clocks only make
        # the "not in the future" rule easier, so a message that waited still parses.
        message = parse(raw, settings=ctx.iso, now=at).message
    _apply(uow, message, ctx, at)
    uow.pvp.inbox_done(message_id, at)
    return message.MESSAGE_ID


_AFTER = {
    "pacs.009.001.08": "pvp.after_lock",
    "pacs.002.001.10": "pvp.after_commit",
    "camt.056.001.08": "pvp.after_release",
}


def inbox_failed(
    uow: PvPUnitOfWork, message_id: int, error: str, now: datetime | None = None
) -> None:
    """Record a processing failure; the recovery job tries again after a backoff."""
    at = now or utcnow()

    def work() -> None:
        attempts = uow.pvp.inbox_attempts(message_id) + 1
        delay = min(60.0, 0.5 * 2 ** min(attempts, 10))
        uow.pvp.inbox_failed(message_id, error, at + timedelta(seconds=delay))

    retrying(uow, work)


def pending_inbox(uow: PvPUnitOfWork, *, everything: bool, limit: int = 500) -> list[int]:
    """Inbox items awaiting processing: all of them (at start), or those the workers left."""
    with uow:
        return uow.pvp.inbox_due(None if everything else utcnow(), limit)


def _log_fields(message: Message) -> dict[str, str | None]:
    """The UETR and PvP id of a message's first transaction, for its log records (with the
    number of others when it carries several)."""
    txs: Sequence[object] = getattr(message, "transactions", ())
    if not txs:
        return {}
    original = getattr(txs[0], "original", None)
    uetr: str | None = original.uetr if original is not None else getattr(txs[0], "uetr", None)
    if uetr is not None and len(txs) > 1:
        uetr = f"{uetr} (+{len(txs) - 1})"
    terms = getattr(txs[0], "pvp", None)
    return {"uetr": uetr, "pvp_id": terms.pvp_id if terms is not None else None}


def _apply(uow: PvPUnitOfWork, message: Message, ctx: PvPContext, now: datetime) -> None:
    with bound(**_log_fields(message)):
        _dispatch(uow, message, ctx, now)


def _dispatch(uow: PvPUnitOfWork, message: Message, ctx: PvPContext, now: datetime) -> None:
    if isinstance(message, Pacs009):
        _on_pacs009(uow, message, ctx, now)
    elif isinstance(message, Pacs002):
        _on_pacs002(uow, message, ctx, now)
    elif isinstance(message, Camt056):
        _on_camt056(uow, message, ctx, now)
    elif isinstance(message, Pacs028):
        _on_pacs028(uow, message, ctx, now)
    elif isinstance(message, Admi002):
        log.error(
            "the connector refused our message %s: %s %s at %s",
            message.related_ref,
            message.reason,
            message.description,
            message.error_location,
        )
    else:
        log.info("%s %s stored; the gateway takes no action on it", message.MESSAGE_ID, message.id)


def _on_pacs009(uow: PvPUnitOfWork, msg: Pacs009, ctx: PvPContext, now: datetime) -> None:
    legs = uow.pvp.legs_for_update(t.uetr for t in msg.transactions)
    ops: list[tuple[str, lm.Operation]] = []
    decided: dict[str, Leg] = {}
    for tx in msg.transactions:
        leg = legs[tx.uetr]
        if leg.state is not LegState.RECEIVED:
            continue  # a tombstone (cancelled before it arrived): answered below
        if tx.pvp is None:
            decided[tx.uetr] = leg.reject("CH21", now)
        elif tx.amount.currency != DT_CURRENCY:
            decided[tx.uetr] = leg.reject(AM03, now)
        else:
            ops.append(
                (
                    tx.uetr,
                    lm.CreateLock(
                        id=leg.lock_id,
                        debit_wallet_id=tx.debtor_account,
                        credit_wallet_id=tx.creditor_account,
                        amount=tx.amount.minor,
                        currency=tx.amount.currency,
                        expires_at=None,  # never released on our own authority
                        condition=tx.pvp.condition.lower(),
                        reference=tx.uetr,
                    ),
                )
            )
    for uetr, error in _batch(uow, ops, now).items():
        leg = legs[uetr]
        decided[uetr] = leg.lock(now) if error is None else leg.reject(iso_reason(error.code), now)
        if error is not None:
            log.info("pvp leg %s rejected: %s %s", uetr, error.code, error.detail)
    uow.pvp.update_legs(list(decided.values()))
    final = {**legs, **decided}
    statuses = [
        _status_of(
            final[tx.uetr],
            OriginalRef(msg.msg_id, PACS009, tx.end_to_end_id, tx.uetr, tx.instr_id, tx.tx_id),
        )
        for tx in msg.transactions
    ]
    _queue(uow, ctx, Pacs002(new_msg_id(), now, tuple(statuses)), final, now)
    _follow_instructions(uow, list(final.values()), now)
    crash_point("pvp.before_lock", ctx.faults)


def _on_pacs002(uow: PvPUnitOfWork, msg: Pacs002, ctx: PvPContext, now: datetime) -> None:
    legs = uow.pvp.legs_for_update(t.original.uetr for t in msg.transactions)
    commits: list[tuple[str, lm.Operation]] = []
    releases: list[tuple[str, lm.Operation]] = []
    replies: dict[str, TransactionStatus] = {}
    originals: dict[str, OriginalRef] = {}
    fulfilments: dict[str, str] = {}
    for tx in msg.transactions:
        uetr = tx.original.uetr
        leg = legs.get(uetr)
        originals[uetr] = tx.original
        if leg is None or leg.is_tombstone:
            log.warning("pacs.002 %s for unknown UETR %s ignored", msg.msg_id, uetr)
            continue
        fulfilment = tx.pvp.fulfilment if tx.pvp is not None else None
        if fulfilment is not None and tx.status in ("ACSP", "ACSC"):
            if leg.state is LegState.LOCKED:
                try:
                    leg.settle(fulfilment, now)
                except FulfilmentMismatch:
                    replies[uetr] = _status(tx.original, "RJCT", CH16, "fulfilment mismatch")
                else:
                    fulfilments[uetr] = fulfilment
                    commits.append((uetr, lm.CommitLock(id=leg.lock_id, fulfilment=fulfilment)))
            elif leg.state is LegState.SETTLED and not fulfilment_matches(
                (leg.terms.condition if leg.terms else None) or "", fulfilment
            ):
                replies[uetr] = _status(tx.original, "RJCT", CH16, "fulfilment mismatch")
            elif not uow.pvp.reply_pending(uetr):
                replies[uetr] = _status_of(leg, tx.original)  # a re-sent decision: same answer
            # else: the answer to the first copy still waits in the outbox and answers this one
            # too (a copy per re-sent decision would only lengthen that queue).
        elif tx.status == "RJCT" and leg.state is LegState.LOCKED:
            releases.append((uetr, lm.ReleaseLock(id=leg.lock_id)))  # the connector's ABORT
        # PDNG / ACSP without fulfilment: no decision yet; the deadline check asks again.
    changed: list[Leg] = []
    for uetr, error in _batch(uow, commits, now).items():
        leg = legs[uetr]
        if error is None:
            settled = leg.settle(fulfilments[uetr], now)
            changed.append(settled)
            replies[uetr] = _status_of(settled, originals[uetr])
        else:
            log.error("pvp leg %s: commit refused by the ledger: %s", uetr, error.detail)
            replies[uetr] = _status(
                originals[uetr], "RJCT", iso_reason(error.code), error.detail[:100]
            )
    for uetr, error in _batch(uow, releases, now).items():
        if error is not None:
            raise error  # a release cannot be refused; retry the whole message later
        changed.append(legs[uetr].release(now))
    uow.pvp.update_legs(changed)
    if replies:
        order = [t.original.uetr for t in msg.transactions if t.original.uetr in replies]
        sts = tuple(replies[u] for u in dict.fromkeys(order))
        _queue(uow, ctx, Pacs002(new_msg_id(), now, sts), replies, now)
    _follow_instructions(uow, changed, now)
    if commits:
        crash_point("pvp.before_commit", ctx.faults)


def _on_camt056(uow: PvPUnitOfWork, msg: Camt056, ctx: PvPContext, now: datetime) -> None:
    legs = uow.pvp.legs_for_update(t.original.uetr for t in msg.transactions)
    releases: list[tuple[str, lm.Operation]] = []
    answers: dict[str, CancellationResolution] = {}
    new: list[Leg] = []
    changed: list[Leg] = []
    for tx in msg.transactions:
        uetr = tx.original.uetr
        leg = legs.get(uetr)
        if leg is None:
            tomb = Leg.tombstone(uetr, now)
            legs[uetr] = tomb
            new.append(tomb)
        elif leg.state is LegState.RECEIVED:
            changed.append(leg.cancel(now))
        elif leg.state is LegState.LOCKED:
            releases.append((uetr, lm.ReleaseLock(id=leg.lock_id)))
        if leg is not None and leg.state is LegState.SETTLED:
            answers[uetr] = CancellationResolution(tx.original, "RJCR", ARDT, "already settled")
        else:
            answers[uetr] = CancellationResolution(tx.original, "ACCR")
    for uetr, error in _batch(uow, releases, now).items():
        if error is not None:
            raise error
        changed.append(legs[uetr].release(now))
    uow.pvp.insert_legs(new)
    uow.pvp.update_legs(changed)
    for conf, status in (("CNCL", "ACCR"), ("RJCR", "RJCR")):
        group = {u: a for u, a in answers.items() if a.status == status}
        if group:
            reply = Camt029(
                assignment_id=new_msg_id(),
                assigner_bic=ctx.gateway_bic,
                assignee_bic=ctx.connector_bic,
                created=now,
                confirmation=conf,  # type: ignore[arg-type]
                transactions=tuple(group.values()),
            )
            _queue(uow, ctx, reply, group, now)
    _follow_instructions(uow, changed, now)


def _on_pacs028(uow: PvPUnitOfWork, msg: Pacs028, ctx: PvPContext, now: datetime) -> None:
    legs = uow.pvp.legs(t.original.uetr for t in msg.transactions)
    statuses = []
    for tx in msg.transactions:
        leg = legs.get(tx.original.uetr)
        if leg is None:
            statuses.append(_status(tx.original, "RJCT", NARR, "unknown UETR: no pacs.009"))
        else:
            statuses.append(_status_of(leg, tx.original))
    _queue(uow, ctx, Pacs002(new_msg_id(), now, tuple(statuses)), legs, now)


# ------------------------------------------------------------------ deadlines


@dataclass(frozen=True, slots=True)
class DeadlineReport:
    asked: tuple[str, ...] = ()
    alerted: tuple[str, ...] = ()


def check_deadlines(
    uow: PvPUnitOfWork, ctx: PvPContext, now: datetime | None = None, limit: int = 200
) -> DeadlineReport:
    """Locked legs past deadline + grace: ask the connector (pacs.028), never release.

    Past the last-resort deadline, raise the alert once (ERROR log + flag on the leg) and keep
    asking: the connector's answer still decides, until an operator resolves the leg.
    """
    at = now or utcnow()

    def work() -> DeadlineReport:
        cutoff = at - timedelta(seconds=ctx.grace_seconds)
        candidates = uow.pvp.locked_legs_past(cutoff, limit)
        if not candidates:
            return DeadlineReport()
        legs = uow.pvp.legs_for_update(leg.uetr for leg in candidates)
        asked: list[Leg] = []
        alerted: list[Leg] = []
        for leg in legs.values():
            if leg.past_last_resort(at, ctx.last_resort_seconds) and leg.alert_at is None:
                leg = leg.raise_alert(at)
                alerted.append(leg)
                log.error(
                    "PvP leg %s (PvP %s) still locked %.0fs past its deadline: "
                    "operator decision needed (POST /v1/pvp/%s/resolve)",
                    leg.uetr,
                    leg.terms.pvp_id if leg.terms else None,
                    (at - (leg.deadline or at)).total_seconds(),
                    leg.terms.pvp_id if leg.terms and leg.terms.pvp_id else leg.uetr,
                )
            if leg.needs_status_request(at, ctx.grace_seconds, ctx.status_retry_seconds):
                asked.append(leg.status_requested(at))
        touched = {leg.uetr: leg for leg in [*alerted, *asked]}
        uow.pvp.update_legs(list(touched.values()))
        if asked:
            request = Pacs028(
                new_msg_id(),
                at,
                tuple(StatusRequest(_original(leg), new_msg_id()) for leg in asked),
            )
            _queue(uow, ctx, request, (leg.uetr for leg in asked), at)
        return DeadlineReport(tuple(leg.uetr for leg in asked), tuple(leg.uetr for leg in alerted))

    return retrying(uow, work)


# ------------------------------------------------------------------ operator


@dataclass(frozen=True, slots=True)
class Actor:
    key_id: str
    label: str


def resolve(
    uow: PvPUnitOfWork,
    ref: str,
    action: Literal["commit", "release"],
    reason: str,
    actor: Actor,
    ctx: PvPContext,
    *,
    fulfilment: str | None = None,
    now: datetime | None = None,
) -> list[Leg]:
    """An operator's decision on legs past their last-resort deadline (audited)."""
    if not reason.strip():
        raise InvalidInput("a reason is required")
    if action == "commit" and not fulfilment:
        raise InvalidInput("committing needs the fulfilment (the PvP secret)")
    at = now or utcnow()
    by = f"operator:{actor.key_id}"

    def work() -> list[Leg]:
        found = uow.pvp.legs_by_ref(ref)
        if not found:
            raise PvPNotFound(f"no PvP, instruction or leg {ref}")
        legs = uow.pvp.legs_for_update(leg.uetr for leg in found)
        due = [leg for leg in legs.values() if leg.state is LegState.LOCKED and leg.alert_at]
        if not due:
            raise NotAwaitingOperator(f"no leg of {ref} awaits an operator decision")
        done: list[Leg] = []
        for leg in due:
            if action == "commit":
                assert fulfilment is not None
                moved = leg.settle(fulfilment, at, by=by)
                op: lm.Operation = lm.CommitLock(id=leg.lock_id, fulfilment=fulfilment.lower())
            else:
                moved = leg.release(at, by=by)
                op = lm.ReleaseLock(id=leg.lock_id)
            ledger.execute(uow, [op], at)
            uow.pvp.add_audit(
                ref=ref,
                uetr=leg.uetr,
                action=action,
                key_id=actor.key_id,
                label=actor.label,
                reason=reason,
                now=at,
            )
            done.append(moved)
            log.warning("operator %s %s PvP leg %s: %s", actor.key_id, action, leg.uetr, reason)
        uow.pvp.update_legs(done)
        # Tell the connector what happened (a status report, as if it had asked).
        statuses = tuple(_status_of(leg, _original(leg)) for leg in done)
        _queue(uow, ctx, Pacs002(new_msg_id(), at, statuses), (leg.uetr for leg in done), at)
        _follow_instructions(uow, done, at)
        return done

    return retrying(uow, work)


# ------------------------------------------------------------------ instructions


def instruction_payload(inst: Instruction) -> bytes:
    """The connector's JSON instruction (docs/pvp-protocol.md)."""
    body = {
        "instruction_id": inst.instruction_id,
        "party_bic": inst.party_bic,
        "counterparty_bic": inst.counterparty_bic,
        "sell": {
            "currency": inst.sell.currency,
            "amount": inst.sell.amount,
            "account": inst.sell.account,
        },
        "buy": {
            "currency": inst.buy.currency,
            "amount": inst.buy.amount,
            "account": inst.buy.account,
        },
        "value_time": inst.value_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def instruct(
    uow: PvPUnitOfWork, inst: Instruction, ctx: PvPContext, now: datetime | None = None
) -> tuple[Instruction, bool]:
    """Store a participant's instruction and queue it for the connector.

    Idempotent by instruction id: the same body answers the stored instruction (created=False),
    another body is refused (DU01). The key's subject must be the DT wallet, or its owner.
    """
    inst.validate()
    subject = inst.subject
    if _BIC.match(subject) and _bic11(subject) != _bic11(inst.party_bic):
        raise NotYourWallet(f"this key acts for {subject}, not for {inst.party_bic}")
    at = now or utcnow()
    inst = replace(inst, state=InstructionState.ACCEPTED, created_at=at, updated_at=at)

    def work() -> tuple[Instruction, bool]:
        existing = uow.pvp.instruction(inst.instruction_id)
        if existing is not None:
            if existing.subject != subject or existing.fingerprint() != inst.fingerprint():
                raise IdempotencyConflict(
                    f"instruction {inst.instruction_id} exists with another body"
                )
            return existing, False
        wallet = uow.ledger.wallet(inst.dt_wallet)
        if wallet is None or subject not in (wallet.id, wallet.owner):
            # The same answer for a wallet that does not exist: no probing of wallet ids.
            raise NotYourWallet(f"this key does not act for DT wallet {inst.dt_wallet}")
        if wallet.currency != inst.DT_CURRENCY:
            raise lm.CurrencyMismatch(f"wallet {wallet.id} holds {wallet.currency}")
        uow.pvp.insert_instruction(inst)
        uow.outbox.add(
            INSTRUCTION_TOPIC,
            instruction_payload(inst),
            destination=ctx.connector_url.rstrip("/") + "/v1/instructions",
            headers=json.dumps({"instruction_id": inst.instruction_id}),
            event_id=f"instruction-{inst.instruction_id}",
            now=at,
        )
        uow.after_commit(ctx.notify_outbox)
        return inst, True

    return retrying(uow, work)


def instruction_delivered(
    uow: PvPUnitOfWork, instruction_id: str, refused_reason: str | None = None
) -> None:
    """The connector took the instruction (or refused it for good: 4xx)."""
    at = utcnow()

    def work() -> None:
        inst = uow.pvp.instructions_for_update([instruction_id]).get(instruction_id)
        if inst is None or inst.state is not InstructionState.ACCEPTED:
            return
        moved = inst.refused(refused_reason, at) if refused_reason else inst.sent(at)
        uow.pvp.update_instruction(moved)

    retrying(uow, work)


# ------------------------------------------------------------------ queries


@dataclass(frozen=True, slots=True)
class PvPView:
    ref: str
    pvp_id: str | None
    instruction: Instruction | None
    legs: tuple[Leg, ...]
    messages: tuple[MessageRecord, ...]
    audit: tuple[dict[str, object], ...]


def view(uow: PvPUnitOfWork, ref: str, *, subject: str | None, is_operator: bool) -> PvPView:
    """What the gateway knows of a PvP, by instruction id, PvP id or UETR.

    A participant sees only PvPs it instructed or whose DT leg touches a wallet it acts for;
    anything else is "not found", so ids cannot be probed.
    """
    with uow:
        repo = uow.pvp
        inst = repo.instruction(ref)
        legs = repo.legs_by_ref(ref)
        if inst is None and legs and legs[0].terms is not None:
            inst = repo.instruction(legs[0].terms.end_to_end_id)
        if inst is not None and inst.pvp_id and not legs:
            legs = repo.legs_by_ref(inst.pvp_id)
        if inst is None and not legs:
            raise PvPNotFound(f"no PvP, instruction or leg {ref}")
        if not is_operator and not _may_see(uow, subject or "", inst, legs):
            raise PvPNotFound(f"no PvP, instruction or leg {ref}")
        uetrs = [leg.uetr for leg in legs]
        trail = repo.trail(uetrs) if uetrs else []
        audit = repo.audit(uetrs) if uetrs else []
    pvp_id = next((leg.terms.pvp_id for leg in legs if leg.terms and leg.terms.pvp_id), None)
    return PvPView(
        ref,
        pvp_id or (inst.pvp_id if inst else None),
        inst,
        tuple(legs),
        tuple(trail),
        tuple(audit),
    )


def _may_see(uow: PvPUnitOfWork, subject: str, inst: Instruction | None, legs: list[Leg]) -> bool:
    if inst is not None and inst.subject == subject:
        return True
    for leg in legs:
        if leg.terms is None:
            continue
        for wallet_id in (leg.terms.debtor_account, leg.terms.creditor_account):
            wallet = uow.ledger.wallet(wallet_id)
            if wallet is not None and subject in (wallet.id, wallet.owner):
                return True
    return False


def alerts(uow: PvPUnitOfWork, limit: int = 100) -> list[Leg]:
    with uow:
        return uow.pvp.alerted_legs(limit)


__all__ = [
    "INSTRUCTION_TOPIC",
    "ISO_TOPIC",
    "Ack",
    "Actor",
    "DeadlineReport",
    "PvPContext",
    "PvPView",
    "alerts",
    "check_deadlines",
    "inbox_failed",
    "instruct",
    "instruction_delivered",
    "instruction_payload",
    "pending_inbox",
    "process_inbox_item",
    "process_inbox_items",
    "receive_message",
    "receive_messages",
    "record_rejection",
    "resolve",
    "view",
]
