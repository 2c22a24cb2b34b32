"""The pacs.009 the connector writes for a leg states the deadline it decides by, to the
millisecond: a receiver that refuses a pacs.009 too close to its TillTm (the gateway answers
TM01) never sees an earlier deadline than the connector's own."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from gateway.connector.messages import PvPRef, credit_transfer
from gateway.iso20022 import Pacs009, build

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LEG = SimpleNamespace(
    end_to_end_id="E2E-1",
    uetr="7d3b5f0e-6a55-4b8e-9a5e-2f1f7c1b8a10",
    amount=100_000,
    currency="KZT",
    debtor_bic="HSBKKZKX",
    debtor_account="hsbk-dt",
    creditor_bic="EBILAEAD",
    creditor_account="ebil-dt",
    leg="DT",
)


def _till_tm(deadline_ms: int) -> str:
    tx = credit_transfer(PvPRef("PVP1", deadline_ms, "c" * 64), _LEG)
    xml = build(Pacs009(msg_id="M1", created=datetime.now(UTC), transactions=(tx,))).decode()
    match = re.search(r"<TillTm>([^<]+)</TillTm>", xml)
    assert match, xml
    return match.group(1)


@pytest.mark.parametrize(
    ("deadline_ms", "written"),
    [
        (1_700_000_000_999, "22:13:20.999000+00:00"),
        (1_700_000_000_001, "22:13:20.001000+00:00"),
        (1_700_000_000_000, "22:13:20+00:00"),
    ],
)
def test_till_tm_is_the_deadline_to_the_millisecond(deadline_ms: int, written: str) -> None:
    # The guideline schema admits the fraction (build validates against it).
    assert _till_tm(deadline_ms) == written


@pytest.mark.parametrize("deadline_ms", [1_700_000_000_999, 1_700_000_000_123, 4_102_444_799_999])
def test_the_deadline_read_back_is_the_connectors_own(deadline_ms: int) -> None:
    tx = credit_transfer(PvPRef("PVP1", deadline_ms, "c" * 64), _LEG)
    assert tx.deadline_at is not None
    assert (tx.deadline_at - _EPOCH) // timedelta(milliseconds=1) == deadline_ms
