"""Messages the benchmarks build: the same sample wherever one is measured."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from gateway.iso20022.models import CreditTransfer, Money, Pacs009, PvPTerms


def fx_pacs009(i: int = 1, *, valid_for: timedelta = timedelta(minutes=5)) -> Pacs009:
    """A single-transaction pacs.009 of a PvP's AED leg (EBIL pays HSBK 50.00 AED), with
    ids numbered ``i``."""
    until = datetime.now(UTC) + valid_for
    tx = CreditTransfer(
        end_to_end_id=f"E{i}",
        uetr=str(uuid.uuid4()),
        amount=Money(5000, "AED"),
        settlement_date=until.date(),
        deadline=until.timetz().replace(microsecond=0),
        debtor_bic="EBILAEAD",
        debtor_account="EBIL-AED",
        debtor_agent_bic="EBILAEAD",
        creditor_agent_bic="HSBKKZKX",
        creditor_bic="HSBKKZKX",
        creditor_account="HSBK-AED",
        pvp=PvPTerms(pvp_id=f"PVP{i}", leg="FX", condition="ab" * 32),
    )
    return Pacs009(msg_id=f"M{i}", created=datetime.now(UTC), transactions=(tx,))
