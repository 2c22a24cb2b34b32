"""Processing what was received and stored: the inbox.

An inbound message that was stored but not applied on receipt has an inbox item. Processing
it (:func:`process_items`) takes a row lock on the item, applies the message with
``gateway.pvp.handlers`` and marks the item done, all in one transaction with the replies it
queues: a crash before the commit leaves the item unprocessed, and it is processed again;
after it, the replies are in the outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.db import retrying, utcnow
from gateway.faults import crash_point
from gateway.iso20022 import Message, parse
from gateway.messaging.outbox import OutboxMessage
from gateway.pvp import handlers
from gateway.pvp.context import PvPContext
from gateway.pvp.store import PvPUnitOfWork

InboxItem = tuple[int, Message | None]
"""A stored message's id, and the message as parsed on receipt (None: read it back)."""

AFTER_APPLYING = {
    "pacs.009.001.08": "pvp.after_lock",
    "pacs.002.001.10": "pvp.after_commit",
    "camt.056.001.08": "pvp.after_release",
}
"""The crash point (``gateway.faults``) reached once a message of that type is applied and
committed; ``pvp.after_process`` for the others."""


@dataclass(frozen=True, slots=True)
class Processed:
    """What one processing transaction produced, once it committed."""

    applied: list[bool]
    """Per item: False when it had been processed already."""
    claimed: list[OutboxMessage]
    """The replies queued, claimed for the caller to send (with a claiming unit of work;
    else a dispatcher sends them)."""


def process_items(
    uow: PvPUnitOfWork,
    items: Sequence[InboxItem],
    ctx: PvPContext,
    now: datetime | None = None,
) -> Processed:
    """Apply stored inbound messages in order, in one transaction (one commit for all).

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
            crash_point(AFTER_APPLYING.get(message_type, "pvp.after_process"), ctx.faults)
    return Processed([t is not None for t in done], list(uow.claimed))


def _process(
    uow: PvPUnitOfWork, message_id: int, parsed: Message | None, ctx: PvPContext, at: datetime
) -> str | None:
    """Claim and apply one inbox item; its message type, or None if it was processed."""
    if not uow.pvp.inbox_claim(message_id, at, () if parsed is None else handlers.uetrs_of(parsed)):
        return None
    message = parsed
    if message is None:
        stored = uow.pvp.message_raw(message_id)
        assert stored is not None
        raw, _sender = stored
        # Verified on receipt (the signature is not checked twice). Later clocks only make
        # the "not in the future" rule easier, so a message that waited still parses.
        message = parse(raw, settings=ctx.iso, now=at).message
    handlers.apply(uow, message, ctx, at)
    uow.pvp.inbox_done(message_id, at)
    return message.MESSAGE_ID


def record_failure(
    uow: PvPUnitOfWork, message_id: int, error: str, now: datetime | None = None
) -> None:
    """Record a processing failure; the recovery job tries again after a backoff."""
    at = now or utcnow()

    def work() -> None:
        attempts = uow.pvp.inbox_attempts(message_id) + 1
        delay = min(60.0, 0.5 * 2 ** min(attempts, 10))
        uow.pvp.inbox_failed(message_id, error, at + timedelta(seconds=delay))

    retrying(uow, work)


def pending(uow: PvPUnitOfWork, *, everything: bool, limit: int = 500) -> list[int]:
    """Inbox items awaiting processing: all of them (at start), or those the workers left."""
    with uow:
        return uow.pvp.inbox_due(None if everything else utcnow(), limit)


__all__ = ["AFTER_APPLYING", "InboxItem", "Processed", "pending", "process_items", "record_failure"]
