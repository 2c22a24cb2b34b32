"""Participants' instructions and operators' decisions: what people ask of the gateway, as
opposed to what the connector sends it (``gateway.pvp.handlers``).

Each use case returns what it queued for the connector (a stored instruction, the legs an
operator resolved); the caller wakes an outbox dispatcher to send it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from gateway.db import retrying, utcnow
from gateway.errors import IdempotencyConflict, InvalidInput
from gateway.iso20022 import Pacs002
from gateway.ledger import model as lm
from gateway.ledger import service as ledger
from gateway.ledger.errors import CurrencyMismatch
from gateway.pvp.context import INSTRUCTION_TOPIC, PvPContext, bic11, new_msg_id
from gateway.pvp.model import (
    Instruction,
    InstructionState,
    Leg,
    LegState,
    NotAwaitingOperator,
    NotYourWallet,
    PvPNotFound,
)
from gateway.pvp.outbound import original_of, queue_message, status_of
from gateway.pvp.store import PvPUnitOfWork

log = logging.getLogger(__name__)

_BIC = re.compile(r"^[A-Z]{6}[A-Z2-9][A-Z0-9]([A-Z0-9]{3})?$")


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
    """Store a participant's instruction and queue it for the connector: the instruction,
    and whether it was new (and so queued).

    Idempotent by instruction id: the same body answers the stored instruction (created=False),
    another body is refused (DU01). The key's subject must be the DT wallet, or its owner.
    """
    inst.validate()
    subject = inst.subject
    if _BIC.match(subject) and bic11(subject) != bic11(inst.party_bic):
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
            raise CurrencyMismatch(f"wallet {wallet.id} holds {wallet.currency}")
        uow.pvp.insert_instruction(inst)
        uow.outbox.add(
            INSTRUCTION_TOPIC,
            instruction_payload(inst),
            destination=ctx.connector_url.rstrip("/") + "/v1/instructions",
            headers=json.dumps({"instruction_id": inst.instruction_id}),
            event_id=f"instruction-{inst.instruction_id}",
            now=at,
        )
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


def prefetch_followers(uow: PvPUnitOfWork, legs: Iterable[Leg]) -> None:
    """The instructions that follow ``legs`` are asked for now (on PostgreSQL they come with
    the next statement waited for): :func:`follow_instructions` will want them."""
    uow.pvp.prefetch_instructions(leg.terms.end_to_end_id for leg in legs if leg.terms)


def follow_instructions(uow: PvPUnitOfWork, legs: Sequence[Leg], now: datetime) -> None:
    """Instructions follow the DT leg whose EndToEndId is their id."""
    by_e2e = {leg.terms.end_to_end_id: leg for leg in legs if leg.terms is not None}
    if not by_e2e:
        return
    for inst_id, inst in uow.pvp.instructions_for_update(by_e2e).items():
        moved = inst.follow(by_e2e[inst_id], now)
        if moved is not inst:
            uow.pvp.update_instruction(moved)


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
    """An operator's decision on legs past their last-resort deadline (audited): the legs
    moved, whose statuses are queued for the connector in one pacs.002."""
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
        statuses = tuple(status_of(leg, original_of(leg)) for leg in done)
        report = Pacs002(new_msg_id(), at, statuses)
        queue_message(uow, ctx, report, (leg.uetr for leg in done), at)
        follow_instructions(uow, done, at)
        return done

    return retrying(uow, work)


__all__ = [
    "Actor",
    "follow_instructions",
    "instruct",
    "instruction_delivered",
    "instruction_payload",
    "prefetch_followers",
    "resolve",
]
