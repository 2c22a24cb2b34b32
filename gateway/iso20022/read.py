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

from gateway.iso20022.amounts import CURRENCY_EXPONENTS, MAX_MINOR_UNITS, from_iso_amount
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
    trusted_constructor,
)
from gateway.iso20022.xmlsafe import HEAD_NS, ISO_NS_PREFIX


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


# Positional constructors for checked values (see trusted_constructor). Money skips its
# currency check: from_iso_amount has just refused any currency the gateway does not settle.
_new_money = trusted_constructor(Money)
_new_terms = trusted_constructor(PvPTerms)
_new_transfer = trusted_constructor(CreditTransfer)
_new_pacs009 = trusted_constructor(Pacs009)
_new_header = trusted_constructor(AppHeader)


def _money(el: _E) -> Money:
    ccy = el.get("Ccy") or ""
    return Money(from_iso_amount(_t(el), ccy), ccy)


class _Ns:
    """Clark-notation tags of one namespace, computed once."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._tags: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        tag = self._tags.get(name)
        if tag is None:
            tag = self._tags[name] = f"{{{self.ns}}}{name}"
        return tag


def _bic(q: _Ns, el: _E) -> str:
    return _t(el[0][0])  # Agent/FinInstnId/BICFI: the guideline makes BICFI the first child


def _wallet(el: _E) -> str:
    return _t(el[0][0][0])  # Acct/Id/Othr/Id


def _pvp(splmtry: _E | None) -> PvPTerms | None:
    if splmtry is None:
        return None
    # SplmtryData/Envlp/PvPLock = PvPId Leg Cond Flfmt? (order fixed by the schema)
    lock = list(splmtry[-1][0])
    flfmt = (lock[3].text or "") if len(lock) == 4 else None
    return _new_terms(lock[0].text or "", lock[1].text or "", lock[2].text or "", flfmt)


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
    """(Rsn/Cd, the first AddtlInf). Orgtr, a proprietary reason (Rsn/Prtry) and further
    AddtlInf lines are accepted and ignored: the model carries an ISO code and one text."""
    if el is None:
        return None, None
    rsn = el.find(q("Rsn"))
    code = None if rsn is None or rsn[0].tag != q("Cd") else _t(rsn[0])
    info = el.find(q("AddtlInf"))
    return code, None if info is None else _t(info)


Q009 = _Ns(ISO_NS_PREFIX + Pacs009.MESSAGE_ID)
(
    _T009_PMTID,
    _T009_AMT,
    _T009_DATE,
    _T009_REQ,
    _T009_TILL,
    _T009_DBTR,
    _T009_DBTR_ACCT,
    _T009_DBTR_AGT,
    _T009_CDTR_AGT,
    _T009_CDTR,
    _T009_CDTR_ACCT,
    _T009_SPLMTRY,
    _T009_INSTR,
    _T009_E2E,
    _T009_TXID,
    _T009_UETR,
) = map(
    Q009,
    (
        "PmtId",
        "IntrBkSttlmAmt",
        "IntrBkSttlmDt",
        "SttlmTmReq",
        "TillTm",
        "Dbtr",
        "DbtrAcct",
        "DbtrAgt",
        "CdtrAgt",
        "Cdtr",
        "CdtrAcct",
        "SplmtryData",
        "InstrId",
        "EndToEndId",
        "TxId",
        "UETR",
    ),
)
_TWO_DECIMALS = frozenset(c for c, exp in CURRENCY_EXPONENTS.items() if exp == 2)


def pacs009(doc: _E) -> Pacs009:
    return pacs009_counted(doc)[0]


def _amount009(amt: _E) -> Money:
    ccy = amt.get("Ccy") or ""
    text = amt.text or ""
    # from_iso_amount's own fast path, inlined for the usual "123.45" of a 2-decimal
    # currency; anything else (and every error) goes through from_iso_amount.
    digits = text[:-3] + text[-2:] if len(text) > 3 and text[-3] == "." else ""
    if ccy in _TWO_DECIMALS and digits.isdigit() and digits.isascii():
        minor = int(digits)
        if not 0 < minor <= MAX_MINOR_UNITS:
            minor = from_iso_amount(text, ccy)
    else:
        minor = from_iso_amount(text, ccy)
    return _new_money(minor, ccy)


def _plain_transfer(tx: _E) -> CreditTransfer | None:
    """A CdtTrfTxInf read by position when it holds only what we read (the shape we emit
    ourselves); None when CBPR+ elements we ignore sit between them (read by tag then).

    Shape: PmtId Amt Dt SttlmTmReq(TillTm)? Dbtr DbtrAcct DbtrAgt CdtrAgt Cdtr CdtrAcct
    SplmtryData?, PmtId = InstrId? EndToEndId TxId? UETR.
    """
    k = list(tx)
    n = len(k)
    # Nine children are required; each further one is an optional element. The shape holds
    # when the optional ones present are exactly SttlmTmReq (at 3) and/or SplmtryData (last).
    if n == 9:
        i = 3
    elif n == 10:
        i = 4 if k[3].tag == _T009_REQ else 3
        if i == 3 and k[9].tag != _T009_SPLMTRY:
            return None
    elif n == 11 and k[3].tag == _T009_REQ and k[10].tag == _T009_SPLMTRY:
        i = 4
    else:
        return None
    pmt = list(k[0])
    if len(pmt) > 2 and pmt[-1].tag != _T009_UETR:
        return None  # ClrSysRef
    till: time | None = None
    if i == 4:
        req = k[3]
        if len(req) != 1 or req[0].tag != _T009_TILL:
            return None
        till = parse_time(req[0].text or "")
    instr_id: str | None = None
    tx_id: str | None = None
    if len(pmt) == 4:
        instr_id, e2e, tx_id = pmt[0].text or "", pmt[1].text or "", pmt[2].text or ""
    elif len(pmt) == 2:
        e2e = pmt[0].text or ""
    elif pmt[0].tag == _T009_INSTR:
        instr_id, e2e = pmt[0].text or "", pmt[1].text or ""
    else:
        e2e, tx_id = pmt[0].text or "", pmt[1].text or ""
    return _new_transfer(
        e2e,
        pmt[-1].text or "",
        _amount009(k[1]),
        date.fromisoformat((k[2].text or "").strip()),
        k[i][0][0].text or "",
        k[i + 1][0][0][0].text or "",
        k[i + 2][0][0].text or "",
        k[i + 3][0][0].text or "",
        k[i + 4][0][0].text or "",
        k[i + 5][0][0][0].text or "",
        till,
        _pvp(k[i + 6]) if n > i + 6 else None,
        instr_id,
        tx_id,
    )


def pacs009_counted(doc: _E) -> tuple[Pacs009, tuple[str | None, str | None]]:
    """pacs.009 -> (model, (NbOfTxs, CtrlSum)).

    GrpHdr by position (MsgId CreDtTm NbOfTxs CtrlSum? SttlmInf, order fixed by the schema);
    each CdtTrfTxInf and its PmtId by tag, since CBPR+ puts optional elements we ignore
    (PmtTpInf, SttlmPrty, InstgAgt, InstdAgt, intermediary agents, ...) between those we read.
    Agents are read at FinInstnId/BICFI and accounts at Id/Othr/Id: the schema makes each the
    first child where we read it.
    """
    parts = list(doc[0])
    grp = list(parts[0])
    txs: list[CreditTransfer] = []
    append = txs.append
    for tx in parts[1:]:
        transfer = _plain_transfer(tx)
        if transfer is not None:
            append(transfer)
            continue
        k = {c.tag: c for c in tx}
        pmt = {c.tag: c.text for c in k[_T009_PMTID]}
        till: time | None = None
        req = k.get(_T009_REQ)
        if req is not None:
            till_el = req.find(_T009_TILL)
            if till_el is not None:
                till = parse_time(till_el.text or "")
        splmtry = k.get(_T009_SPLMTRY)
        append(
            _new_transfer(
                pmt[_T009_E2E] or "",
                pmt[_T009_UETR] or "",
                _amount009(k[_T009_AMT]),
                date.fromisoformat((k[_T009_DATE].text or "").strip()),
                k[_T009_DBTR][0][0].text or "",
                k[_T009_DBTR_ACCT][0][0][0].text or "",
                k[_T009_DBTR_AGT][0][0].text or "",
                k[_T009_CDTR_AGT][0][0].text or "",
                k[_T009_CDTR][0][0].text or "",
                k[_T009_CDTR_ACCT][0][0][0].text or "",
                till,
                None if splmtry is None else _pvp(splmtry),
                pmt.get(_T009_INSTR),
                pmt.get(_T009_TXID),
            )
        )
    # The schema admits only INDA, INGA or CLRG in SttlmMtd (SettlementMethod), first in SttlmInf.
    method: Any = grp[-1][0].text or ""
    message = _new_pacs009(grp[0].text or "", parse_datetime(grp[1].text or ""), tuple(txs), method)
    return message, (grp[2].text or "", (grp[3].text or "") if len(grp) == 5 else None)


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


_T_FR, _T_TO, _T_BIZID, _T_MSGDEF, _T_BIZSVC, _T_CREDT, _T_DUP = map(
    _H, ("Fr", "To", "BizMsgIdr", "MsgDefIdr", "BizSvc", "CreDt", "PssblDplct")
)


def app_header(el: _E) -> AppHeader:
    # Fr To BizMsgIdr MsgDefIdr BizSvc? CreDt PssblDplct? Sgntr? by position (the shape we
    # emit); a CBPR+ header with CharSet, MktPrctc, CpyDplct, Prty or Rltd by tag.
    k = list(el)
    i = 5 if k[4].tag == _T_BIZSVC else 4
    if k[0].tag == _T_FR and k[i].tag == _T_CREDT:
        created_text = k[i].text or ""
        created = datetime.fromisoformat(created_text.strip())
        if created.tzinfo is None:
            raise ValueError(f"date-time {created_text!r} has no offset")
        dup: bool | None = None
        if len(k) > i + 1 and k[i + 1].tag == _T_DUP:
            dup = (k[i + 1].text or "").strip() in ("true", "1")
        return _new_header(
            k[0][0][0][0].text or "",
            k[1][0][0][0].text or "",
            k[2].text or "",
            k[3].text or "",
            created,
            (k[4].text or "") if i == 5 else None,
            dup,
        )
    return _tagged_header(el)


def _tagged_header(el: _E) -> AppHeader:
    k = {c.tag: c for c in el}
    created_text = k[_T_CREDT].text or ""
    created = datetime.fromisoformat(created_text.strip())
    if created.tzinfo is None:
        raise ValueError(f"date-time {created_text!r} has no offset")
    svc = k.get(_T_BIZSVC)
    dup_el = k.get(_T_DUP)
    dup: bool | None = None if dup_el is None else (dup_el.text or "").strip() in ("true", "1")
    return _new_header(
        k[_T_FR][0][0][0].text or "",
        k[_T_TO][0][0][0].text or "",
        k[_T_BIZID].text or "",
        k[_T_MSGDEF].text or "",
        created,
        None if svc is None else (svc.text or ""),
        dup,
    )


COUNTED: dict[str, Callable[[_E], tuple[Message, tuple[str | None, str | None]]]] = {
    Pacs009.MESSAGE_ID: pacs009_counted,
}
"""Readers that also return (NbOfTxs, CtrlSum) as written, saving the rules a second walk."""

READERS: dict[str, Callable[[_E], Message]] = {
    Pacs009.MESSAGE_ID: pacs009,
    Pacs002.MESSAGE_ID: pacs002,
    Pacs004.MESSAGE_ID: pacs004,
    Pacs028.MESSAGE_ID: pacs028,
    Camt056.MESSAGE_ID: camt056,
    Camt029.MESSAGE_ID: camt029,
    Admi002.MESSAGE_ID: admi002,
}
