"""The gateway's handlers of what the connector sends: one per inbound message type, each
applying one message to the legs and the DT ledger and queueing the signed replies, all in the
caller's unit of work (which the caller commits).

- pacs.009: lock each transaction's DT amount (a ``received`` leg becomes ``locked``, or
  ``rejected`` with the ledger's reason, or TM01 when its deadline has passed or is closer than
  the connector's safety margin); answered ACSP / RJCT in one pacs.002.
- pacs.002 from the connector: ACSP/ACSC with the fulfilment commits the lock (``settled``,
  answered ACSC); RJCT releases it (the connector's ABORT).
- camt.056: cancel a leg not yet locked, release a locked one; answered by camt.029.
- pacs.028: the connector asks a leg's status; answered by pacs.002.

A pacs.009 with several transactions locks all its legs as ONE ledger batch; when the batch is
refused, each transaction is retried alone (in a savepoint), so one failing leg does not reject
the others. The answer is one pacs.002 with a status per transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from gateway.errors import GatewayError
from gateway.faults import crash_point
from gateway.iso20022 import (
    Admi002,
    Camt029,
    Camt056,
    CancellationResolution,
    Message,
    OriginalRef,
    Pacs002,
    Pacs009,
    Pacs028,
    TransactionStatus,
)
from gateway.ledger import model as lm
from gateway.ledger import service as ledger
from gateway.logcontext import bound
from gateway.pvp.context import DT_CURRENCY, PACS009, PvPContext, new_msg_id
from gateway.pvp.instructions import follow_instructions, prefetch_followers
from gateway.pvp.model import (
    AM03,
    ARDT,
    CH16,
    NARR,
    TM01,
    DecisionCause,
    FulfilmentMismatch,
    Leg,
    LegState,
    fulfilment_matches,
    iso_reason,
)
from gateway.pvp.outbound import queue_message, status_of, tx_status
from gateway.pvp.store import PvPUnitOfWork

log = logging.getLogger(__name__)


def uetrs_of(message: Message) -> list[str]:
    """The UETRs of the legs a message concerns, in its order."""
    if isinstance(message, Pacs009):
        return [t.uetr for t in message.transactions]
    if isinstance(message, Admi002):
        return []
    return [t.original.uetr for t in getattr(message, "transactions", ())]


def followers_of(message: Message) -> list[str]:
    """The EndToEndIds a pacs.009 or a decision names: the instructions that follow the legs
    it concerns (:func:`~gateway.pvp.instructions.follow_instructions`), as far as the message
    says (the legs' own, read with them, are what the handler follows)."""
    if isinstance(message, Pacs009):
        return [t.end_to_end_id for t in message.transactions]
    if isinstance(message, Pacs002):
        return [e2e for t in message.transactions if (e2e := t.original.end_to_end_id)]
    return []


def _ledger_batch(
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


def apply(uow: PvPUnitOfWork, message: Message, ctx: PvPContext, now: datetime) -> None:
    """Apply one inbound message with the handler of its type, in the caller's transaction
    (its log records carry the message's UETR and PvP id)."""
    with bound(**_log_fields(message)):
        _dispatch(uow, message, ctx, now)


def _dispatch(uow: PvPUnitOfWork, message: Message, ctx: PvPContext, now: datetime) -> None:
    if isinstance(message, Pacs009):
        on_pacs009(uow, message, ctx, now)
    elif isinstance(message, Pacs002):
        on_pacs002(uow, message, ctx, now)
    elif isinstance(message, Camt056):
        on_camt056(uow, message, ctx, now)
    elif isinstance(message, Pacs028):
        on_pacs028(uow, message, ctx, now)
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


def on_pacs009(uow: PvPUnitOfWork, msg: Pacs009, ctx: PvPContext, now: datetime) -> None:
    """Lock each ``received`` leg's amount (or reject it); one pacs.002 answers all."""
    legs = uow.pvp.legs_for_update(t.uetr for t in msg.transactions)
    prefetch_followers(uow, legs.values())
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
        elif leg.too_late(now, ctx.safety_margin_seconds):
            decided[tx.uetr] = leg.reject(TM01, now)
            log.info("pvp leg %s rejected: deadline %s is past or too close", tx.uetr, leg.deadline)
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
    for uetr, error in _ledger_batch(uow, ops, now).items():
        leg = legs[uetr]
        decided[uetr] = leg.lock(now) if error is None else leg.reject(iso_reason(error.code), now)
        if error is not None:
            log.info("pvp leg %s rejected: %s %s", uetr, error.code, error.detail)
    uow.pvp.update_legs(list(decided.values()))
    final = {**legs, **decided}
    statuses = [
        status_of(
            final[tx.uetr],
            OriginalRef(msg.msg_id, PACS009, tx.end_to_end_id, tx.uetr, tx.instr_id, tx.tx_id),
        )
        for tx in msg.transactions
    ]
    queue_message(uow, ctx, Pacs002(new_msg_id(), now, tuple(statuses)), final, now)
    follow_instructions(uow, list(final.values()), now)
    crash_point("pvp.before_lock", ctx.faults)


def on_pacs002(uow: PvPUnitOfWork, msg: Pacs002, ctx: PvPContext, now: datetime) -> None:
    """The connector's decision: a fulfilment commits a locked leg, RJCT releases it."""
    legs = uow.pvp.legs_for_update(t.original.uetr for t in msg.transactions)
    prefetch_followers(uow, legs.values())
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
                    replies[uetr] = tx_status(tx.original, "RJCT", CH16, "fulfilment mismatch")
                else:
                    fulfilments[uetr] = fulfilment
                    commits.append((uetr, lm.CommitLock(id=leg.lock_id, fulfilment=fulfilment)))
            elif leg.state is LegState.SETTLED and not fulfilment_matches(
                (leg.terms.condition if leg.terms else None) or "", fulfilment
            ):
                replies[uetr] = tx_status(tx.original, "RJCT", CH16, "fulfilment mismatch")
            elif not uow.pvp.reply_pending(uetr):
                replies[uetr] = status_of(leg, tx.original)  # a re-sent decision: same answer
            # else: the answer to the first copy still waits in the outbox and answers this one
            # too (a copy per re-sent decision would only lengthen that queue).
        elif tx.status == "RJCT" and leg.state is LegState.LOCKED:
            releases.append((uetr, lm.ReleaseLock(id=leg.lock_id)))  # the connector's ABORT
        # PDNG / ACSP without fulfilment: no decision yet; the deadline check asks again.
    changed: list[Leg] = []
    for uetr, error in _ledger_batch(uow, commits, now).items():
        leg = legs[uetr]
        if error is None:
            settled = leg.settle(fulfilments[uetr], now)
            changed.append(settled)
            replies[uetr] = status_of(settled, originals[uetr])
        else:
            log.error("pvp leg %s: commit refused by the ledger: %s", uetr, error.detail)
            replies[uetr] = tx_status(
                originals[uetr], "RJCT", iso_reason(error.code), error.detail[:100]
            )
    for uetr, error in _ledger_batch(uow, releases, now).items():
        if error is not None:
            raise error  # a release cannot be refused; retry the whole message later
        changed.append(legs[uetr].release(now))
    uow.pvp.update_legs(changed)
    if replies:
        order = [t.original.uetr for t in msg.transactions if t.original.uetr in replies]
        sts = tuple(replies[u] for u in dict.fromkeys(order))
        queue_message(uow, ctx, Pacs002(new_msg_id(), now, sts), replies, now)
    follow_instructions(uow, changed, now)
    if commits:
        crash_point("pvp.before_commit", ctx.faults)


def on_camt056(uow: PvPUnitOfWork, msg: Camt056, ctx: PvPContext, now: datetime) -> None:
    """Cancel or release each leg (a tombstone for an unknown UETR); camt.029 answers."""
    legs = uow.pvp.legs_for_update(t.original.uetr for t in msg.transactions)
    prefetch_followers(uow, legs.values())
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
    for uetr, error in _ledger_batch(uow, releases, now).items():
        if error is not None:
            raise error
        changed.append(legs[uetr].release(now, cause=DecisionCause.CAMT056))
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
            queue_message(uow, ctx, reply, group, now)
    follow_instructions(uow, changed, now)


def on_pacs028(uow: PvPUnitOfWork, msg: Pacs028, ctx: PvPContext, now: datetime) -> None:
    """Answer the connector's status request with each leg's status in a pacs.002."""
    legs = uow.pvp.legs(t.original.uetr for t in msg.transactions)
    statuses = []
    for tx in msg.transactions:
        leg = legs.get(tx.original.uetr)
        if leg is None:
            statuses.append(tx_status(tx.original, "RJCT", NARR, "unknown UETR: no pacs.009"))
        else:
            statuses.append(status_of(leg, tx.original))
    queue_message(uow, ctx, Pacs002(new_msg_id(), now, tuple(statuses)), legs, now)


__all__ = [
    "apply",
    "followers_of",
    "on_camt056",
    "on_pacs002",
    "on_pacs009",
    "on_pacs028",
    "uetrs_of",
]
