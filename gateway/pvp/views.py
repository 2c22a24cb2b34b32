"""What the gateway shows of its PvPs: one PvP with its legs, instruction and message trail;
the legs awaiting an operator."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.pvp.model import Instruction, Leg, MessageRecord, PvPNotFound
from gateway.pvp.store import PvPUnitOfWork


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


__all__ = ["PvPView", "alerts", "view"]
