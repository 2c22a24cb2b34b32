"""What the gateway sends the connector: ISO 20022 messages signed, stored in the message trail
and queued in the outbox, all in the caller's transaction; and the pacs.002 statuses they
carry.

With a unit of work that claims what it queues (``PvPUnitOfWork(claim_outbound_for=...)``),
the queued messages come back claimed for the caller to send once the transaction commits;
otherwise an outbox dispatcher sends them, once the caller wakes it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from gateway.iso20022 import Message, OriginalRef, TransactionStatus, build, header_for
from gateway.pvp.context import ISO_TOPIC, PACS009, PvPContext, bic11
from gateway.pvp.model import Leg
from gateway.pvp.store import PvPUnitOfWork

_XML_HEADERS = '{"content-type": "application/xml"}'


def queue_message(
    uow: PvPUnitOfWork, ctx: PvPContext, message: Message, uetrs: Iterable[str], now: datetime
) -> str:
    """Sign, store and queue one outbound message in the caller's transaction; its id.
    Where the repository can, the message's row and its outbox row are one statement."""
    header = header_for(message, from_bic=ctx.gateway_bic, to_bic=ctx.connector_bic, created=now)
    signed = build(message, header, signer=ctx.signer())
    sha = hashlib.sha256(signed).hexdigest()
    trail = uow.pvp.outbound_with(
        signed,
        sha,
        now,
        sender=bic11(ctx.gateway_bic),
        receiver=bic11(ctx.connector_bic),
        msg_def_id=message.MESSAGE_ID,
        msg_id=message.id,
        uetrs=uetrs,
    )
    if trail is None:
        _record(
            uow,
            ctx,
            signed,
            sha,
            now,
            msg_def_id=message.MESSAGE_ID,
            msg_id=message.id,
            uetrs=uetrs,
        )
    uow.outbox.add(
        ISO_TOPIC,
        signed,
        destination=ctx.connector_url.rstrip("/") + "/iso20022/messages",
        headers=_XML_HEADERS,
        event_id=message.id,
        now=now,
        with_=trail,
    )
    return message.id


def record_outbound(
    uow: PvPUnitOfWork,
    ctx: PvPContext,
    signed: bytes,
    now: datetime,
    *,
    msg_def_id: str,
    msg_id: str,
    uetrs: Iterable[str] = (),
    reason: str | None = None,
) -> None:
    """Store a signed message from the gateway to the connector in the message trail, with its
    SHA-256, in the caller's transaction (queueing it to send is the caller's choice)."""
    sha = hashlib.sha256(signed).hexdigest()
    _record(
        uow, ctx, signed, sha, now, msg_def_id=msg_def_id, msg_id=msg_id, uetrs=uetrs, reason=reason
    )


def _record(
    uow: PvPUnitOfWork,
    ctx: PvPContext,
    signed: bytes,
    sha: str,
    now: datetime,
    *,
    msg_def_id: str,
    msg_id: str,
    uetrs: Iterable[str],
    reason: str | None = None,
) -> None:
    uow.pvp.record_message(
        "out",
        signed,
        sha,
        now,
        sender=bic11(ctx.gateway_bic),
        receiver=bic11(ctx.connector_bic),
        msg_def_id=msg_def_id,
        msg_id=msg_id,
        reason=reason,
        uetrs=uetrs,
    )


def original_of(leg: Leg) -> OriginalRef:
    """The reference to the pacs.009 transaction that created the leg."""
    t = leg.terms
    assert t is not None, "only legs with a pacs.009 have an original instruction"
    return OriginalRef(t.msg_id, PACS009, t.end_to_end_id, leg.uetr, t.instr_id, t.tx_id)


def tx_status(
    original: OriginalRef, code: str, reason: str | None, info: str | None = None
) -> TransactionStatus:
    return TransactionStatus(
        original=original,
        status=code,  # type: ignore[arg-type]
        reason=reason if code == "RJCT" else None,
        additional_info=info,
    )


def status_of(leg: Leg, original: OriginalRef) -> TransactionStatus:
    """The status a leg's state answers with (ACSP locked, ACSC settled, RJCT ...)."""
    code, reason = leg.status()
    return tx_status(original, code, reason)


__all__ = ["original_of", "queue_message", "record_outbound", "status_of", "tx_status"]
