"""Builders shared by the PvP unit tests: leg terms and instructions for the model, and the
inbound messages (pacs.009, pacs.002, camt.056) the handlers are fed."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time

from gateway.iso20022 import (
    Camt056,
    CancellationRequest,
    CreditTransfer,
    Money,
    OriginalRef,
    Pacs002,
    PvPTerms,
    TransactionStatus,
)
from gateway.pvp.model import Instruction, InstructionState, Leg, LegTerms, Side
from tests.support.ledger_fakes import NOW, fund, open_wallets
from tests.unit.pvp.fakes import GATEWAY_BIC, FakePvPUnitOfWork

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SECRET = bytes(range(32))
COND = hashlib.sha256(SECRET).hexdigest()
U1, U2, U3, U9 = (f"00000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3, 9))


# ----------------------------------------------------------------------------- the model


def terms(condition: str | None = COND, deadline: datetime = T0) -> LegTerms:
    return LegTerms(
        msg_id="P9-1",
        end_to_end_id="hsbk-1",
        pvp_id="PVP-1",
        leg="DT",
        amount=100,
        currency="KZT",
        debtor_bic="HSBKKZKX",
        debtor_account="hsbk-dt",
        creditor_bic="CBAUAEAA",
        creditor_account="cbuae-dt",
        condition=condition,
        deadline=deadline,
    )


def received(condition: str | None = COND) -> Leg:
    return Leg.receive("u-1", terms(condition), T0)


def instruction(**kw: object) -> Instruction:
    base: dict[str, object] = {
        "instruction_id": "hsbk-1",
        "subject": "hsbk-dt",
        "party_bic": "HSBKKZKX",
        "counterparty_bic": "EBILAEAD",
        "sell": Side("KZT", 100, "hsbk-dt"),
        "buy": Side("AED", 8, "HSBKKZKX"),
        "value_time": T0,
        "state": InstructionState.ACCEPTED,
        "created_at": T0,
        "updated_at": T0,
    }
    return Instruction(**{**base, **kw})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the messages


def credit_transfer(uetr: str, amount: int, settles: datetime, deadline: time) -> CreditTransfer:
    """One DT leg of a pacs.009, from hsbk-dt to cbuae-dt, locked under ``COND``."""
    return CreditTransfer(
        end_to_end_id=f"E2E-{uetr[-4:]}",
        uetr=uetr,
        amount=Money(amount, "KZT"),
        settlement_date=settles.date(),
        debtor_bic="HSBKKZKXXXX",
        debtor_account="hsbk-dt",
        debtor_agent_bic=GATEWAY_BIC,
        creditor_agent_bic=GATEWAY_BIC,
        creditor_bic="CBAUAEAAXXX",
        creditor_account="cbuae-dt",
        deadline=deadline,
        pvp=PvPTerms("PVP-1", "DT", COND),
    )


def original(uetr: str, msg_id: str = "P9-1") -> OriginalRef:
    return OriginalRef(msg_id, "pacs.009.001.08", f"E2E-{uetr[-4:]}", uetr)


def decision(uetr: str, status: str, secret: bytes | None = SECRET, mid: str = "D2") -> Pacs002:
    pvp = None
    if secret is not None:
        pvp = PvPTerms("PVP-1", "DT", hashlib.sha256(secret).hexdigest(), secret.hex())
    tx = TransactionStatus(original(uetr), status, pvp=pvp)  # type: ignore[arg-type]
    return Pacs002(mid, NOW, (tx,))


def cancel(uetr: str, amount: int = 250_000) -> Camt056:
    req = CancellationRequest("X-1", original(uetr), Money(amount, "KZT"), reason="TMOT")
    return Camt056("C56-1", "SWHQBEBBXXX", GATEWAY_BIC, NOW, (req,))


def statuses(uow: FakePvPUnitOfWork) -> list[tuple[str, str, str | None]]:
    """(UETR, status, reason) of every pacs.002 the gateway queued, in order."""
    return [
        (t.original.uetr, t.status, t.reason)
        for m in uow.sent()
        if isinstance(m, Pacs002)
        for t in m.transactions
    ]


def funded_uow() -> FakePvPUnitOfWork:
    """hsbk-dt and cbuae-dt open, hsbk-dt holding 1,000,000: where the handlers' tests start."""
    u = FakePvPUnitOfWork()
    open_wallets(u, "hsbk-dt", "cbuae-dt")
    fund(u, "hsbk-dt", 1_000_000)
    return u
