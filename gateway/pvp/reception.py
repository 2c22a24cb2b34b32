"""Receiving what the connector posts: check, store, and (when the caller asks) apply.

:func:`receive_messages` takes every envelope received at that moment:

1. parse, verify the signature and the addressee, outside any transaction (:func:`_check`);
2. in one transaction, per envelope: deduplicate (the same bytes again are acknowledged as a
   duplicate, other bytes under a known id or a known UETR refused, before anything of it is
   written), store the raw bytes with their SHA-256 and the ``received`` legs of a pacs.009
   (:func:`_store`);
3. per new message, either apply it in that same transaction (``process``: the handlers of
   ``gateway.pvp.handlers``, in a savepoint) or give it an inbox item for later;
4. commit, and return what it produced (:class:`Reception`): the acknowledgements, the
   messages stored for processing, the replies queued claimed for the caller to send.

A refused envelope is answered with a signed admi.002 (:func:`record_rejection`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DBAPIError

from gateway.db import as_transient, retrying, utcnow
from gateway.errors import TransientError
from gateway.faults import crash_point
from gateway.iso20022 import (
    AppHeader,
    CreditTransfer,
    DuplicateMessage,
    Message,
    MessageRejected,
    Pacs009,
    SignatureInvalid,
    admi002_for,
    build,
    parse,
)
from gateway.messaging.outbox import OutboxMessage
from gateway.pvp import handlers
from gateway.pvp.context import PvPContext, bic11, new_msg_id
from gateway.pvp.inbox import AFTER_APPLYING, InboxItem
from gateway.pvp.model import Leg, LegTerms
from gateway.pvp.outbound import record_outbound
from gateway.pvp.store import MessageId, PvPUnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ack:
    """The technical acknowledgement of a received message (202)."""

    msg_id: str
    sha256: str
    duplicate: bool
    inbox_id: int | None = None


@dataclass(frozen=True, slots=True)
class Reception:
    """What one reception transaction produced, once it committed."""

    outcomes: list[Ack | MessageRejected]
    """Per envelope, in order: its acknowledgement, or why it was refused (nothing stored)."""
    inbox: list[InboxItem]
    """New messages stored but not applied, each with its inbox item, as parsed on receipt
    (processing them needs neither a read nor a parse)."""
    claimed: list[OutboxMessage]
    """Replies of the messages applied, queued already claimed for the caller to send (with a
    claiming unit of work; else a dispatcher sends them)."""


def leg_terms(msg: Pacs009, tx: CreditTransfer, ctx: PvPContext) -> LegTerms:
    """What a pacs.009 transaction asks of its leg (its deadline, or the default one)."""
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
    """Parse, verify and address-check an envelope; raises :class:`MessageRejected`.

    The signature is checked first, against the certificate pinned for the sender the header
    names (only the connector has one), before the schema or any rule reads the content
    (:func:`gateway.iso20022.parse`): an envelope the connector did not sign is refused DS0B
    whatever else is wrong with it."""
    sha = hashlib.sha256(raw).hexdigest()
    cert = ctx.connector_cert_pem
    if cert is None:
        # Unsigned input is never trusted: a gateway without a pinned connector refuses all.
        raise SignatureInvalid("no connector certificate is pinned (iso20022.connector_cert_pem)")
    connector = bic11(ctx.connector_bic)
    parsed = parse(
        raw,
        certificate_of=lambda bic: cert if bic11(bic) == connector else None,
        settings=ctx.iso,
        now=now,
    )
    header = parsed.header
    message = parsed.message
    if header is None:  # parse refuses a bare Document: it names no sender
        raise MessageRejected("FF01", "an envelope is required", xpath="/")
    if bic11(header.to_bic) != bic11(ctx.gateway_bic):
        raise MessageRejected(
            "RC01",
            f"addressed to {header.to_bic}, not to the gateway {ctx.gateway_bic}",
            xpath="/BizMsg/AppHdr/To/FIId/FinInstnId/BICFI",
            msg_id=message.id,
        )
    return _Checked(raw, sha, header, message, bic11(header.from_bic))


@dataclass(frozen=True, slots=True)
class _Stored:
    """A new message stored by :func:`_store`; its id is known by the commit."""

    msg_id: str
    sha: str
    message_id: MessageId
    message: Message

    def ack(self) -> Ack:
        return Ack(self.msg_id, self.sha, duplicate=False, inbox_id=self.message_id())


def _store(
    uow: PvPUnitOfWork, c: _Checked, ctx: PvPContext, now: datetime, *, inbox: bool = True
) -> Ack | _Stored:
    """Deduplicate and store one checked envelope in the caller's transaction (raises
    :class:`DuplicateMessage` for other bytes under a known id, or a known UETR); with
    ``inbox``, also the inbox item that has it processed (without, the caller applies it in
    the same transaction, or calls :func:`_add_inbox`).

    Every refusal comes before anything of the envelope is written (the checks only read), so
    a refused envelope leaves nothing behind and needs no savepoint; the legs read for update
    stay locked to the end of the transaction."""
    repo = uow.pvp
    message = c.message
    uetrs = handlers.uetrs_of(message)
    # Applied in this transaction (no inbox item): the instructions its handler will follow
    # are locked and read with the legs, one statement fewer.
    followers = () if inbox else handlers.followers_of(message)
    seen = repo.inbound_sha(
        c.sender, message.MESSAGE_ID, message.id, legs=uetrs, instructions=followers
    )
    if seen == c.sha:
        return Ack(message.id, c.sha, duplicate=True)
    if seen is not None:
        raise DuplicateMessage(
            "DU01",
            f"message id {message.id} already received with other content",
            xpath="/BizMsg/AppHdr/BizMsgIdr",
            msg_id=message.id,
        )
    new_legs: list[Leg] = []
    late: list[Leg] = []
    if isinstance(message, Pacs009):
        existing = repo.legs_for_update(uetrs)
        for i, tx in enumerate(message.transactions):
            leg = existing.get(tx.uetr)
            if leg is None:
                new_legs.append(Leg.receive(tx.uetr, leg_terms(message, tx, ctx), now))
            elif leg.is_tombstone:
                late.append(leg.with_terms(leg_terms(message, tx, ctx), now))
            else:
                raise DuplicateMessage(
                    "AM05",
                    f"UETR {tx.uetr} already instructed",
                    xpath=f"/BizMsg/Document/FICdtTrf/CdtTrfTxInf[{i + 1}]/PmtId/UETR",
                    msg_id=message.id,
                )
    message_id = repo.add_inbound(
        c.raw,
        c.sha,
        now,
        sender=c.sender,
        receiver=bic11(c.header.to_bic),
        msg_def_id=message.MESSAGE_ID,
        msg_id=message.id,
        uetrs=uetrs,
        inbox_at=now + timedelta(seconds=ctx.inbox_retry_after_seconds) if inbox else None,
    )
    repo.insert_legs(new_legs)
    repo.update_legs(late)
    return _Stored(message.id, c.sha, message_id, message)


def _add_inbox(uow: PvPUnitOfWork, message_id: int, ctx: PvPContext, now: datetime) -> None:
    uow.pvp.add_inbox(message_id, now, now + timedelta(seconds=ctx.inbox_retry_after_seconds))


def receive_messages(
    uow: PvPUnitOfWork,
    raws: Sequence[bytes],
    ctx: PvPContext,
    now: datetime | None = None,
    *,
    process: bool = False,
) -> Reception:
    """Verify, deduplicate and store inbound envelopes, all in one transaction.

    An envelope refused there (a duplicate id with other bytes, a UETR already instructed)
    is refused before anything of it is written: it takes nothing of the others with it.

    With ``process``, each new message is also applied in that transaction, in its own
    savepoint, in the order received: one commit (one fsync) where storing, then applying,
    took two, before the 202 instead of after it; a message applied so needs no inbox item.
    A message whose application fails gets its inbox item, stored and unprocessed, as
    without ``process`` (on PostgreSQL, where a failed statement may be reported only by the
    commit, the reception is then stored again without applying anything)."""
    now = now or utcnow()
    outcomes: list[MessageRejected | _Checked] = []
    for raw in raws:
        try:
            outcomes.append(_check(raw, ctx, now))
        except MessageRejected as exc:
            outcomes.append(exc)
    checked = [(i, c) for i, c in enumerate(outcomes) if isinstance(c, _Checked)]
    if not checked:
        return Reception([o for o in outcomes if isinstance(o, MessageRejected)], [], [])
    applied: list[str] = []

    def work(process: bool) -> tuple[list[Ack | _Stored | MessageRejected], list[_Stored]]:
        applied.clear()
        stored: list[Ack | _Stored | MessageRejected] = []
        for _, c in checked:
            try:
                stored.append(_store(uow, c, ctx, now, inbox=not process))
            except MessageRejected as exc:
                stored.append(exc)
        new: list[_Stored] = []
        for done, (_, c) in zip(stored, checked, strict=True):
            if not isinstance(done, _Stored):
                continue
            if process and _apply_in_savepoint(uow, done.msg_id, c.message, ctx, now):
                applied.append(c.message.MESSAGE_ID)
                continue
            if process:
                _add_inbox(uow, done.message_id(), ctx, now)
            new.append(done)
        return stored, new

    try:
        kept, fresh = retrying(uow, lambda: work(process))
    except DBAPIError:
        if not process or uow.engine.dialect.name == "sqlite":
            raise
        # On PostgreSQL a failed statement can be reported after the savepoint that sent it
        # (statements are pipelined): if applying broke the transaction, the messages are
        # stored without it, as when applying fails in its savepoint (the workers apply them).
        log.warning(
            "pvp: a reception that applied what it stored failed; stored only", exc_info=True
        )
        kept, fresh = retrying(uow, lambda: work(False))
    # The ids came back with the commit.
    stored = [r.ack() if isinstance(r, _Stored) else r for r in kept]
    new: list[InboxItem] = [(s.message_id(), s.message) for s in fresh]
    by_index = dict(zip((i for i, _ in checked), stored, strict=True))
    final = [by_index[i] if isinstance(o, _Checked) else o for i, o in enumerate(outcomes)]
    if any(isinstance(r, Ack) and not r.duplicate for r in stored):
        crash_point("pvp.after_inbox", ctx.faults)
    for message_type in applied:
        crash_point(AFTER_APPLYING.get(message_type, "pvp.after_process"), ctx.faults)
    return Reception(final, new, list(uow.claimed))


def _apply_in_savepoint(
    uow: PvPUnitOfWork, msg_id: str, message: Message, ctx: PvPContext, at: datetime
) -> bool:
    """:func:`_apply` in a savepoint of the caller's transaction, which stored the message;
    False (and nothing of it kept) if it failed, other than by a transient conflict, which
    retries the whole unit."""
    try:
        with uow.savepoint():
            handlers.apply(uow, message, ctx, at)
            return True
    except TransientError:
        raise
    except DBAPIError as exc:
        if as_transient(exc) is not None:
            raise  # a conflict (a deadlock, a unique-key race): the whole unit runs again
        _left_to_workers(msg_id)
        return False
    except Exception:
        _left_to_workers(msg_id)
        return False


def _left_to_workers(msg_id: str) -> None:
    log.warning(
        "pvp: applying message %s on receipt failed; left to the workers", msg_id, exc_info=True
    )


def receive_message(
    uow: PvPUnitOfWork, raw: bytes, ctx: PvPContext, now: datetime | None = None
) -> Ack:
    """One envelope: :func:`receive_messages`; raises :class:`MessageRejected`."""
    [outcome] = receive_messages(uow, [raw], ctx, now).outcomes
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
            uow.pvp.record_message(
                "rejected",
                raw[: ctx.iso.max_message_bytes],
                hashlib.sha256(raw).hexdigest(),
                now,
                msg_id=(rejection.msg_id or "")[:35] or None,
                reason=rejection.code[:4],
            )
            record_outbound(
                uow,
                ctx,
                signed,
                now,
                msg_def_id=admi.MESSAGE_ID,
                msg_id=out_id,
                reason=rejection.code[:4],
            )
            uow.commit()
    except Exception:  # storing the trail of junk is best effort; the answer is not
        log.warning("could not store a rejected message (%s)", rejection.code, exc_info=True)
    return signed


__all__ = [
    "Ack",
    "Reception",
    "leg_terms",
    "receive_message",
    "receive_messages",
    "record_rejection",
]
