"""Typed models -> ISO 20022 XML (elements here, bytes in :mod:`gateway.iso20022.codec`).

Writers follow the usage guidelines' element order exactly; a writer never decides anything,
it only renders the model.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time

from lxml import etree
from lxml.etree import _Element as _E

from gateway.iso20022.amounts import sum_iso, to_iso_amount
from gateway.iso20022.models import (
    Admi002,
    AppHeader,
    Camt029,
    Camt056,
    Money,
    OriginalRef,
    Pacs002,
    Pacs004,
    Pacs009,
    Pacs028,
    PvPTerms,
)
from gateway.iso20022.xmlsafe import ENVELOPE_NS, ENVELOPE_TAG, HEAD_NS, ISO_NS_PREFIX, PVP_NS

_Sub = etree.SubElement


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


def fmt_datetime(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("ISO 20022 date-times must be timezone-aware")
    return value.astimezone(UTC).isoformat()


def fmt_time(value: time) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("ISO 20022 times must be timezone-aware")
    offset = value.utcoffset()
    if offset is not None and offset.total_seconds() % 60:
        raise ValueError("time offsets must be whole minutes")
    return value.isoformat()


def fmt_date(value: date) -> str:
    return value.isoformat()


def _text(parent: _E, tag: str, text: str) -> _E:
    el = _Sub(parent, tag)
    el.text = text
    return el


def _opt(parent: _E, tag: str, text: str | None) -> None:
    if text is not None:
        _text(parent, tag, text)


def _agent(parent: _E, q: _Ns, tag: str, bic: str) -> None:
    _text(_Sub(_Sub(parent, q(tag)), q("FinInstnId")), q("BICFI"), bic)


def _money(parent: _E, tag: str, money: Money) -> None:
    _text(parent, tag, to_iso_amount(money.minor, money.currency)).set("Ccy", money.currency)


def _original(parent: _E, q: _Ns, ref: OriginalRef) -> None:
    grp = _Sub(parent, q("OrgnlGrpInf"))
    _text(grp, q("OrgnlMsgId"), ref.msg_id)
    _text(grp, q("OrgnlMsgNmId"), ref.msg_name_id)
    _opt(parent, q("OrgnlInstrId"), ref.instr_id)
    _opt(parent, q("OrgnlEndToEndId"), ref.end_to_end_id)
    _opt(parent, q("OrgnlTxId"), ref.tx_id)
    _text(parent, q("OrgnlUETR"), ref.uetr)


def _reason(parent: _E, q: _Ns, tag: str, code: str | None, info: str | None) -> None:
    if code is None:
        return
    rsn = _Sub(parent, q(tag))
    _text(_Sub(rsn, q("Rsn")), q("Cd"), code)
    _opt(rsn, q("AddtlInf"), info)


def _pvp(parent: _E, q: _Ns, terms: PvPTerms | None) -> None:
    if terms is None:
        return
    envlp = _Sub(_Sub(parent, q("SplmtryData")), q("Envlp"))
    lock = _Sub(envlp, f"{{{PVP_NS}}}PvPLock", nsmap={None: PVP_NS})
    _text(lock, f"{{{PVP_NS}}}PvPId", terms.pvp_id)
    _text(lock, f"{{{PVP_NS}}}Leg", terms.leg)
    _text(lock, f"{{{PVP_NS}}}Cond", terms.condition)
    _opt(lock, f"{{{PVP_NS}}}Flfmt", terms.fulfilment)


def _document(message_id: str, root_name: str) -> tuple[_E, _E, _Ns]:
    q = _Ns(ISO_NS_PREFIX + message_id)
    doc = etree.Element(q("Document"), nsmap={None: q.ns})
    return doc, _Sub(doc, q(root_name)), q


def _group_header(
    root: _E, q: _Ns, msg_id: str, created: datetime, amounts: list[Money] | None
) -> _E:
    grp = _Sub(root, q("GrpHdr"))
    _text(grp, q("MsgId"), msg_id)
    _text(grp, q("CreDtTm"), fmt_datetime(created))
    if amounts is not None:
        _text(grp, q("NbOfTxs"), str(len(amounts)))
        _text(grp, q("CtrlSum"), sum_iso([m.minor for m in amounts]))
    return grp


def pacs009(msg: Pacs009) -> _E:
    doc, root, q = _document(msg.MESSAGE_ID, "FICdtTrf")
    grp = _group_header(root, q, msg.msg_id, msg.created, [t.amount for t in msg.transactions])
    _text(_Sub(grp, q("SttlmInf")), q("SttlmMtd"), msg.settlement_method)
    for t in msg.transactions:
        tx = _Sub(root, q("CdtTrfTxInf"))
        pmt = _Sub(tx, q("PmtId"))
        _opt(pmt, q("InstrId"), t.instr_id)
        _text(pmt, q("EndToEndId"), t.end_to_end_id)
        _opt(pmt, q("TxId"), t.tx_id)
        _text(pmt, q("UETR"), t.uetr)
        _money(tx, q("IntrBkSttlmAmt"), t.amount)
        _text(tx, q("IntrBkSttlmDt"), fmt_date(t.settlement_date))
        if t.deadline is not None:
            _text(_Sub(tx, q("SttlmTmReq")), q("TillTm"), fmt_time(t.deadline))
        _agent(tx, q, "Dbtr", t.debtor_bic)
        _text(_Sub(_Sub(_Sub(tx, q("DbtrAcct")), q("Id")), q("Othr")), q("Id"), t.debtor_account)
        _agent(tx, q, "DbtrAgt", t.debtor_agent_bic)
        _agent(tx, q, "CdtrAgt", t.creditor_agent_bic)
        _agent(tx, q, "Cdtr", t.creditor_bic)
        acct = _Sub(_Sub(_Sub(tx, q("CdtrAcct")), q("Id")), q("Othr"))
        _text(acct, q("Id"), t.creditor_account)
        _pvp(tx, q, t.pvp)
    return doc


def pacs002(msg: Pacs002) -> _E:
    doc, root, q = _document(msg.MESSAGE_ID, "FIToFIPmtStsRpt")
    _group_header(root, q, msg.msg_id, msg.created, None)
    for t in msg.transactions:
        tx = _Sub(root, q("TxInfAndSts"))
        _opt(tx, q("StsId"), t.status_id)
        _original(tx, q, t.original)
        _text(tx, q("TxSts"), t.status)
        _reason(tx, q, "StsRsnInf", t.reason, t.additional_info)
        if t.accepted is not None:
            _text(tx, q("AccptncDtTm"), fmt_datetime(t.accepted))
        _pvp(tx, q, t.pvp)
    return doc


def pacs004(msg: Pacs004) -> _E:
    doc, root, q = _document(msg.MESSAGE_ID, "PmtRtr")
    grp = _group_header(root, q, msg.msg_id, msg.created, [t.amount for t in msg.transactions])
    _text(_Sub(grp, q("SttlmInf")), q("SttlmMtd"), msg.settlement_method)
    for t in msg.transactions:
        tx = _Sub(root, q("TxInf"))
        _text(tx, q("RtrId"), t.return_id)
        _original(tx, q, t.original)
        _money(tx, q("RtrdIntrBkSttlmAmt"), t.amount)
        _text(tx, q("IntrBkSttlmDt"), fmt_date(t.settlement_date))
        _reason(tx, q, "RtrRsnInf", t.reason, t.additional_info)
    return doc


def pacs028(msg: Pacs028) -> _E:
    doc, root, q = _document(msg.MESSAGE_ID, "FIToFIPmtStsReq")
    _group_header(root, q, msg.msg_id, msg.created, None)
    for t in msg.transactions:
        tx = _Sub(root, q("TxInf"))
        _opt(tx, q("StsReqId"), t.request_id)
        _original(tx, q, t.original)
    return doc


def _assignment(root: _E, q: _Ns, msg: Camt056 | Camt029) -> None:
    asg = _Sub(root, q("Assgnmt"))
    _text(asg, q("Id"), msg.assignment_id)
    _agent(_Sub(asg, q("Assgnr")), q, "Agt", msg.assigner_bic)
    _agent(_Sub(asg, q("Assgne")), q, "Agt", msg.assignee_bic)
    _text(asg, q("CreDtTm"), fmt_datetime(msg.created))


def camt056(msg: Camt056) -> _E:
    doc, root, q = _document(msg.MESSAGE_ID, "FIToFIPmtCxlReq")
    _assignment(root, q, msg)
    ctrl = _Sub(root, q("CtrlData"))
    _text(ctrl, q("NbOfTxs"), str(len(msg.transactions)))
    _text(ctrl, q("CtrlSum"), sum_iso([t.amount.minor for t in msg.transactions]))
    und = _Sub(root, q("Undrlyg"))
    for t in msg.transactions:
        tx = _Sub(und, q("TxInf"))
        _text(tx, q("CxlId"), t.cancellation_id)
        _original(tx, q, t.original)
        _money(tx, q("OrgnlIntrBkSttlmAmt"), t.amount)
        if t.settlement_date is not None:
            _text(tx, q("OrgnlIntrBkSttlmDt"), fmt_date(t.settlement_date))
        _reason(tx, q, "CxlRsnInf", t.reason, t.additional_info)
    return doc


def camt029(msg: Camt029) -> _E:
    doc, root, q = _document(msg.MESSAGE_ID, "RsltnOfInvstgtn")
    _assignment(root, q, msg)
    _text(_Sub(root, q("Sts")), q("Conf"), msg.confirmation)
    dtls = _Sub(root, q("CxlDtls"))
    for t in msg.transactions:
        tx = _Sub(dtls, q("TxInfAndSts"))
        _opt(tx, q("CxlStsId"), t.status_id)
        _original(tx, q, t.original)
        _text(tx, q("TxCxlSts"), t.status)
        _reason(tx, q, "CxlStsRsnInf", t.reason, t.additional_info)
    return doc


def admi002(msg: Admi002) -> _E:
    doc, root, q = _document(msg.MESSAGE_ID, msg.MESSAGE_ID)
    _text(_Sub(root, q("RltdRef")), q("Ref"), msg.related_ref)
    rsn = _Sub(root, q("Rsn"))
    _text(rsn, q("RjctgPtyRsn"), msg.reason)
    _text(rsn, q("RjctnDtTm"), fmt_datetime(msg.rejected))
    _opt(rsn, q("ErrLctn"), msg.error_location)
    _opt(rsn, q("RsnDesc"), msg.description)
    return doc


_H = _Ns(HEAD_NS)


def app_header(header: AppHeader) -> _E:
    q = _H
    hdr = etree.Element(q("AppHdr"), nsmap={None: HEAD_NS})
    _agent(_Sub(hdr, q("Fr")), q, "FIId", header.from_bic)
    _agent(_Sub(hdr, q("To")), q, "FIId", header.to_bic)
    _text(hdr, q("BizMsgIdr"), header.biz_msg_id)
    _text(hdr, q("MsgDefIdr"), header.msg_def_id)
    _opt(hdr, q("BizSvc"), header.biz_svc)
    _text(hdr, q("CreDt"), fmt_datetime(header.created))
    if header.possible_duplicate is not None:
        _text(hdr, q("PssblDplct"), "true" if header.possible_duplicate else "false")
    return hdr


def envelope(header: _E, document: _E) -> _E:
    env = etree.Element(ENVELOPE_TAG, nsmap={None: ENVELOPE_NS})
    env.append(header)
    env.append(document)
    return env


WRITERS: dict[str, Callable[..., _E]] = {
    Pacs009.MESSAGE_ID: pacs009,
    Pacs002.MESSAGE_ID: pacs002,
    Pacs004.MESSAGE_ID: pacs004,
    Pacs028.MESSAGE_ID: pacs028,
    Camt056.MESSAGE_ID: camt056,
    Camt029.MESSAGE_ID: camt029,
    Admi002.MESSAGE_ID: admi002,
}
