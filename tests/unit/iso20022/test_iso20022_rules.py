"""Schema and business-rule failures map to ISO reason codes with the XPath of the fault."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.iso20022 import (
    DuplicateMessage,
    InMemoryDuplicateCheck,
    Message,
    MessageRejected,
    Money,
    admi002_for,
    build,
    build_admi002,
    header_for,
    parse,
)
from tests.support.iso20022_samples import (
    CONNECTOR_BIC,
    GATEWAY_BIC,
    NOW,
    credit_transfer,
    pacs002,
    pacs009,
    samples,
)


def _env(message: Message) -> bytes:
    return build(
        message, header_for(message, from_bic=CONNECTOR_BIC, to_bic=GATEWAY_BIC, created=NOW)
    )


VALID = _env(pacs009())
TX = "/BizMsg/Document/FICdtTrf/CdtTrfTxInf"


def _refused(data: bytes, **kw: object) -> MessageRejected:
    with pytest.raises(MessageRejected) as err:
        parse(data, now=NOW, **kw)  # type: ignore[arg-type]
    return err.value


@pytest.mark.parametrize(
    ("old", "new", "code", "xpath"),
    [
        (b"<EndToEndId>E2E-1</EndToEndId>", b"", "CH21", f"{TX}/PmtId/UETR"),
        (b"</DbtrAgt>", b"</DbtrAgt><Foo/>", "CH17", f"{TX}/Foo"),
        (b'Ccy="KZT"', b'Ccy="GBP"', "AM03", f"{TX}/IntrBkSttlmAmt/@Ccy"),
        (b'KZT">10000.00', b'KZT">10000.001', "AM12", f"{TX}/IntrBkSttlmAmt"),
        (b'KZT">10000.00', b'KZT">0.00', "AM12", f"{TX}/IntrBkSttlmAmt"),
        (b'KZT">10000.00', b'KZT">-5.00', "AM12", f"{TX}/IntrBkSttlmAmt"),
        (b"<BICFI>HSBKKZKXXXX", b"<BICFI>hsbkkzkx", "RC01", f"{TX}/Cdtr/FinInstnId/BICFI"),
        (b"<IntrBkSttlmDt>2025-03-14", b"<IntrBkSttlmDt>2025-02-30", "DT01", f"{TX}/IntrBkSttlmDt"),
        (b"<UETR>00000001-0000-4000", b"<UETR>00000001-0000-1000", "CH16", f"{TX}/PmtId/UETR"),
    ],
    ids=[
        "missing",
        "not-admitted",
        "currency",
        "decimals",
        "zero",
        "negative",
        "bic",
        "date",
        "uetr",
    ],
)
def test_schema_faults_map_to_reason_codes(old: bytes, new: bytes, code: str, xpath: str) -> None:
    assert old in VALID
    err = _refused(VALID.replace(old, new, 1))
    assert (err.code, err.xpath) == (code, xpath)
    assert err.msg_id == "MSG-009-1"


def test_nb_of_txs_must_match() -> None:
    err = _refused(VALID.replace(b"<NbOfTxs>1<", b"<NbOfTxs>2<"))
    assert (err.code, err.xpath) == ("AM18", "/BizMsg/Document/FICdtTrf/GrpHdr/NbOfTxs")


def test_control_sum_must_match() -> None:
    err = _refused(VALID.replace(b"<CtrlSum>10000.00<", b"<CtrlSum>10000.01<"))
    assert (err.code, err.xpath) == ("AM10", "/BizMsg/Document/FICdtTrf/GrpHdr/CtrlSum")


def test_control_sum_over_many_transactions_is_exact() -> None:
    msg = pacs009(3)
    assert parse(build(msg), now=NOW).message == msg
    assert b"<CtrlSum>30000.00<" in build(msg)


def test_max_transactions_from_settings() -> None:
    from gateway.config import Iso20022Settings

    err = _refused(build(pacs009(3)), settings=Iso20022Settings(max_transactions=2))
    assert err.code == "AM18"


def test_header_must_name_the_document_type_and_id() -> None:
    err = _refused(VALID.replace(b"<BizMsgIdr>MSG-009-1<", b"<BizMsgIdr>OTHER<"))
    assert (err.code, err.xpath) == ("CH16", "/BizMsg/AppHdr/BizMsgIdr")
    err = _refused(VALID.replace(b"<MsgDefIdr>pacs.009.001.08<", b"<MsgDefIdr>pacs.002.001.10<"))
    assert (err.code, err.xpath) == ("CH16", "/BizMsg/AppHdr/MsgDefIdr")


def test_camt_header_parties_must_match_the_assignment() -> None:
    cancel = samples()[6]
    data = build(
        cancel, header_for(cancel, from_bic="OTHRGB2LXXX", to_bic=GATEWAY_BIC, created=NOW)
    )
    assert _refused(data).code == "CH16"


def test_creation_in_the_future_is_refused() -> None:
    msg = replace(pacs009(), created=NOW + timedelta(hours=1))
    err = _refused(build(msg))
    assert (err.code, err.xpath) == ("DT01", "/Document/FICdtTrf/GrpHdr/CreDtTm")


def test_settlement_date_far_from_creation_is_refused() -> None:
    tx = replace(credit_transfer(), settlement_date=NOW.date() + timedelta(days=90))
    err = _refused(build(replace(pacs009(), transactions=(tx,))))
    assert (err.code, err.xpath) == ("DT01", "/Document/FICdtTrf/CdtTrfTxInf[1]/IntrBkSttlmDt")


def test_creation_at_the_edge_of_the_calendar_is_refused_not_a_crash() -> None:
    first_day = datetime(1, 1, 1, tzinfo=UTC)
    tx = replace(credit_transfer(), settlement_date=first_day.date())
    msg = replace(pacs009(), created=first_day, transactions=(tx,))
    err = _refused(build(msg, validate=False))
    assert (err.code, err.xpath) == ("DT01", "/Document/FICdtTrf/GrpHdr/CreDtTm")


def test_settlement_window_does_not_depend_on_the_senders_offset() -> None:
    # 23:30 at -05:00 is already the next day in UTC: the window is taken in UTC either way.
    created = datetime(2025, 3, 13, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    tx = replace(credit_transfer(), settlement_date=created.astimezone(UTC).date())
    for when in (created, created.astimezone(UTC)):
        parsed = parse(build(replace(pacs009(), created=when, transactions=(tx,))), now=NOW)
        assert parsed.message.transactions[0].settlement_date == tx.settlement_date


def test_same_uetr_twice_in_one_message_is_refused() -> None:
    txs = (credit_transfer(1), replace(credit_transfer(2), uetr=credit_transfer(1).uetr))
    err = _refused(build(replace(pacs009(), transactions=txs)))
    assert (err.code, err.xpath) == ("AM05", "/Document/FICdtTrf/CdtTrfTxInf[2]/PmtId/UETR")


def test_duplicate_message_id_is_refused_by_the_hook() -> None:
    seen = InMemoryDuplicateCheck()
    parse(VALID, seen=seen, now=NOW)
    with pytest.raises(DuplicateMessage) as err:
        parse(VALID, seen=seen, now=NOW)
    assert (err.value.code, err.value.xpath) == ("DU01", "/BizMsg/AppHdr/BizMsgIdr")
    assert err.value.kind == "conflict"


def test_duplicate_uetr_under_a_new_message_id_is_refused_by_the_hook() -> None:
    seen = InMemoryDuplicateCheck()
    parse(VALID, seen=seen, now=NOW)
    again = _env(replace(pacs009(), msg_id="MSG-009-2"))
    with pytest.raises(DuplicateMessage) as err:
        parse(again, seen=seen, now=NOW)
    assert err.value.code == "AM05"
    assert err.value.xpath == f"{TX}[1]/PmtId/UETR"


def test_rejection_without_reason_code_is_refused() -> None:
    err = _refused(build(pacs002("RJCT", None)))
    assert err.code == "CH21"


def test_fulfilment_must_hash_to_the_condition() -> None:
    good = build(pacs002("ACSC", fulfil=True))
    parse(good, now=NOW)
    tx = pacs002("ACSC", fulfil=True).transactions[0]
    assert tx.pvp is not None
    bad_terms = replace(tx.pvp, fulfilment="00" * 32)
    bad = replace(pacs002(), transactions=(replace(tx, pvp=bad_terms),))
    err = _refused(build(bad))
    assert err.code == "CH16"
    assert err.xpath is not None and err.xpath.endswith("PvPLock/Flfmt")


def test_instruction_never_carries_a_fulfilment() -> None:
    tx = credit_transfer()
    assert tx.pvp is not None
    msg = replace(pacs009(), transactions=(replace(tx, pvp=replace(tx.pvp, fulfilment="ab" * 32)),))
    assert _refused(build(msg)).code == "CH16"


def test_rejection_becomes_an_admi002() -> None:
    err = _refused(VALID.replace(b'Ccy="KZT"', b'Ccy="GBP"'))
    reject = admi002_for(err, now=NOW)
    assert (reject.related_ref, reject.reason) == ("MSG-009-1", "AM03")
    assert reject.error_location == f"{TX}/IntrBkSttlmAmt/@Ccy"
    assert parse(build_admi002(reject), now=NOW).message == reject


def test_unknown_offender_is_nonref_in_admi002() -> None:
    reject = admi002_for(_refused(b"garbage"), now=NOW)
    assert reject.related_ref == "NONREF"
    assert reject.reason == "FF01"


def test_money_refuses_unsettled_currency() -> None:
    from gateway.iso20022 import AmountError

    with pytest.raises(AmountError):
        Money(100, "XYZ")
