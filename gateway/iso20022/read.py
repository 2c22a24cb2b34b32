"""Schema-valid ISO 20022 elements -> typed models.

Readers run only after schema validation, so the structure is known; they walk children
once through a tag -> element map instead of repeated path searches (the hot path).
Conversions that the schema cannot fully check (calendar dates, amounts) raise
:class:`ValueError` or :class:`~gateway.iso20022.errors.AmountError`; the codec maps them to
reason codes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any, cast

from lxml.etree import _Element as _E

from gateway.iso20022.amounts import from_iso_amount
from gateway.iso20022.build import _Ns
from gateway.iso20022.models import (
    Admi002,
    AppHeader,
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
from gateway.iso20022.xmlsafe import HEAD_NS, ISO_NS_PREFIX, PVP_NS


def _kids(el: _E) -> dict[Any, _E]:
    return {c.tag: c for c in el}


def _t(el: _E) -> str:
    return el.text or ""


def _opt(kids: dict[Any, _E], tag: str) -> str | None:
    el = kids.get(tag)
    return None if el is None else (el.text or "")


def parse_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        raise ValueError(f"date-time {text!r} has no offset")
    return value


def parse_time(text: str) -> time:
    value = time.fromisoformat(text.strip())
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset")
    return value


def parse_date(text: str) -> date:
    return date.fromisoformat(text.strip())


def _money(el: _E) -> Money:
    ccy = el.get("Ccy") or ""
    return Money(from_iso_amount(_t(el), ccy), ccy)


def _bic(q: _Ns, el: _E) -> str:
    return _t(el[0][0])  # Agent/FinInstnId/BICFI: the only children the guideline admits


def _wallet(el: _E) -> str:
    return _t(el[0][0][0])  # Acct/Id/Othr/Id


_P = _Ns(PVP_NS)
_PVP_ID, _PVP_LEG, _PVP_COND, _PVP_FLFMT = _P("PvPId"), _P("Leg"), _P("Cond"), _P("Flfmt")


def _pvp(splmtry: _E | None) -> PvPTerms | None:
    if splmtry is None:
        return None
    lock = splmtry[-1][0]  # SplmtryData/Envlp/PvPLock
    k = _kids(lock)
    return PvPTerms(_t(k[_PVP_ID]), _t(k[_PVP_LEG]), _t(k[_PVP_COND]), _opt(k, _PVP_FLFMT))


def _original(q: _Ns, k: dict[Any, _E]) -> OriginalRef:
    grp = _kids(k[q("OrgnlGrpInf")])
    return OriginalRef(
        msg_id=_t(grp[q("OrgnlMsgId")]),
        msg_name_id=_t(grp[q("OrgnlMsgNmId")]),
        end_to_end_id=_opt(k, q("OrgnlEndToEndId")),
        uetr=_t(k[q("OrgnlUETR")]),
        instr_id=_opt(k, q("OrgnlInstrId")),
        tx_id=_opt(k, q("OrgnlTxId")),
    )


def _reason(q: _Ns, el: _E | None) -> tuple[str | None, str | None]:
    if el is None:
        return None, None
    k = _kids(el)
    return _t(k[q("Rsn")][0]), _opt(k, q("AddtlInf"))


Q009 = _Ns(ISO_NS_PREFIX + Pacs009.MESSAGE_ID)


def pacs009(doc: _E) -> Pacs009:
    q = Q009
    root = doc[0]
    grp = _kids(root[0])
    txs: list[CreditTransfer] = []
    t_pmt, t_amt, t_dt, t_req = q("PmtId"), q("IntrBkSttlmAmt"), q("IntrBkSttlmDt"), q("SttlmTmReq")
    t_e2e, t_uetr, t_instr, t_txid = q("EndToEndId"), q("UETR"), q("InstrId"), q("TxId")
    for tx in root.iterchildren(q("CdtTrfTxInf")):
        k = _kids(tx)
        pmt = _kids(k[t_pmt])
        req = k.get(t_req)
        txs.append(
            CreditTransfer(
                end_to_end_id=_t(pmt[t_e2e]),
                uetr=_t(pmt[t_uetr]),
                amount=_money(k[t_amt]),
                settlement_date=parse_date(_t(k[t_dt])),
                debtor_bic=_bic(q, k[q("Dbtr")]),
                debtor_account=_wallet(k[q("DbtrAcct")]),
                debtor_agent_bic=_bic(q, k[q("DbtrAgt")]),
                creditor_agent_bic=_bic(q, k[q("CdtrAgt")]),
                creditor_bic=_bic(q, k[q("Cdtr")]),
                creditor_account=_wallet(k[q("CdtrAcct")]),
                deadline=None if req is None else parse_time(_t(req[0])),
                pvp=_pvp(k.get(q("SplmtryData"))),
                instr_id=_opt(pmt, t_instr),
                tx_id=_opt(pmt, t_txid),
            )
        )
    return Pacs009(
        msg_id=_t(grp[q("MsgId")]),
        created=parse_datetime(_t(grp[q("CreDtTm")])),
        transactions=tuple(txs),
        settlement_method=cast(Any, _t(grp[q("SttlmInf")][0])),
    )


def group_counts(doc: _E) -> tuple[str | None, str | None]:
    """(NbOfTxs, CtrlSum) as written, for the business rules; (None, None) if not carried."""
    root = doc[0]
    first = root[0]
    k = _kids(first)
    ns = first.tag[: first.tag.index("}") + 1]
    holder = k
    if f"{ns}NbOfTxs" not in k:
        ctrl = root.find(f"{ns}CtrlData")
        if ctrl is None:
            return None, None
        holder = _kids(ctrl)
    return _opt(holder, f"{ns}NbOfTxs"), _opt(holder, f"{ns}CtrlSum")


Q002 = _Ns(ISO_NS_PREFIX + Pacs002.MESSAGE_ID)


def pacs002(doc: _E) -> Pacs002:
    q = Q002
    root = doc[0]
    grp = _kids(root[0])
    txs: list[TransactionStatus] = []
    for tx in root.iterchildren(q("TxInfAndSts")):
        k = _kids(tx)
        reason, info = _reason(q, k.get(q("StsRsnInf")))
        accepted = _opt(k, q("AccptncDtTm"))
        txs.append(
            TransactionStatus(
                original=_original(q, k),
                status=cast(Any, _t(k[q("TxSts")])),
                reason=reason,
                additional_info=info,
                status_id=_opt(k, q("StsId")),
                accepted=None if accepted is None else parse_datetime(accepted),
                pvp=_pvp(k.get(q("SplmtryData"))),
            )
        )
    return Pacs002(
        msg_id=_t(grp[q("MsgId")]),
        created=parse_datetime(_t(grp[q("CreDtTm")])),
        transactions=tuple(txs),
    )


Q004 = _Ns(ISO_NS_PREFIX + Pacs004.MESSAGE_ID)


def pacs004(doc: _E) -> Pacs004:
    q = Q004
    root = doc[0]
    grp = _kids(root[0])
    txs: list[PaymentReturn] = []
    for tx in root.iterchildren(q("TxInf")):
        k = _kids(tx)
        reason, info = _reason(q, k.get(q("RtrRsnInf")))
        txs.append(
            PaymentReturn(
                return_id=_t(k[q("RtrId")]),
                original=_original(q, k),
                amount=_money(k[q("RtrdIntrBkSttlmAmt")]),
                settlement_date=parse_date(_t(k[q("IntrBkSttlmDt")])),
                reason=reason,
                additional_info=info,
            )
        )
    return Pacs004(
        msg_id=_t(grp[q("MsgId")]),
        created=parse_datetime(_t(grp[q("CreDtTm")])),
        transactions=tuple(txs),
        settlement_method=cast(Any, _t(grp[q("SttlmInf")][0])),
    )


Q028 = _Ns(ISO_NS_PREFIX + Pacs028.MESSAGE_ID)


def pacs028(doc: _E) -> Pacs028:
    q = Q028
    root = doc[0]
    grp = _kids(root[0])
    txs = tuple(
        StatusRequest(original=_original(q, k), request_id=_opt(k, q("StsReqId")))
        for k in (_kids(tx) for tx in root.iterchildren(q("TxInf")))
    )
    return Pacs028(
        msg_id=_t(grp[q("MsgId")]),
        created=parse_datetime(_t(grp[q("CreDtTm")])),
        transactions=txs,
    )


def _assignment(q: _Ns, el: _E) -> tuple[str, str, str, datetime]:
    k = _kids(el)
    return (
        _t(k[q("Id")]),
        _t(k[q("Assgnr")][0][0][0]),
        _t(k[q("Assgne")][0][0][0]),
        parse_datetime(_t(k[q("CreDtTm")])),
    )


Q056 = _Ns(ISO_NS_PREFIX + Camt056.MESSAGE_ID)


def camt056(doc: _E) -> Camt056:
    q = Q056
    root = doc[0]
    k_root = _kids(root)
    asg_id, assigner, assignee, created = _assignment(q, k_root[q("Assgnmt")])
    txs: list[CancellationRequest] = []
    for tx in k_root[q("Undrlyg")].iterchildren(q("TxInf")):
        k = _kids(tx)
        reason, info = _reason(q, k.get(q("CxlRsnInf")))
        dt = _opt(k, q("OrgnlIntrBkSttlmDt"))
        txs.append(
            CancellationRequest(
                cancellation_id=_t(k[q("CxlId")]),
                original=_original(q, k),
                amount=_money(k[q("OrgnlIntrBkSttlmAmt")]),
                settlement_date=None if dt is None else parse_date(dt),
                reason=reason,
                additional_info=info,
            )
        )
    return Camt056(asg_id, assigner, assignee, created, tuple(txs))


Q029 = _Ns(ISO_NS_PREFIX + Camt029.MESSAGE_ID)


def camt029(doc: _E) -> Camt029:
    q = Q029
    root = doc[0]
    k_root = _kids(root)
    asg_id, assigner, assignee, created = _assignment(q, k_root[q("Assgnmt")])
    txs: list[CancellationResolution] = []
    for tx in k_root[q("CxlDtls")].iterchildren(q("TxInfAndSts")):
        k = _kids(tx)
        reason, info = _reason(q, k.get(q("CxlStsRsnInf")))
        txs.append(
            CancellationResolution(
                original=_original(q, k),
                status=cast(Any, _t(k[q("TxCxlSts")])),
                reason=reason,
                additional_info=info,
                status_id=_opt(k, q("CxlStsId")),
            )
        )
    conf = cast(Any, _t(k_root[q("Sts")][0]))
    return Camt029(asg_id, assigner, assignee, created, conf, tuple(txs))


Q_ADMI = _Ns(ISO_NS_PREFIX + Admi002.MESSAGE_ID)


def admi002(doc: _E) -> Admi002:
    q = Q_ADMI
    k_root = _kids(doc[0])
    rsn = _kids(k_root[q("Rsn")])
    return Admi002(
        related_ref=_t(k_root[q("RltdRef")][0]),
        reason=_t(rsn[q("RjctgPtyRsn")]),
        rejected=parse_datetime(_t(rsn[q("RjctnDtTm")])),
        error_location=_opt(rsn, q("ErrLctn")),
        description=_opt(rsn, q("RsnDesc")),
    )


_H = _Ns(HEAD_NS)


def app_header(el: _E) -> AppHeader:
    q = _H
    k = _kids(el)
    dup = _opt(k, q("PssblDplct"))
    return AppHeader(
        from_bic=_t(k[q("Fr")][0][0][0]),
        to_bic=_t(k[q("To")][0][0][0]),
        biz_msg_id=_t(k[q("BizMsgIdr")]),
        msg_def_id=_t(k[q("MsgDefIdr")]),
        created=parse_datetime(_t(k[q("CreDt")])),
        biz_svc=_opt(k, q("BizSvc")),
        possible_duplicate=None if dup is None else dup.strip() in ("true", "1"),
    )


READERS: dict[str, Callable[[_E], Message]] = {
    Pacs009.MESSAGE_ID: pacs009,
    Pacs002.MESSAGE_ID: pacs002,
    Pacs004.MESSAGE_ID: pacs004,
    Pacs028.MESSAGE_ID: pacs028,
    Camt056.MESSAGE_ID: camt056,
    Camt029.MESSAGE_ID: camt029,
    Admi002.MESSAGE_ID: admi002,
}
