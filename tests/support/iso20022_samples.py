"""Sample messages and hypothesis strategies for the ISO 20022 tests, unit and integration."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time, timedelta, timezone

from hypothesis import strategies as st

from gateway.iso20022 import (
    Admi002,
    Camt029,
    Camt056,
    CancellationRequest,
    CancellationResolution,
    CreditTransfer,
    Message,
    Money,
    OriginalRef,
    Pacs002,
    Pacs004,
    Pacs009,
    Pacs028,
    PaymentReturn,
    PvPTerms,
    StatusRequest,
    TransactionStatus,
)

NOW = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
GATEWAY_BIC = "NBKZKZKAXXX"
CONNECTOR_BIC = "SWCBCHZZXXX"
SECRET = bytes(range(32))
CONDITION = hashlib.sha256(SECRET).hexdigest()


def uetr(n: int = 1) -> str:
    return f"{n:08x}-0000-4000-8000-000000000000"


def credit_transfer(n: int = 1, minor: int = 1_000_000, ccy: str = "KZT") -> CreditTransfer:
    return CreditTransfer(
        end_to_end_id=f"E2E-{n}",
        uetr=uetr(n),
        amount=Money(minor, ccy),
        settlement_date=NOW.date(),
        debtor_bic="CBAEAEAAXXX",
        debtor_account="wallet-cbuae-1",
        debtor_agent_bic=CONNECTOR_BIC,
        creditor_agent_bic=GATEWAY_BIC,
        creditor_bic="HSBKKZKXXXX",
        creditor_account="wallet-hsbk-7",
        deadline=time(12, 0, tzinfo=UTC),
        pvp=PvPTerms("PVP-2025-0001", "DT", CONDITION),
        instr_id=f"I-{n}",
    )


def pacs009(n_tx: int = 1, msg_id: str = "MSG-009-1") -> Pacs009:
    return Pacs009(msg_id, NOW, tuple(credit_transfer(i + 1) for i in range(n_tx)))


def original(n: int = 1) -> OriginalRef:
    return OriginalRef("MSG-009-1", "pacs.009.001.08", f"E2E-{n}", uetr(n))


def pacs002(status: str = "ACSP", reason: str | None = None, fulfil: bool = False) -> Pacs002:
    terms = PvPTerms("PVP-2025-0001", "DT", CONDITION, SECRET.hex() if fulfil else None)
    return Pacs002(
        "MSG-002-1",
        NOW,
        (TransactionStatus(original(), status, reason, pvp=terms if fulfil else None),),  # type: ignore[arg-type]
    )


def samples() -> list[Message]:
    """One hand-written message of every type."""
    return [
        pacs009(),
        pacs002(),
        pacs002("RJCT", "AM04"),
        pacs002("ACSC", fulfil=True),
        Pacs004(
            "MSG-004-1",
            NOW,
            (PaymentReturn("RTR-1", original(), Money(5, "AED"), NOW.date(), "AC04"),),
        ),
        Pacs028("MSG-028-1", NOW, (StatusRequest(original(), "SR-1"),)),
        Camt056(
            "CXL-1",
            CONNECTOR_BIC,
            GATEWAY_BIC,
            NOW,
            (
                CancellationRequest(
                    "CXL-1-1", original(), Money(1_000_000, "KZT"), NOW.date(), "TMOT"
                ),
            ),
        ),
        Camt029(
            "RES-1",
            GATEWAY_BIC,
            CONNECTOR_BIC,
            NOW,
            "CNCL",
            (CancellationResolution(original(), "ACCR"),),
        ),
        Admi002("MSG-009-1", "FF01", NOW, "/BizMsg/Document", "not well-formed"),
    ]


# --- hypothesis -----------------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.:\-]{0,34}", fullmatch=True)
wallets = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.:\-]{0,33}", fullmatch=True)
bics = st.from_regex(r"[A-Z]{6}[A-Z2-9][A-Z0-9]([A-Z0-9]{3})?", fullmatch=True)
uetrs = st.uuids(version=4).map(str)
codes = st.from_regex(r"[A-Z0-9]{4}", fullmatch=True)
currencies = st.sampled_from(["KZT", "AED", "CNY", "TRY", "USD", "EUR", "SAR", "HKD", "THB"])
money = st.builds(Money, st.integers(1, 10**12), currencies)
texts = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=105
).filter(lambda s: s.strip() == s and s.strip() != "")
hex32 = st.binary(min_size=32, max_size=32).map(bytes.hex)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5)), timezone(timedelta(hours=-3, minutes=-30))]
)
created = st.builds(
    lambda secs, us, tz: (NOW - timedelta(seconds=secs, microseconds=us)).astimezone(tz),
    st.integers(0, 86_400 * 30),
    st.integers(0, 999_999),
    offsets,
)
deadlines = st.builds(
    lambda h, m, tz: time(h, m, tzinfo=tz), st.integers(0, 23), st.integers(0, 59), offsets
)
settle_dates = st.integers(-1, 30).map(lambda d: NOW.date() + timedelta(days=d))
terms = st.builds(PvPTerms, ids, st.from_regex(r"[A-Z0-9]{1,8}", fullmatch=True), hex32)


@st.composite
def fulfilled_terms(draw: st.DrawFn) -> PvPTerms:
    secret = draw(st.binary(min_size=32, max_size=32))
    return PvPTerms(
        draw(ids),
        draw(st.sampled_from(["DT", "FX", "A", "B"])),
        hashlib.sha256(secret).hexdigest(),
        secret.hex(),
    )


originals = st.builds(
    OriginalRef,
    ids,
    st.sampled_from(["pacs.009.001.08", "pacs.004.001.09"]),
    ids,
    uetrs,
    st.none() | ids,
    st.none() | ids,
)


def _unique_uetrs(txs: list[CreditTransfer]) -> bool:
    return len({t.uetr for t in txs}) == len(txs)


credit_transfers = st.builds(
    CreditTransfer,
    ids,
    uetrs,
    money,
    st.just(NOW.date()),
    bics,
    wallets,
    bics,
    bics,
    bics,
    wallets,
    st.none() | deadlines,
    st.none() | terms,
    st.none() | ids,
    st.none() | ids,
)


@st.composite
def pacs009s(draw: st.DrawFn, max_tx: int = 5) -> Pacs009:
    txs = draw(st.lists(credit_transfers, min_size=1, max_size=max_tx).filter(_unique_uetrs))
    c = draw(created)
    txs = [
        CreditTransfer(
            **{
                **_fields(t),
                "settlement_date": c.astimezone(UTC).date()
                + timedelta(days=draw(st.integers(-1, 30))),
            }
        )
        for t in txs
    ]
    return Pacs009(draw(ids), c, tuple(txs), draw(st.sampled_from(["INDA", "INGA", "CLRG"])))


def _fields(obj: object) -> dict[str, object]:
    return {f: getattr(obj, f) for f in obj.__dataclass_fields__}  # type: ignore[attr-defined]


@st.composite
def statuses(draw: st.DrawFn) -> TransactionStatus:
    status = draw(st.sampled_from(["ACTC", "PDNG", "ACSP", "ACSC", "RJCT"]))
    reason = draw(codes) if status == "RJCT" else draw(st.none() | codes)
    return TransactionStatus(
        draw(originals),
        status,
        reason,
        draw(st.none() | texts) if reason else None,  # type: ignore[arg-type]
        draw(st.none() | ids),
        draw(st.none() | created),
        draw(st.none() | fulfilled_terms() | terms),
    )


pacs002s = st.builds(Pacs002, ids, created, st.lists(statuses(), min_size=1, max_size=5).map(tuple))


@st.composite
def returns(draw: st.DrawFn) -> PaymentReturn:
    reason = draw(st.none() | codes)
    return PaymentReturn(
        draw(ids),
        draw(originals),
        draw(money),
        NOW.date(),
        reason,
        draw(st.none() | texts) if reason else None,
    )


pacs004s = st.builds(
    lambda i, txs, m: Pacs004(i, NOW, tuple(txs), m),
    ids,
    st.lists(returns(), min_size=1, max_size=5),
    st.sampled_from(["INDA", "INGA", "CLRG"]),
)
pacs028s = st.builds(
    Pacs028,
    ids,
    created,
    st.lists(st.builds(StatusRequest, originals, st.none() | ids), min_size=1, max_size=5).map(
        tuple
    ),
)


@st.composite
def cancellations(draw: st.DrawFn) -> CancellationRequest:
    reason = draw(st.none() | codes)
    return CancellationRequest(
        draw(ids),
        draw(originals),
        draw(money),
        draw(st.none() | settle_dates),
        reason,
        draw(st.none() | texts) if reason else None,
    )


camt056s = st.builds(
    Camt056, ids, bics, bics, created, st.lists(cancellations(), min_size=1, max_size=5).map(tuple)
)


@st.composite
def resolutions(draw: st.DrawFn) -> CancellationResolution:
    reason = draw(st.none() | codes)
    return CancellationResolution(
        draw(originals),
        draw(st.sampled_from(["ACCR", "RJCR", "PDCR"])),
        reason,
        draw(st.none() | texts) if reason else None,
        draw(st.none() | ids),
    )


camt029s = st.builds(
    Camt029,
    ids,
    bics,
    bics,
    created,
    st.sampled_from(["CNCL", "RJCR", "PDCR"]),
    st.lists(resolutions(), min_size=1, max_size=5).map(tuple),
)
admi002s = st.builds(
    Admi002, ids, codes, created, st.none() | texts.map(lambda s: s[:350]), st.none() | texts
)

messages = st.one_of(pacs009s(), pacs002s, pacs004s, pacs028s, camt056s, camt029s, admi002s)
